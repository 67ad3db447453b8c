"""Every error gpuroute raises.

The tree::

    GpurouteError                      anything gpuroute refuses or cannot do
    ├── SpecError (ValueError)         the spec itself is malformed: "0,,1", "GPU-zz", "all,0"
    ├── ResolutionError (LookupError)  a well-formed spec this host cannot satisfy
    │   ├── UnknownDeviceError         no such index, UUID, MIG device or PCI bus id
    │   ├── AmbiguousDeviceError       a UUID prefix that matches more than one device
    │   ├── DuplicateDeviceError       the same device named twice, perhaps two different ways
    │   ├── MIGModeError               a whole GPU whose MIG mode is on
    │   ├── MixedDeviceError           whole GPUs mixed with MIG devices
    │   ├── MultipleMIGError           more than one MIG device without an explicit opt-in
    │   └── NoFreeDeviceError          ``any:N`` and not enough devices are free, healthy and fit
    ├── ContextError                   the caller's context forbids the request (a parent mask)
    ├── LeaseError                     a lease cannot be taken, kept or given back
    │   ├── LeaseDirError              the lease directory is missing, unusable or unsafe
    │   ├── DeviceLeasedError          a named device is held by someone else's lease
    │   ├── UnhealthyDeviceError       a named device is unhealthy (Xid, ECC, lost)
    │   └── LimitExceededError         the acquisition would exceed a per-user or group limit
    ├── PolicyError                    the limits policy file is unreadable or malformed
    ├── InventoryError                 the GPU inventory cannot be read
    │   ├── SnapshotError (ValueError) a snapshot file is missing, malformed or of another schema
    │   └── NVMLError                  NVML is missing, not loaded, not permitted, or a GPU is lost
    ├── LaunchError                    starting, watching or stopping the work failed
    │   ├── LaunchTimeout (TimeoutError) wait(timeout=...) ran out; the work goes on
    │   ├── ComposeConflictError       a compose setting would expose other GPUs than planned
    │   ├── VerificationError          the container sees other GPUs than the plan
    │   └── EngineError                the Docker engine refused or failed
    │       ├── EngineUnavailableError the engine cannot be reached (after retries)
    │       ├── EnginePermissionError  no permission on the engine's socket
    │       ├── ToolkitMissingError    the engine has no "nvidia" device driver
    │       ├── ToolkitDeviceError     the toolkit does not know a requested device
    │       ├── ImageNotFoundError     the image is neither local nor pullable
    │       └── CommandNotFoundError   the command to run is not in the image
    └── BenchError                     a benchmark or campaign cannot be set up or run
        ├── BenchConfigError (ValueError) bad runner options or campaign file
        ├── BenchTimeout               the benchmark ran past its time limit and was stopped
        └── NativeReportError          a tool's native report is missing or not its format

Every message names the offending input and says what would work. Errors raised while
resolving a spec carry the whole ``spec`` and the offending ``token``.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousDeviceError",
    "BenchConfigError",
    "BenchError",
    "BenchTimeout",
    "NativeReportError",
    "ContextError",
    "ComposeConflictError",
    "DuplicateDeviceError",
    "EngineError",
    "EnginePermissionError",
    "EngineUnavailableError",
    "ImageNotFoundError",
    "CommandNotFoundError",
    "LaunchError",
    "LaunchTimeout",
    "ToolkitDeviceError",
    "ToolkitMissingError",
    "VerificationError",
    "GpurouteError",
    "InventoryError",
    "MIGModeError",
    "MixedDeviceError",
    "MultipleMIGError",
    "NoFreeDeviceError",
    "LeaseError",
    "LeaseDirError",
    "DeviceLeasedError",
    "UnhealthyDeviceError",
    "LimitExceededError",
    "NVMLError",
    "PolicyError",
    "ResolutionError",
    "SnapshotError",
    "SpecError",
    "UnknownDeviceError",
]


class GpurouteError(Exception):
    """Base class of every error gpuroute raises on purpose."""

    def __init__(self, message: str, *, spec: str | None = None, token: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.spec = spec
        self.token = token

    def __str__(self) -> str:
        return self.message


class SpecError(GpurouteError, ValueError):
    """The spec is malformed: a token that is no GPU id of any form, an empty entry, a bad type."""


class ResolutionError(GpurouteError, LookupError):
    """The spec is well formed but this inventory cannot satisfy it."""


class UnknownDeviceError(ResolutionError):
    """No device on this host answers to the token (index out of range, unknown UUID, ...)."""


class AmbiguousDeviceError(ResolutionError):
    """A UUID prefix matches more than one device."""


class DuplicateDeviceError(ResolutionError):
    """The same device is named twice, perhaps in two different forms."""


class MIGModeError(ResolutionError):
    """A whole GPU was requested but its MIG mode is on: CUDA work runs only on its MIG devices."""


class MixedDeviceError(ResolutionError):
    """Whole GPUs and MIG devices were requested together; CUDA cannot enumerate both."""


class MultipleMIGError(ResolutionError):
    """More than one MIG device was requested without ``allow_multiple_mig=True``, or the
    request breaks CUDA's rule of one compute instance per GPU instance."""


class NoFreeDeviceError(ResolutionError):
    """``any:N`` asked for more devices than are free, healthy and fit the filters; the
    message says why each candidate was passed over."""


class LeaseError(GpurouteError):
    """A lease could not be taken, kept or given back."""


class LeaseDirError(LeaseError):
    """The lease directory is missing, not usable by this user, or unsafe (a symlink, or
    writable by others while not owned by root or this user)."""


class DeviceLeasedError(LeaseError):
    """A device named in the request is held by another lease; the message names its owner."""


class UnhealthyDeviceError(LeaseError):
    """A device named in the request is unhealthy and is not given out."""


class LimitExceededError(LeaseError):
    """The acquisition would exceed the caller's or a group's limit; the message shows the
    current usage, the limit and what to release."""


class PolicyError(GpurouteError):
    """The limits policy file (``GPUROUTE_POLICY``, ``/etc/gpuroute/policy.yaml`` or
    ``--policy``) cannot be read, is not YAML, or has an unknown key or a bad limit; the
    message names the file and the entry."""


class ContextError(GpurouteError):
    """The caller's context (a parent ``CUDA_VISIBLE_DEVICES`` mask) forbids the request."""


class InventoryError(GpurouteError):
    """The GPU inventory could not be read or is inconsistent."""


class SnapshotError(InventoryError, ValueError):
    """An inventory snapshot file is missing, unreadable, malformed or of another schema."""


class NVMLError(InventoryError):
    """NVML could not be used: library missing, driver not loaded, no permission, GPU lost.

    ``code`` is NVML's numeric return code when NVML reported one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LaunchError(GpurouteError):
    """Starting, watching or stopping the work failed. Nothing is left behind: what was
    created is removed before this is raised."""


class LaunchTimeout(LaunchError, TimeoutError):
    """``wait(timeout=...)`` ran out before the work ended; the work keeps running."""


class ComposeConflictError(LaunchError):
    """A setting in the user's compose files would let the container see other or more GPUs
    than the plan, and gpuroute cannot override it. Names the file and the setting."""


class VerificationError(LaunchError):
    """``verify=True`` found the container seeing other GPUs than the plan."""


class EngineError(LaunchError):
    """The Docker engine refused or failed a request."""


class EngineUnavailableError(EngineError):
    """The engine could not be reached, even after retrying."""


class EnginePermissionError(EngineError):
    """This user may not use the engine's socket."""


class ToolkitMissingError(EngineError):
    """The engine has no ``nvidia`` device driver: the NVIDIA Container Toolkit is missing
    or the engine was not restarted after installing it."""


class ToolkitDeviceError(EngineError):
    """The NVIDIA toolkit on the engine's host does not know a requested device."""


class ImageNotFoundError(EngineError):
    """The image is not on the engine and could not be pulled."""


class CommandNotFoundError(EngineError):
    """The command to run is not in the image (the engine's "executable file not found", a
    container's exit status 127); the message names the command and the image."""


class BenchError(GpurouteError):
    """A benchmark or a campaign could not be set up or run. What it started is stopped and
    what it measured is kept (a failed result is still written)."""


class BenchConfigError(BenchError, ValueError):
    """Runner options or a campaign file are invalid; the message names the option and says
    what would work."""


class NativeReportError(BenchError):
    """A benchmark tool's own report is missing, or is not in the format of that tool; the
    message names the file, the tool and the key that was expected."""


class BenchTimeout(BenchError):
    """The benchmark ran past its time limit; it was stopped, and its result says so."""
