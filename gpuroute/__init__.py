"""gpuroute: put work on exactly the GPUs a person asked for.

    >>> import gpuroute
    >>> p = gpuroute.plan("3,1")                # NVML indices, UUIDs, MIG devices, PCI ids
    >>> p.host_env["NVIDIA_VISIBLE_DEVICES"]    # what the container runtime reads: UUIDs
    >>> p.container_env["CUDA_VISIBLE_DEVICES"] # what the program inside reads: '1,0'
    >>> print(p.explain())
    >>> with gpuroute.launch(["python", "train.py"], gpus="3,1", image="my/image") as run:
    ...     run.wait()
    >>> host = gpuroute.Host()                  # what an orchestrator keeps: inventory,
    >>> host.plan("3,1"); host.acquire("any:2") # engine connection, leases, limits

Importing gpuroute imports neither docker nor pynvml; they load when first used.
"""

from gpuroute.api import acquire, launch, plan
from gpuroute.backends import Launch
from gpuroute.backends.compose import ComposeLaunch, ComposeWork
from gpuroute.backends.docker import ContainerLaunch, DockerWork, RetryPolicy
from gpuroute.backends.local import LocalLaunch, LocalWork
from gpuroute.core import GPU, CallerContext, Device, Inventory, MIGDevice, RoutingPlan
from gpuroute.errors import (
    AmbiguousDeviceError,
    CommandNotFoundError,
    ComposeConflictError,
    ContextError,
    DeviceLeasedError,
    DuplicateDeviceError,
    EngineError,
    EnginePermissionError,
    EngineUnavailableError,
    GpurouteError,
    ImageNotFoundError,
    InventoryError,
    LaunchError,
    LaunchTimeout,
    LeaseDirError,
    LeaseError,
    LimitExceededError,
    MIGModeError,
    MixedDeviceError,
    MultipleMIGError,
    NoFreeDeviceError,
    NVMLError,
    PolicyError,
    ResolutionError,
    SnapshotError,
    SpecError,
    ToolkitDeviceError,
    ToolkitMissingError,
    UnhealthyDeviceError,
    UnknownDeviceError,
    VerificationError,
)
from gpuroute.host import Host, default_inventory, detect_context
from gpuroute.leases import Lease
from gpuroute.records import Holder
from gpuroute.version import __version__

__all__ = [
    "acquire",
    "AmbiguousDeviceError",
    "CallerContext",
    "ComposeConflictError",
    "ComposeLaunch",
    "ComposeWork",
    "ContainerLaunch",
    "ContextError",
    "default_inventory",
    "detect_context",
    "Device",
    "DockerWork",
    "DeviceLeasedError",
    "DuplicateDeviceError",
    "EngineError",
    "EnginePermissionError",
    "EngineUnavailableError",
    "GPU",
    "GpurouteError",
    "Holder",
    "Host",
    "CommandNotFoundError",
    "ImageNotFoundError",
    "Inventory",
    "InventoryError",
    "Launch",
    "launch",
    "LaunchError",
    "LaunchTimeout",
    "Lease",
    "LeaseDirError",
    "LeaseError",
    "LimitExceededError",
    "LocalLaunch",
    "LocalWork",
    "MIGDevice",
    "MIGModeError",
    "MixedDeviceError",
    "MultipleMIGError",
    "NoFreeDeviceError",
    "NVMLError",
    "plan",
    "PolicyError",
    "ResolutionError",
    "RetryPolicy",
    "RoutingPlan",
    "SnapshotError",
    "SpecError",
    "ToolkitDeviceError",
    "ToolkitMissingError",
    "UnhealthyDeviceError",
    "UnknownDeviceError",
    "VerificationError",
    "__version__",
]
