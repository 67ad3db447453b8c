"""FakeNVML: a stateful stand-in for the pynvml functions gpuroute calls.

It is built from an Inventory (a simulated topology) and behaves like NVML on that host:
initialisation is reference-counted and required, GPUs and MIG devices have handles, MIG
slots can be empty, GPUs can be lost, processes occupy memory, and energy counters advance
with a virtual clock. Failures are raised as real ``pynvml.NVMLError`` subclasses with
NVML's own codes, so code under test sees exactly what it would see on a real host.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pynvml

from gpuroute.core.inventory import GPU, Inventory, MIGDevice
from gpuroute.testing.kernel_log import FakeKernelLog

__all__ = ["FakeNVML", "FakeProcess"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Handle:
    gpu: int
    mig: int | None = None


@dataclass(frozen=True, slots=True)
class FakeProcess:
    """A process holding memory on a GPU, or on one of its MIG devices."""

    pid: int
    gpu: int
    used_mib: int
    mig: int | None = None


class FakeNVML:
    """Provides the ``nvml*`` functions of the ``pynvml`` module for a simulated host: all
    that ``gpuroute.nvml.NVMLApi`` lists (mypy checks it), and a few more for tests.

    State that tests may change, each as NVML would report it:

    * ``remove_library()``, ``unload_driver()``, ``deny_permission()``,
      ``mismatch_versions()``: ``nvmlInit`` then fails with the matching NVML error;
    * ``repartition(inventory)``: NVML reports another layout (MIG re-partitioned, GPUs
      added or removed);
    * ``lose_gpu(i)`` / ``recover_gpu(i)``: calls on that GPU raise ``GPU is lost``;
    * ``start_process(...)`` / ``end_process(pid)``: processes and their memory;
    * ``set_power(i, watts)`` and ``advance(seconds)``: energy counters accumulate;
    * ``reset_energy_counter(i)`` (a driver reload) and ``drop_energy_counter(i)`` (a GPU
      older than Volta, whose counter is not supported).

    With ``clock`` (for example ``time.monotonic``), the virtual clock follows that clock, so
    counters advance with real time while real work runs; ``energy_update_s`` makes the
    counter and the power reading change only at multiples of that period, as a real
    driver's do (every 20-100 ms).
    """

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        inventory: Inventory,
        *,
        power_w: float | Mapping[int, float] = 75.0,
        energy_start_mj: int = 1_000_000,
        clock: Callable[[], float] | None = None,
        energy_update_s: float = 0.0,
        kernel_log: FakeKernelLog | None = None,
    ) -> None:
        self.inventory = inventory
        self.kernel_log = kernel_log
        self.init_count = 0
        self.clock = clock
        self.energy_update_s = energy_update_s
        self.now = self._clock_time() if clock is not None else 0.0
        self._library = True
        self._driver = True
        self._permission = True
        self._versions_match = True
        self._lost: set[int] = set()
        self._processes: dict[int, FakeProcess] = {}
        n = len(inventory.gpus)
        if isinstance(power_w, Mapping):
            self._power_w = {i: float(power_w.get(i, 75.0)) for i in range(n)}
        else:
            self._power_w = dict.fromkeys(range(n), float(power_w))
        self._energy_mj = dict.fromkeys(range(n), float(energy_start_mj))
        self._ecc_uncorrected = dict.fromkeys(range(n), 0)
        self._retired_pending: set[int] = set()
        self._xids: list[tuple[int, int]] = []
        self._event_sets: dict[int, set[int]] = {}
        self._no_energy_counter: set[int] = set()

    # -- changing the simulated host -----------------------------------------------------

    def repartition(self, inventory: Inventory) -> None:
        """From now on NVML reports ``inventory``: an administrator changed MIG layouts, or
        GPUs were added or removed. Live facts of GPUs that stay (power, energy, errors)
        are kept; new GPUs start idle."""
        self.inventory = inventory
        for i in range(len(inventory.gpus)):
            self._power_w.setdefault(i, 75.0)
            self._energy_mj.setdefault(i, 1_000_000.0)
            self._ecc_uncorrected.setdefault(i, 0)

    def remove_library(self) -> None:
        self._library = False

    def unload_driver(self) -> None:
        self._driver = False

    def deny_permission(self) -> None:
        self._permission = False

    def mismatch_versions(self) -> None:
        self._versions_match = False

    def lose_gpu(self, index: int) -> None:
        self._lost.add(index)

    def recover_gpu(self, index: int) -> None:
        self._lost.discard(index)

    def start_process(self, pid: int, gpu: int, used_mib: int, *, mig: int | None = None) -> None:
        self._gpu(gpu)
        if mig is not None:
            self._mig(self.inventory.gpus[gpu], mig)
        self._processes[pid] = FakeProcess(pid, gpu, used_mib, mig)

    def end_process(self, pid: int) -> None:
        self._processes.pop(pid, None)

    @property
    def processes(self) -> tuple[FakeProcess, ...]:
        return tuple(self._processes.values())

    def add_ecc_errors(self, index: int, uncorrected: int = 1) -> None:
        self._gpu(index)
        self._ecc_uncorrected[index] += uncorrected

    def set_retired_pages_pending(self, index: int, pending: bool = True) -> None:
        self._gpu(index)
        (self._retired_pending.add if pending else self._retired_pending.discard)(index)

    def inject_xid(self, index: int, xid: int) -> None:
        """An Xid event on a GPU, queued for delivery to NVML event sets that watch it, and
        delivered to one reader only, as NVML does. (Real NVML queues events raised after
        registration; the fake queues them from the start, standing in for a watcher that
        has been registered all along.) With a ``kernel_log``, the driver's line is also
        written there, where every reader finds it."""
        gpu = self._gpu(index)
        self._xids.append((index, xid))
        if self.kernel_log is not None:
            self.kernel_log.xid(gpu.pci_bus_id, xid)

    def set_power(self, index: int, watts: float) -> None:
        self._gpu(index)
        self._power_w[index] = float(watts)

    def advance(self, seconds: float) -> None:
        """Move the virtual clock; each GPU's energy counter grows by power x time."""
        self.now += seconds
        for index, watts in self._power_w.items():
            self._energy_mj[index] += watts * seconds * 1000.0

    def reset_energy_counter(self, index: int) -> None:
        """The counter restarts from zero, as it does when the driver is reloaded."""
        self._gpu(index)
        self._energy_mj[index] = 0.0

    def drop_energy_counter(self, index: int) -> None:
        """The GPU has no total-energy counter (older than Volta): NOT_SUPPORTED."""
        self._gpu(index)
        self._no_energy_counter.add(index)

    def _clock_time(self) -> float:
        assert self.clock is not None
        t = self.clock()
        if self.energy_update_s > 0:
            t = math.floor(t / self.energy_update_s) * self.energy_update_s
        return t

    def _sync(self) -> None:
        """With a clock, bring the counters up to the clock's (quantised) time."""
        if self.clock is not None:
            t = self._clock_time()
            if t > self.now:
                self.advance(t - self.now)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _fail(code: int) -> pynvml.NVMLError:
        return pynvml.NVMLError(code)

    def _ready(self) -> None:
        if self.init_count == 0:
            raise self._fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, index: int) -> GPU:
        if not 0 <= index < len(self.inventory.gpus):
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index in self._lost:
            raise self._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        return self.inventory.gpus[index]

    def _mig(self, gpu: GPU, index: int) -> MIGDevice:
        for mig in gpu.mig_devices:
            if mig.index == index:
                return mig
        raise self._fail(pynvml.NVML_ERROR_NOT_FOUND)

    def _resolve(self, handle: Any) -> tuple[GPU, MIGDevice | None]:
        self._ready()
        if not isinstance(handle, _Handle):
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self._gpu(handle.gpu)
        return gpu, None if handle.mig is None else self._mig(gpu, handle.mig)

    def _whole(self, handle: Any) -> GPU:
        gpu, mig = self._resolve(handle)
        if mig is not None:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    # -- the pynvml API -----------------------------------------------------------------

    def nvmlInit(self) -> None:
        if not self._library:
            raise self._fail(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if not self._driver:
            raise self._fail(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        if not self._permission:
            raise self._fail(pynvml.NVML_ERROR_NO_PERMISSION)
        if not self._versions_match:
            raise self._fail(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._ready()
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._ready()
        return self.inventory.driver_version or ""

    def nvmlDeviceGetCount(self) -> int:
        self._ready()
        return len(self.inventory.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._ready()
        self._gpu(index)
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._ready()
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        device = self.inventory.by_uuid(text)
        if device is None or device.uuid.upper() != text.upper():
            raise self._fail(pynvml.NVML_ERROR_NOT_FOUND)
        self._gpu(device.gpu.index)
        return _Handle(device.gpu.index, device.mig.index if device.mig else None)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        gpu, mig = self._resolve(handle)
        return mig.uuid if mig else gpu.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        gpu, mig = self._resolve(handle)
        return f"{gpu.name} MIG {mig.profile}" if mig else gpu.name

    def nvmlDeviceGetPciInfo(self, handle: Any) -> SimpleNamespace:
        gpu, _ = self._resolve(handle)
        bus = gpu.pci_bus_id.encode()
        return SimpleNamespace(
            busId=bus,
            busIdLegacy=bus[4:],
            domain=int(bus[:8], 16),
            bus=int(bus[9:11], 16),
            device=int(bus[12:14], 16),
        )

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> SimpleNamespace:
        gpu, mig = self._resolve(handle)
        total = (mig.memory_total_mib if mig else gpu.memory_total_mib) * MIB
        used = sum(
            p.used_mib * MIB
            for p in self._processes.values()
            if p.gpu == gpu.index and (mig is None or p.mig == mig.index)
        )
        return SimpleNamespace(total=total, used=used, free=max(total - used, 0))

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._whole(handle)
        if gpu.mig_compute_slices_total is None:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = int(gpu.mig_mode)
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        """As NVML: 0 while MIG is not enabled."""
        gpu = self._whole(handle)
        if gpu.mig_compute_slices_total is None:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.mig_compute_slices_total if gpu.mig_mode else 0

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int) -> SimpleNamespace:
        """Profile information, only while MIG is enabled (the conservative reading)."""
        gpu = self._whole(handle)
        if gpu.mig_compute_slices_total is None or not gpu.mig_mode:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        slices = 1 if profile == pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE else 0
        return SimpleNamespace(
            sliceCount=slices, instanceCount=gpu.mig_compute_slices_total // max(slices, 1)
        )

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> _Handle:
        gpu = self._whole(handle)
        if not gpu.mig_mode or gpu.mig_compute_slices_total is None:
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not 0 <= index < gpu.mig_compute_slices_total:
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._mig(gpu, index)
        return _Handle(gpu.index, index)

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> int:
        _, mig = self._resolve(handle)
        return int(mig is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> _Handle:
        gpu, mig = self._resolve(handle)
        if mig is None:
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(gpu.index)

    def _mig_only(self, handle: Any) -> MIGDevice:
        _, mig = self._resolve(handle)
        if mig is None:
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._mig_only(handle).gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._mig_only(handle).compute_instance_id

    def nvmlDeviceGetAttributes(self, handle: Any) -> SimpleNamespace:
        mig = self._mig_only(handle)
        gi = re.search(r"(\d+)g\.", mig.profile)
        return SimpleNamespace(
            gpuInstanceSliceCount=int(gi[1]) if gi else mig.compute_slices,
            computeInstanceSliceCount=mig.compute_slices,
            memorySizeMB=mig.memory_total_mib,
            multiprocessorCount=14 * mig.compute_slices,
        )

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        gpu, mig = self._resolve(handle)
        found = []
        for p in self._processes.values():
            if p.gpu != gpu.index or (mig is not None and p.mig != mig.index):
                continue
            inst = self._mig(gpu, p.mig) if p.mig is not None else None
            found.append(
                SimpleNamespace(
                    pid=p.pid,
                    usedGpuMemory=p.used_mib * MIB,
                    gpuInstanceId=inst.gpu_instance_id if inst else 0xFFFFFFFF,
                    computeInstanceId=inst.compute_instance_id if inst else 0xFFFFFFFF,
                )
            )
        return found

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._whole(handle)
        if gpu.index in self._no_energy_counter:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._sync()
        return int(self._energy_mj[gpu.index])

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._whole(handle)
        self._sync()
        return int(self._power_w[gpu.index] * 1000)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int:
        gpu = self._whole(handle)
        if gpu.mig_compute_slices_total is None:  # consumer GPUs have no ECC
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if error_type != pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return 0
        return self._ecc_uncorrected[gpu.index]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int:
        gpu = self._whole(handle)
        if gpu.mig_compute_slices_total is None:
            raise self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(gpu.index in self._retired_pending)

    def nvmlDeviceGetTopologyCommonAncestor(self, a: Any, b: Any) -> int:
        """PCIe distance: GPUs paired on one switch (positions 2k and 2k+1 in PCI order),
        then the same half of the host (one CPU socket), then across the system."""
        first, second = self._whole(a), self._whole(b)
        order = sorted(self.inventory.gpus, key=lambda g: g.pci_bus_id)
        i, j = order.index(first), order.index(second)
        if i == j:
            return 0
        if len(order) > 2 and i // 2 == j // 2:
            return int(pynvml.NVML_TOPOLOGY_SINGLE)
        half = len(order) // 2
        if len(order) > 2 and (i < half) == (j < half):
            return int(pynvml.NVML_TOPOLOGY_NODE)
        return int(
            pynvml.NVML_TOPOLOGY_SYSTEM if len(order) > 2 else pynvml.NVML_TOPOLOGY_HOSTBRIDGE
        )

    def nvmlEventSetCreate(self) -> int:
        self._ready()
        key = len(self._event_sets) + 1
        self._event_sets[key] = set()
        return key

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: int) -> None:
        gpu = self._whole(handle)
        if event_set not in self._event_sets:
            raise self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if event_types & pynvml.nvmlEventTypeXidCriticalError:
            self._event_sets[event_set].add(gpu.index)

    def nvmlEventSetWait_v2(self, event_set: int, timeout_ms: int) -> SimpleNamespace:
        self._ready()
        watched = self._event_sets.get(event_set, set())
        for position, (index, xid) in enumerate(self._xids):
            if index in watched:
                del self._xids[position]
                return SimpleNamespace(
                    device=_Handle(index),
                    eventData=xid,
                    eventType=pynvml.nvmlEventTypeXidCriticalError,
                )
        raise self._fail(pynvml.NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: int) -> None:
        self._event_sets.pop(event_set, None)
