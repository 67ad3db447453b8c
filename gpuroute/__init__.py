"""gpuroute: put work on exactly the GPUs a person asked for.

    >>> import gpuroute
    >>> p = gpuroute.plan("3,1")                # NVML indices, UUIDs, MIG devices, PCI ids
    >>> p.host_env["NVIDIA_VISIBLE_DEVICES"]    # what the container runtime reads: UUIDs
    >>> p.container_env["CUDA_VISIBLE_DEVICES"] # what the program inside reads: '1,0'
    >>> print(p.explain())

Importing gpuroute imports neither docker nor pynvml; they load when first used.
"""

from gpuroute.api import plan
from gpuroute.core import GPU, CallerContext, Device, Inventory, MIGDevice, RoutingPlan
from gpuroute.errors import (
    AmbiguousDeviceError,
    ContextError,
    DuplicateDeviceError,
    GpurouteError,
    InventoryError,
    MIGModeError,
    MixedDeviceError,
    MultipleMIGError,
    NVMLError,
    ResolutionError,
    SnapshotError,
    SpecError,
    UnknownDeviceError,
)
from gpuroute.host import default_inventory, detect_context

__version__ = "0.1.0"

__all__ = [
    "GPU",
    "AmbiguousDeviceError",
    "CallerContext",
    "ContextError",
    "Device",
    "DuplicateDeviceError",
    "GpurouteError",
    "Inventory",
    "InventoryError",
    "MIGDevice",
    "MIGModeError",
    "MixedDeviceError",
    "MultipleMIGError",
    "NVMLError",
    "ResolutionError",
    "RoutingPlan",
    "SnapshotError",
    "SpecError",
    "UnknownDeviceError",
    "__version__",
    "default_inventory",
    "detect_context",
    "plan",
]
