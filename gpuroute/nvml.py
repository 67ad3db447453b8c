"""Reading the live inventory through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

Only NVML is used, never CUDA: nothing here creates a CUDA context or changes which devices
a later CUDA process sees. NVML's errors become ``gpuroute.NVMLError`` with text that says
what to do. The NVML module is a parameter, so ``gpuroute.testing.FakeNVML`` drives exactly
this code in tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from gpuroute.core.inventory import GPU, Inventory, MIGDevice
from gpuroute.errors import NVMLError

__all__ = ["NVMLApi", "read_inventory"]

MIB = 1024 * 1024
NVML_DEVICE_MIG_ENABLE = 1

# NVML return codes (nvml.h); the messages below are keyed by them.
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_INVALID_ARGUMENT = 2

SNAPSHOT_HINT = (
    "To plan without NVML, point GPUROUTE_INVENTORY at a snapshot written on the GPU host "
    "with `gpuroute inventory save FILE`."
)

_ADVICE = {
    NVML_ERROR_LIBRARY_NOT_FOUND: (
        "the NVML library (libnvidia-ml.so.1) was not found: the NVIDIA driver is not "
        "installed here, or its libraries are not on the loader path. Install the driver "
        "(`nvidia-smi` should then work). " + SNAPSHOT_HINT
    ),
    NVML_ERROR_DRIVER_NOT_LOADED: (
        "the NVIDIA kernel driver is not loaded. Load it (`modprobe nvidia` as root), check "
        "`dmesg` for why it failed, or reboot after a driver installation. " + SNAPSHOT_HINT
    ),
    NVML_ERROR_NO_PERMISSION: (
        "insufficient permissions: this user cannot open the NVIDIA device files "
        "(/dev/nvidiactl, /dev/nvidia*). Add the user to the group that owns them, or ask the "
        "administrator."
    ),
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVML library and the loaded kernel driver are different versions, usually after "
        "a driver upgrade without a reboot. Reboot, or reload the nvidia kernel modules."
    ),
}


class NVMLApi(Protocol):
    """The NVML functions gpuroute calls; ``pynvml`` and ``FakeNVML`` both provide them."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...
    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int: ...
    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int: ...
    def nvmlDeviceGetAttributes(self, handle: Any) -> Any: ...


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _load_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise NVMLError(
            "the nvidia-ml-py package (module pynvml) is not installed: "
            "`pip install nvidia-ml-py`. " + SNAPSHOT_HINT
        ) from exc
    return pynvml


@contextlib.contextmanager
def nvml_errors(where: str) -> Iterator[None]:
    """Translate pynvml's errors raised inside the block into gpuroute.NVMLError."""
    base = _load_pynvml().NVMLError
    try:
        yield
    except base as exc:
        code = _code(exc)
        if code == NVML_ERROR_GPU_IS_LOST:
            advice = (
                f"{where}: the GPU is lost (it fell off the bus). It needs a GPU reset or a "
                "reboot; `dmesg` usually shows Xid 79 for it."
            )
        else:
            fallback = f"NVML reported: {exc}"
            advice = f"{where}: " + (_ADVICE.get(code, fallback) if code is not None else fallback)
        raise NVMLError(advice, code=code) from exc


def read_inventory(nvml: NVMLApi | None = None) -> Inventory:
    """Read every GPU and MIG device through NVML, in NVML order."""
    api: Any = nvml if nvml is not None else _load_pynvml()
    with nvml_errors("cannot start NVML"):
        api.nvmlInit()
    try:
        with nvml_errors("cannot read the driver version"):
            driver = _text(api.nvmlSystemGetDriverVersion())
            count = api.nvmlDeviceGetCount()
        gpus = []
        for index in range(count):
            with nvml_errors(f"cannot read GPU {index}"):
                gpus.append(_read_gpu(api, index))
        return Inventory(gpus=tuple(gpus), driver_version=driver or None)
    finally:
        with contextlib.suppress(Exception):
            api.nvmlShutdown()


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _read_gpu(api: Any, index: int) -> GPU:
    base = _load_pynvml().NVMLError
    handle = api.nvmlDeviceGetHandleByIndex(index)
    try:
        current, _pending = api.nvmlDeviceGetMigMode(handle)
        mig_supported, mig_mode = True, current == NVML_DEVICE_MIG_ENABLE
    except base as exc:
        if _code(exc) != NVML_ERROR_NOT_SUPPORTED:
            raise
        mig_supported, mig_mode = False, False
    slots = api.nvmlDeviceGetMaxMigDeviceCount(handle) if mig_supported else 0
    migs = []
    if mig_mode:
        for j in range(slots):
            try:
                mig_handle = api.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except base as exc:
                if _code(exc) in (NVML_ERROR_NOT_FOUND, NVML_ERROR_INVALID_ARGUMENT):
                    continue  # an empty slot
                raise
            migs.append(_read_mig(api, mig_handle, j))
    return GPU(
        index=index,
        uuid=_text(api.nvmlDeviceGetUUID(handle)),
        pci_bus_id=_text(api.nvmlDeviceGetPciInfo(handle).busId),
        name=_text(api.nvmlDeviceGetName(handle)),
        memory_total_mib=api.nvmlDeviceGetMemoryInfo(handle).total // MIB,
        mig_mode=mig_mode,
        mig_compute_slices_total=slots or None,
        mig_devices=tuple(migs),
    )


def _read_mig(api: Any, handle: Any, index: int) -> MIGDevice:
    attrs = api.nvmlDeviceGetAttributes(handle)
    name = _text(api.nvmlDeviceGetName(handle))
    memory_mib = api.nvmlDeviceGetMemoryInfo(handle).total // MIB
    # NVML names a MIG device "<GPU name> MIG <profile>", e.g. "NVIDIA A100-SXM4-80GB MIG 3g.40gb".
    _, sep, profile = name.rpartition(" MIG ")
    if not sep:
        profile = f"{attrs.gpuInstanceSliceCount}g.{round(memory_mib / 1024)}gb"
    return MIGDevice(
        index=index,
        uuid=_text(api.nvmlDeviceGetUUID(handle)),
        gpu_instance_id=api.nvmlDeviceGetGpuInstanceId(handle),
        compute_instance_id=api.nvmlDeviceGetComputeInstanceId(handle),
        profile=profile,
        memory_total_mib=memory_mib,
        compute_slices=attrs.computeInstanceSliceCount,
    )
