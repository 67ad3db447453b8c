"""Reading the live inventory through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

Only NVML is used, never CUDA: nothing here creates a CUDA context or changes which devices
a later CUDA process sees. NVML's errors become ``gpuroute.NVMLError`` with text that says
what to do. The NVML module is a parameter, so ``gpuroute.testing.FakeNVML`` drives exactly
this code in tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from gpuroute.core.inventory import GPU, Inventory, MIGDevice
from gpuroute.errors import NVMLError

if TYPE_CHECKING:
    from gpuroute.core.selection import HostState

__all__ = [
    "APPLICATION_XIDS",
    "NVMLApi",
    "XID_PROBLEM",
    "critical_xid",
    "load_pynvml",
    "nvml_errors",
    "layout_of",
    "read_inventory",
    "read_layout",
    "read_state",
    "text",
    "SNAPSHOT_HINT",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_LIBRARY_NOT_FOUND",
]

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
    """Everything gpuroute reaches through the NVML module: the ``nvml*`` functions it calls
    and the ``NVMLError`` class they raise. The ``pynvml`` module and ``FakeNVML`` both provide
    it. Handles, event sets and NVML's structures are opaque here (``Any``); every function is
    called positionally, since pynvml's parameter names differ from function to function.
    """

    NVMLError: type[Exception]

    # -- library and system
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...

    # -- devices
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> Any: ...
    def nvmlDeviceGetHandleByUUID(self, uuid: str, /) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any, /) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: Any, /) -> str | bytes: ...
    def nvmlDeviceGetPciInfo(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any, /) -> Any: ...

    # -- MIG
    def nvmlDeviceGetMigMode(self, handle: Any, /) -> list[int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int, /) -> Any: ...
    def nvmlDeviceGetGpuInstanceId(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetComputeInstanceId(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetAttributes(self, handle: Any, /) -> Any: ...
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int, /) -> Any: ...

    # -- live state and health
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any, /) -> list[Any]: ...
    def nvmlDeviceGetTotalEccErrors(
        self, handle: Any, error_type: int, counter_type: int, /
    ) -> int: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetTopologyCommonAncestor(self, first: Any, second: Any, /) -> int: ...

    # -- events (critical Xids)
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(
        self, handle: Any, event_types: int, event_set: Any, /
    ) -> None: ...
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int, /) -> Any: ...
    def nvmlEventSetFree(self, event_set: Any, /) -> None: ...

    # -- energy and power (gpuroute.bench)
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any, /) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any, /) -> int: ...


def text(value: str | bytes) -> str:
    """An NVML string as ``str``: older pynvml releases return ``bytes``."""
    return value.decode() if isinstance(value, bytes) else value


def load_pynvml() -> NVMLApi:
    """The ``pynvml`` module, or ``gpuroute.NVMLError`` saying how to install it. Every
    caller in gpuroute looks this name up when it calls it, so tests may replace it."""
    try:
        import pynvml
    except ImportError as exc:
        raise NVMLError(
            "the nvidia-ml-py package (module pynvml) is not installed: "
            "`pip install nvidia-ml-py`. " + SNAPSHOT_HINT
        ) from exc
    module: NVMLApi = pynvml
    return module


@contextlib.contextmanager
def nvml_errors(where: str) -> Iterator[None]:
    """Translate pynvml's errors raised inside the block into gpuroute.NVMLError."""
    base = load_pynvml().NVMLError
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
    api = nvml if nvml is not None else load_pynvml()
    with nvml_errors("cannot start NVML"):
        api.nvmlInit()
    try:
        with nvml_errors("cannot read the driver version"):
            driver = text(api.nvmlSystemGetDriverVersion())
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


def _read_gpu(api: NVMLApi, index: int) -> GPU:
    base = load_pynvml().NVMLError
    handle = api.nvmlDeviceGetHandleByIndex(index)
    try:
        current, _pending = api.nvmlDeviceGetMigMode(handle)
        mig_supported, mig_mode = True, current == NVML_DEVICE_MIG_ENABLE
    except base as exc:
        if _code(exc) != NVML_ERROR_NOT_SUPPORTED:
            raise
        mig_supported, mig_mode = False, False
    slots = api.nvmlDeviceGetMaxMigDeviceCount(handle) if mig_supported else 0
    name = text(api.nvmlDeviceGetName(handle))
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
        uuid=text(api.nvmlDeviceGetUUID(handle)),
        pci_bus_id=text(api.nvmlDeviceGetPciInfo(handle).busId),
        name=name,
        memory_total_mib=api.nvmlDeviceGetMemoryInfo(handle).total // MIB,
        mig_mode=mig_mode,
        mig_compute_slices_total=(slots or _slices_with_mig_off(api, handle, name))
        if mig_supported
        else None,
        mig_devices=tuple(migs),
    )


NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0
_SLICES_BY_MODEL = (
    ("A30", 4),
    ("A100", 7),
    ("A800", 7),
    ("H100", 7),
    ("H800", 7),
    ("H200", 7),
    ("H20", 7),
    ("B200", 7),
    ("GB200", 7),
)
"""Compute slices of MIG-capable models, for when NVML will not say (MIG mode off)."""


def _slices_with_mig_off(api: NVMLApi, handle: Any, name: str) -> int | None:
    """A MIG-capable GPU's compute slices while its MIG mode is off, when NVML's maximum MIG
    device count is 0: the 1-slice GPU-instance profile's instance count, else the model's."""
    base = load_pynvml().NVMLError
    try:
        info = api.nvmlDeviceGetGpuInstanceProfileInfo(handle, NVML_GPU_INSTANCE_PROFILE_1_SLICE)
        if int(info.instanceCount) > 0:
            return int(info.instanceCount)
    except (base, AttributeError):
        pass
    return next((n for model, n in _SLICES_BY_MODEL if model in name), None)


def _read_mig(api: NVMLApi, handle: Any, index: int) -> MIGDevice:
    attrs = api.nvmlDeviceGetAttributes(handle)
    name = text(api.nvmlDeviceGetName(handle))
    memory_mib = api.nvmlDeviceGetMemoryInfo(handle).total // MIB
    # NVML names a MIG device "<GPU name> MIG <profile>", e.g. "NVIDIA A100-SXM4-80GB MIG 3g.40gb".
    _, sep, profile = name.rpartition(" MIG ")
    if not sep:
        profile = f"{attrs.gpuInstanceSliceCount}g.{round(memory_mib / 1024)}gb"
    return MIGDevice(
        index=index,
        uuid=text(api.nvmlDeviceGetUUID(handle)),
        gpu_instance_id=api.nvmlDeviceGetGpuInstanceId(handle),
        compute_instance_id=api.nvmlDeviceGetComputeInstanceId(handle),
        profile=profile,
        memory_total_mib=memory_mib,
        compute_slices=attrs.computeInstanceSliceCount,
    )


# -- live state ---------------------------------------------------------------------------

NVML_ERROR_TIMEOUT = 10
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
XID_CRITICAL_ERROR_EVENT = 0x8
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
"""Xids an application causes (illegal address, page fault, stopped channel ...): reported by
NVML as critical but not a fault of the GPU, so not a reason to withhold it."""
XID_PROBLEM = "critical Xid"
"""How a health problem from an Xid begins."""


def critical_xid(xid: int) -> bool:
    """Whether an Xid makes its GPU unhealthy: every Xid but those an application causes
    (``APPLICATION_XIDS``). NVML's events and the kernel log are judged alike."""
    return xid not in APPLICATION_XIDS


def read_state(
    inventory: Inventory,
    nvml: NVMLApi | None = None,
    *,
    xid_window_ms: int = 0,
    topology: bool = True,
) -> HostState:
    """The live state of the inventory's devices: processes, memory, health
    (critical Xid events NVML has queued within ``xid_window_ms``, uncorrectable ECC errors,
    retired pages pending, lost from the bus) and, with ``topology``, GPU-to-GPU topology
    distances (one NVML call per pair of GPUs: what choosing ``any:N`` needs, a plan not).

    On a machine without NVML (no library, or no driver) the state is unknown, not an error.
    """
    from gpuroute.core.selection import HostState

    if nvml is None:
        try:
            api = load_pynvml()
            api.nvmlInit()
        except NVMLError:
            return HostState.unknown()
        except Exception as exc:
            if _code(exc) in (NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED):
                return HostState.unknown()
            with nvml_errors("cannot start NVML"):
                raise
    else:
        api = nvml
        with nvml_errors("cannot start NVML"):
            api.nvmlInit()
    try:
        with nvml_errors("cannot read the GPUs' state"):
            return _read_state(api, inventory, xid_window_ms, topology)
    finally:
        with contextlib.suppress(Exception):
            api.nvmlShutdown()


def _read_state(
    api: NVMLApi, inventory: Inventory, xid_window_ms: int, topology: bool
) -> HostState:
    from gpuroute.core.selection import DeviceState, HostState

    base = load_pynvml().NVMLError
    devices: dict[str, DeviceState] = {}
    handles: dict[str, Any] = {}

    def optional(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except base as exc:
            if _code(exc) == NVML_ERROR_GPU_IS_LOST:
                raise
            return None

    for gpu in inventory.gpus:
        try:
            handle = api.nvmlDeviceGetHandleByUUID(gpu.uuid)
            memory = api.nvmlDeviceGetMemoryInfo(handle)
        except base as exc:
            lost = _code(exc) == NVML_ERROR_GPU_IS_LOST
            why = (
                "lost from the bus (NVML: GPU is lost)" if lost else f"NVML cannot open it ({exc})"
            )
            devices[gpu.uuid] = DeviceState(gpu.uuid, problems=(why,))
            continue
        handles[gpu.uuid] = handle
        problems = []
        ecc = optional(
            api.nvmlDeviceGetTotalEccErrors,
            handle,
            NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            NVML_VOLATILE_ECC,
        )
        if ecc:
            problems.append(f"{ecc} uncorrectable ECC error(s) since the driver loaded")
        if optional(api.nvmlDeviceGetRetiredPagesPendingStatus, handle) == 1:
            problems.append("retired memory pages pending: the GPU needs a reset")
        procs = optional(api.nvmlDeviceGetComputeRunningProcesses, handle) or []
        devices[gpu.uuid] = DeviceState(
            gpu.uuid,
            memory_used_mib=memory.used // MIB,
            memory_total_mib=memory.total // MIB,
            pids=tuple(sorted({p.pid for p in procs})),
            problems=tuple(problems),
        )
        for mig in gpu.mig_devices:
            mig_handle = optional(api.nvmlDeviceGetMigDeviceHandleByIndex, handle, mig.index)
            if mig_handle is None:
                continue
            mig_memory = api.nvmlDeviceGetMemoryInfo(mig_handle)
            mig_procs = optional(api.nvmlDeviceGetComputeRunningProcesses, mig_handle) or []
            devices[mig.uuid] = DeviceState(
                mig.uuid,
                memory_used_mib=mig_memory.used // MIB,
                memory_total_mib=mig_memory.total // MIB,
                pids=tuple(sorted({p.pid for p in mig_procs})),
            )
    for uuid, xids in _critical_xids(api, handles, xid_window_ms).items():
        current = devices[uuid]
        problem = f"{XID_PROBLEM} {', '.join(map(str, xids))} pending"
        devices[uuid] = replace(
            current, problems=(*current.problems, problem), xids=(*current.xids, *xids)
        )
    distances: dict[frozenset[str], int] = {}
    ordered = list(handles.items()) if topology else []
    for i, (a, ha) in enumerate(ordered):
        for b, hb in ordered[i + 1 :]:
            level = optional(api.nvmlDeviceGetTopologyCommonAncestor, ha, hb)
            if isinstance(level, int):
                distances[frozenset((a, b))] = level
    return HostState(devices, distances, source="nvml")


def _critical_xids(api: NVMLApi, handles: dict[str, Any], window_ms: int) -> dict[str, list[int]]:
    base = load_pynvml().NVMLError
    try:
        events = api.nvmlEventSetCreate()
    except base:
        return {}
    found: dict[str, list[int]] = {}
    try:
        for handle in handles.values():
            with contextlib.suppress(base):
                api.nvmlDeviceRegisterEvents(handle, XID_CRITICAL_ERROR_EVENT, events)
        while True:
            try:
                event = api.nvmlEventSetWait_v2(events, window_ms)
            except base as exc:
                if _code(exc) == NVML_ERROR_TIMEOUT:
                    break
                raise
            xid = int(event.eventData)
            if not critical_xid(xid):
                continue
            uuid = text(api.nvmlDeviceGetUUID(event.device))
            found.setdefault(uuid, []).append(xid)
    finally:
        with contextlib.suppress(Exception):
            api.nvmlEventSetFree(events)
    return found


def read_layout(nvml: NVMLApi | None = None) -> tuple[tuple[str, ...], ...]:
    """What tells one inventory from another, read cheaply: each GPU's UUID and, for a GPU in
    MIG mode, its MIG devices' UUIDs. A host (``gpuroute.Host``) compares it with the layout
    of the inventory it holds, and reads the inventory anew when they differ."""
    api: Any = nvml if nvml is not None else load_pynvml()
    base = load_pynvml().NVMLError
    with nvml_errors("cannot start NVML"):
        api.nvmlInit()
    try:
        layout: list[tuple[str, ...]] = []
        with nvml_errors("cannot read the GPU layout"):
            for index in range(api.nvmlDeviceGetCount()):
                handle = api.nvmlDeviceGetHandleByIndex(index)
                entry = [text(api.nvmlDeviceGetUUID(handle))]
                try:
                    mig_on = api.nvmlDeviceGetMigMode(handle)[0] == NVML_DEVICE_MIG_ENABLE
                except base:
                    mig_on = False
                if mig_on:
                    for j in range(api.nvmlDeviceGetMaxMigDeviceCount(handle)):
                        try:
                            mig = api.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
                        except base:
                            continue  # an empty slot
                        entry.append(text(api.nvmlDeviceGetUUID(mig)))
                layout.append(tuple(entry))
        return tuple(layout)
    finally:
        with contextlib.suppress(Exception):
            api.nvmlShutdown()


def layout_of(inventory: Inventory) -> tuple[tuple[str, ...], ...]:
    """The layout (as ``read_layout`` reads it) of an inventory value."""
    return tuple(
        (gpu.uuid, *(m.uuid for m in (gpu.mig_devices if gpu.mig_mode else ())))
        for gpu in inventory.gpus
    )
