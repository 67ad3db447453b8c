"""Energy, power and memory of the routed GPUs, read on the host through NVML by UUID.

``EnergyMonitor(devices)`` follows the physical GPUs behind a routing plan's devices (the
parent GPU of a MIG device). A background thread samples, every ``interval_s``, each GPU's
total-energy counter (mJ since the driver loaded; Volta and newer), its power, and the memory
in use on each routed device; every ``process_scan_s`` it lists the compute processes on the
routed devices and records those the run did not start (NVML gives host pids, so this check
is only right on the host, which is where the monitor runs).

Energy is computed afterwards for an explicit window, ``reading.energy(start, end)``: the
counter is interpolated between the samples that bracket each end of the window, so a
window can be the benchmark's own timed region (model load and warm-up excluded) even
when only the whole process was watched. Where the counter is not supported the sampled
power is integrated instead (trapezoids). Recorded problems, never hidden:

* ``counter_reset:<uuid>``: the counter went backwards (a driver reload); that GPU's energy,
  and the total, are null rather than partial;
* ``gpu_lost:<uuid>``: the GPU fell off the bus before the window ended; its energy, and the
  total, are null (``unavailable_reason: gpu_lost``), never estimated from earlier readings;
* ``energy_uncertainty_above_2pct:<uuid>``: the figure's uncertainty is above 2 % of it.

Every figure carries its uncertainty in joules (``energy_uncertainty_j``). The counter lags
the truth by up to one update period, which differs from driver to driver (20 ms to 1 s): it
is measured from the samples (``counter_update_s``: the median spacing of the counter's
changes), and the uncertainty is that period plus the sampling interval, times the highest
power sampled in the window. Integrated power carries the energy at stake between samples
(half the change of power across each interval, times its length).
* ``window_shorter_than_counter_update:<uuid>``: the counter did not move in the window; the
  energy is estimated from the sampled power;
* ``window_shorter_than_1s``: too short to be trusted, whatever the method;
* ``mig_shared_counter:<uuid>``: a MIG run; the counter is the whole GPU's, shared with the
  GPU's other slices and their work;
* ``foreign_process_on_gpu:pid=<pid>``: a process the run did not start used a routed device.

Named windows on a started monitor, ``begin_window(name)`` and ``end_window(name)``, read
each GPU's counter directly at both ends (two NVML calls per GPU, through handles opened once
by UUID; no thread and no sample list per window) and return a ``WindowEnergy``: the same
checks (a counter that went backwards, a lost GPU, a counter that did not move, the
uncertainty from the counter's measured update period, MIG counters shared), in plain
objects; ``to_energy()`` makes the result section from one when it is to be kept.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gpuroute.bench.result import (
    Energy,
    EnergyWindow,
    ForeignProcess,
    GPUEnergy,
    GPUMemory,
    Isolation,
    Memory,
)
from gpuroute.core.inventory import GPU, Device
from gpuroute.errors import BenchError, NVMLError

if TYPE_CHECKING:
    from gpuroute.nvml import NVMLApi

__all__ = [
    "MIN_TRUSTED_WINDOW_S",
    "EnergyMonitor",
    "EnergyReading",
    "GPUWindow",
    "WindowEnergy",
    "unavailable_energy",
]

MIB = 1024 * 1024
MIN_TRUSTED_WINDOW_S = 1.0
MAX_RELATIVE_UNCERTAINTY = 0.02
"""Above this share of the figure, an energy's uncertainty is warned of."""
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
_UPDATE_CHANGES_KEPT = 17
"""The counter's update period is the median spacing of its last this-many changes."""


def unavailable_energy(reason: str) -> Energy:
    """An energy section with nothing measured, saying why."""
    return Energy(method="none", unavailable_reason=reason)


@dataclass
class _Sample:
    t: float
    counter_mj: int | None
    power_w: float | None


@dataclass
class _Watched:
    gpu: GPU
    handle: Any
    devices: list[tuple[Device, Any]]
    """The routed devices on this GPU, with their NVML handles (the MIG handle for MIG)."""
    has_counter: bool = True
    samples: list[_Sample] = field(default_factory=list)
    peak_used_mib: dict[str, float] = field(default_factory=dict)
    idle_power_w: float | None = None
    lost_at: float | None = None
    """When a read first said the GPU is lost (fell off the bus), if it did."""
    changes: list[float] = field(default_factory=list)
    """When the sampler first saw each of the counter's latest values (the last few)."""
    update_s: float | None = None
    """The counter's update period measured so far (median spacing of ``changes``)."""

    @property
    def mig_uuids(self) -> list[str]:
        return [d.uuid for d, _ in self.devices if d.is_mig]


class EnergyMonitor:
    """Samples the routed GPUs in a background thread; ``stop()`` returns the reading.

    ``own_pids`` returns the host pids that belong to the run (the benchmark process tree or
    the container's); it is called at each process scan, while the run is alive. With
    ``idle_baseline_s`` the GPUs' power is sampled for that long at ``start()``, before the
    run begins, and the idle-adjusted energy is reported as well. ``sampler=False`` starts
    no thread: only the samples at ``start()`` and ``stop()`` are taken, and named windows
    (``begin_window``/``end_window``) are read directly.
    """

    def __init__(
        self,
        devices: Sequence[Device],
        *,
        nvml: NVMLApi | None = None,
        interval_s: float = 0.1,
        process_scan_s: float = 1.0,
        idle_baseline_s: float = 0.0,
        own_pids: Callable[[], Iterable[int]] | None = None,
        clock: Callable[[], float] = time.time,
        sampler: bool = True,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.devices = tuple(devices)
        self.interval_s = interval_s
        self.process_scan_s = process_scan_s
        self.idle_baseline_s = idle_baseline_s
        self.own_pids = own_pids
        self._clock = clock
        self._nvml = nvml
        self._api: NVMLApi | None = None
        self._watched: list[_Watched] = []
        self._foreign: dict[tuple[int, str], ForeignProcess] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cpu_s = 0.0
        self._last_scan = float("-inf")
        self._scanned = False
        self._failure: str | None = None
        self.sampler = sampler
        self._windows: dict[str, tuple[float, list[Any]]] = {}
        self._counter_handles: list[Any] = []
        self._all_counters = False
        self._mig_warnings: list[str] = []
        self.unavailable_reason: str | None = None
        self.driver_version: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EnergyMonitor:
        """Open NVML, take the idle baseline if asked, take the first sample and start the
        sampler. If NVML cannot be used, the monitor records why and measures nothing."""
        if not self.devices:
            self.unavailable_reason = "no GPU was routed to this run (gpus: none)"
            return self
        try:
            self._open()
        except NVMLError as exc:
            self.unavailable_reason = f"NVML is not usable here: {exc}"
            self._close_nvml()
            return self
        if self.idle_baseline_s > 0:
            self._baseline()
        self._sample(scan=True)
        if self.sampler:
            self._thread = threading.Thread(target=self._run, name="gpuroute-energy", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> EnergyReading:
        """Stop sampling (taking a last sample) and return what was read."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._sample(scan=True)
        self._close_nvml()
        reason = self.unavailable_reason
        if reason is None and self._failure is not None:
            reason = self._failure
        return EnergyReading(
            watched=self._watched,
            foreign=list(self._foreign.values()),
            scanned=self._scanned,
            interval_s=self.interval_s,
            sampler_cpu_s=self._cpu_s if self._watched else None,
            unavailable_reason=reason,
        )

    def __enter__(self) -> EnergyMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None or self._api is not None:
            self.stop()

    # -- NVML -----------------------------------------------------------------------------

    def _open(self) -> None:
        from gpuroute.nvml import load_pynvml, nvml_errors, text

        api = self._nvml if self._nvml is not None else load_pynvml()
        with nvml_errors("cannot start NVML"):
            api.nvmlInit()
        self._api = api
        with nvml_errors("cannot read the driver version"):
            self.driver_version = text(api.nvmlSystemGetDriverVersion()) or None
        by_gpu: dict[str, _Watched] = {}
        for device in self.devices:
            with nvml_errors(f"cannot open {device.describe()}"):
                watched = by_gpu.get(device.gpu.uuid)
                if watched is None:
                    handle = api.nvmlDeviceGetHandleByUUID(device.gpu.uuid)
                    watched = by_gpu[device.gpu.uuid] = _Watched(device.gpu, handle, [])
                own = (
                    api.nvmlDeviceGetHandleByUUID(device.uuid) if device.is_mig else watched.handle
                )
                watched.devices.append((device, own))
        base = load_pynvml().NVMLError
        for watched in by_gpu.values():
            try:
                api.nvmlDeviceGetTotalEnergyConsumption(watched.handle)
            except base as exc:
                if getattr(exc, "value", None) != NVML_ERROR_NOT_SUPPORTED:
                    raise NVMLError(
                        f"cannot read the energy counter of {watched.gpu.uuid}: {exc}"
                    ) from exc
                watched.has_counter = False
        self._watched = list(by_gpu.values())
        self._counter_handles = [w.handle for w in self._watched]
        self._all_counters = all(w.has_counter for w in self._watched)
        self._mig_warnings = [
            f"mig_shared_counter:{w.gpu.uuid}" for w in self._watched if w.mig_uuids
        ]

    def _close_nvml(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            with contextlib.suppress(Exception):
                api.nvmlShutdown()

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            return None

    def _read(self, w: _Watched, now: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` for one watched GPU, None if it fails; a lost GPU is remembered."""
        try:
            return fn(*args)
        except Exception as exc:
            if getattr(exc, "value", None) == NVML_ERROR_GPU_IS_LOST and w.lost_at is None:
                w.lost_at = now
            return None

    def _baseline(self) -> None:
        api = self._api
        assert api is not None  # opened by start()
        powers: dict[str, list[float]] = {w.gpu.uuid: [] for w in self._watched}
        end = time.monotonic() + self.idle_baseline_s
        while True:
            for w in self._watched:
                mw = self._optional(api.nvmlDeviceGetPowerUsage, w.handle)
                if mw is not None:
                    powers[w.gpu.uuid].append(mw / 1000.0)
            if time.monotonic() >= end:
                break
            time.sleep(min(self.interval_s, max(0.0, end - time.monotonic())))
        for w in self._watched:
            values = powers[w.gpu.uuid]
            w.idle_power_w = sum(values) / len(values) if values else None

    def _sample(self, *, scan: bool = False) -> None:
        api = self._api
        if api is None:
            return
        now = self._clock()
        for w in self._watched:
            counter = (
                self._read(w, now, api.nvmlDeviceGetTotalEnergyConsumption, w.handle)
                if w.has_counter
                else None
            )
            mw = self._read(w, now, api.nvmlDeviceGetPowerUsage, w.handle)
            sample = _Sample(now, int(counter) if counter is not None else None, None)
            if mw is not None:
                sample.power_w = mw / 1000.0
            with self._lock:
                previous = w.samples[-1].counter_mj if w.samples else None
                w.samples.append(sample)
            if sample.counter_mj is not None and previous not in (None, sample.counter_mj):
                w.changes.append(now)
                del w.changes[:-_UPDATE_CHANGES_KEPT]
                w.update_s = _median([b - a for a, b in itertools.pairwise(w.changes)])
            for device, handle in w.devices:
                memory = self._optional(api.nvmlDeviceGetMemoryInfo, handle)
                if memory is not None:
                    used = memory.used / MIB
                    if used > w.peak_used_mib.get(device.uuid, -1.0):
                        w.peak_used_mib[device.uuid] = used
        if scan or now - self._last_scan >= self.process_scan_s:
            self._scan(now)

    def _scan(self, now: float) -> None:
        api = self._api
        if self.own_pids is None or api is None:
            return
        self._last_scan = now
        try:
            own = set(self.own_pids())
        except Exception:
            return
        for w in self._watched:
            for device, handle in w.devices:
                processes = self._optional(api.nvmlDeviceGetComputeRunningProcesses, handle)
                if processes is None:
                    continue
                self._scanned = True
                for p in processes:
                    if p.pid in own:
                        continue
                    used = getattr(p, "usedGpuMemory", None)
                    self._foreign[(p.pid, device.uuid)] = ForeignProcess(
                        pid=p.pid,
                        uuid=device.uuid,
                        nvml_index=device.gpu.index,
                        used_mib=used / MIB if isinstance(used, int) else None,
                    )

    # -- named windows ----------------------------------------------------------------------

    def begin_window(self, name: str) -> None:
        """Start the window ``name``: one energy-counter read per watched GPU (its power,
        where it has no counter), now."""
        api = self._api
        if api is None:
            raise BenchError(
                f"begin_window({name!r}): the monitor is not reading NVML; call start() first"
                + (f" ({self.unavailable_reason})" if self.unavailable_reason else "")
            )
        now = self._clock()
        self._windows[name] = (now, self._window_reads(api, now))

    def end_window(self, name: str) -> WindowEnergy:
        """End the window ``name`` and return each watched GPU's energy over it."""
        begun = self._windows.pop(name, None)
        api = self._api
        if begun is None or api is None:
            open_ = ", ".join(map(repr, self._windows)) or "none"
            raise BenchError(
                f"end_window({name!r}): no window of that name is open (open: {open_}); "
                f"call begin_window({name!r}) first, on a started monitor"
            )
        now = self._clock()
        last = self._window_reads(api, now)
        start, first = begun
        duration = now - start
        warnings = ["window_shorter_than_1s"] if duration < MIN_TRUSTED_WINDOW_S else []
        warnings += self._mig_warnings
        per_gpu: list[GPUWindow] = []
        for w, a, b in zip(self._watched, first, last, strict=True):
            uuid = w.gpu.uuid
            if a is None or b is None:
                lost = w.lost_at is not None
                warnings.append(f"gpu_lost:{uuid}" if lost else f"energy_unreadable:{uuid}")
                why = "gpu_lost" if lost else "unreadable"
                per_gpu.append(GPUWindow(uuid, w.gpu.index, None, None, None, why))
            elif not w.has_counter:  # power in mW at both ends: a trapezoid
                energy = (a + b) / 2000.0 * duration
                spread = abs(b - a) / 2000.0 * duration
                per_gpu.append(GPUWindow(uuid, w.gpu.index, energy, spread, "power"))
            elif b < a:
                warnings.append(f"counter_reset:{uuid}")
                per_gpu.append(GPUWindow(uuid, w.gpu.index, None, None, None, "counter_reset"))
            elif b == a and duration > 0:
                warnings.append(f"window_shorter_than_counter_update:{uuid}")
                reason = "window_shorter_than_counter_update"
                per_gpu.append(GPUWindow(uuid, w.gpu.index, None, None, None, reason))
            else:
                energy = (b - a) / 1000.0
                period = w.update_s
                uncertainty = (
                    period * energy / duration if period is not None and duration > 0 else None
                )
                if uncertainty is not None and uncertainty > MAX_RELATIVE_UNCERTAINTY * energy:
                    warnings.append(f"energy_uncertainty_above_2pct:{uuid}")
                per_gpu.append(GPUWindow(uuid, w.gpu.index, energy, uncertainty, "counter"))
        return WindowEnergy(name, start, now, per_gpu, warnings)

    def _window_reads(self, api: NVMLApi, now: float) -> list[Any]:
        """Each watched GPU's counter (mJ), or its power (mW) where it has no counter; None
        where the read failed (a lost GPU is remembered)."""
        if self._all_counters:
            read = api.nvmlDeviceGetTotalEnergyConsumption
            with contextlib.suppress(Exception):  # else read one by one, to see which failed
                return [read(handle) for handle in self._counter_handles]
        return [
            self._read(
                w,
                now,
                api.nvmlDeviceGetTotalEnergyConsumption
                if w.has_counter
                else api.nvmlDeviceGetPowerUsage,
                w.handle,
            )
            for w in self._watched
        ]

    def _run(self) -> None:
        start_cpu = time.thread_time()
        try:
            while not self._stop.wait(self.interval_s):
                self._sample()
        except Exception as exc:  # a sampler failure is reported, not raised in a thread
            self._failure = f"the energy sampler failed: {exc}"
        finally:
            self._cpu_s = time.thread_time() - start_cpu


@dataclass(slots=True)
class GPUWindow:
    """One GPU's energy over a named window."""

    uuid: str
    nvml_index: int
    energy_j: float | None
    uncertainty_j: float | None
    """How far ``energy_j`` may be from the truth (a bound, either way): the counter's
    measured update period times the window's power; None while the period is unknown
    (the background sampler has seen fewer than two changes of the counter)."""
    method: Literal["counter", "power"] | None
    """``counter``: the difference of the energy counter; ``power``: the power read at both
    ends, averaged (a GPU without the counter)."""
    unavailable_reason: str | None = None
    """Why ``energy_j`` is None: ``counter_reset``, ``gpu_lost``, ``unreadable``,
    ``window_shorter_than_counter_update``."""


_METHODS: dict[str | None, Any] = {
    "counter": "nvml_total_energy_counter",
    "power": "nvml_power_integration",
    None: None,
}


@dataclass(slots=True)
class WindowEnergy:
    """The watched GPUs' energy over a named window (``EnergyMonitor.end_window``)."""

    name: str
    start_s: float
    end_s: float
    per_gpu: list[GPUWindow]
    warnings: list[str]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def energy_j(self) -> float | None:
        """The GPUs' total, or None if one GPU's energy is unknown (never a partial sum)."""
        values = [g.energy_j for g in self.per_gpu]
        return None if None in values else sum(v for v in values if v is not None)

    @property
    def uncertainty_j(self) -> float | None:
        values = [g.uncertainty_j for g in self.per_gpu]
        if self.energy_j is None or None in values:
            return None
        return sum(v for v in values if v is not None)

    def to_energy(self, names: dict[str, str] | None = None) -> Energy:
        """This window as a result's energy section (``names``: GPU names by UUID)."""
        duration = self.duration_s
        total = self.energy_j
        methods = {_METHODS[g.method] for g in self.per_gpu}
        method: Any = methods.pop() if len(methods) == 1 else "mixed"
        return Energy(
            method=method if method is not None else "none",
            window=EnergyWindow(
                start_unix_s=self.start_s,
                end_unix_s=self.end_s,
                duration_s=duration,
                includes=[self.name],
                excludes=[],
            ),
            per_gpu=[
                GPUEnergy(
                    uuid=g.uuid,
                    nvml_index=g.nvml_index,
                    name=(names or {}).get(g.uuid, ""),
                    method=_METHODS[g.method],
                    energy_j=g.energy_j,
                    avg_power_w=(
                        g.energy_j / duration if g.energy_j is not None and duration > 0 else None
                    ),
                    energy_uncertainty_j=g.uncertainty_j,
                    unavailable_reason=g.unavailable_reason,
                )
                for g in self.per_gpu
            ],
            gpu_energy_j=total,
            gpu_energy_uncertainty_j=self.uncertainty_j,
            avg_gpu_power_w=total / duration if total is not None and duration > 0 else None,
            warnings=list(self.warnings),
        )


@dataclass
class EnergyReading:
    """What the monitor read; energy is computed for a window on demand."""

    watched: list[_Watched]
    foreign: list[ForeignProcess]
    scanned: bool
    interval_s: float
    sampler_cpu_s: float | None
    unavailable_reason: str | None

    @property
    def first_sample_s(self) -> float | None:
        times = [w.samples[0].t for w in self.watched if w.samples]
        return min(times) if times else None

    @property
    def last_sample_s(self) -> float | None:
        times = [w.samples[-1].t for w in self.watched if w.samples]
        return max(times) if times else None

    def energy(
        self,
        start_s: float | None = None,
        end_s: float | None = None,
        *,
        includes: Sequence[str] = ("benchmark",),
        excludes: Sequence[str] = (),
    ) -> Energy:
        """Energy of each watched GPU between ``start_s`` and ``end_s`` (unix seconds;
        default: the whole watch), and the totals."""
        if self.unavailable_reason is not None or not self.watched:
            return unavailable_energy(self.unavailable_reason or "no GPU was watched")
        first, last = self.first_sample_s, self.last_sample_s
        assert first is not None
        assert last is not None
        if (start_s is not None and start_s >= last) or (end_s is not None and end_s <= first):
            return unavailable_energy(
                f"the benchmark's window ({start_s}..{end_s}) lies outside the monitored "
                f"interval ({first}..{last}): no sample covers it"
            )
        t0 = first if start_s is None else max(start_s, first)
        t1 = last if end_s is None else min(end_s, last)
        warnings: list[str] = []
        if start_s is not None and start_s < first - self.interval_s:
            warnings.append("window_starts_before_monitoring")
        if end_s is not None and end_s > last + self.interval_s:
            warnings.append("window_ends_after_monitoring")
        duration = max(t1 - t0, 0.0)
        if duration < MIN_TRUSTED_WINDOW_S:
            warnings.append("window_shorter_than_1s")
        per_gpu = [self._gpu_energy(w, t0, t1, warnings) for w in self.watched]
        methods = {g.method for g in per_gpu}
        method: Any = methods.pop() if len(methods) == 1 else "mixed"
        total = (
            sum(g.energy_j for g in per_gpu if g.energy_j is not None)
            if all(g.energy_j is not None for g in per_gpu)
            else None
        )
        uncertainties = [g.energy_uncertainty_j for g in per_gpu]
        total_uncertainty = (
            sum(u for u in uncertainties if u is not None)
            if total is not None and all(u is not None for u in uncertainties)
            else None
        )
        for g in per_gpu:
            u = g.energy_uncertainty_j
            if (
                g.energy_j is not None
                and u is not None
                and u > MAX_RELATIVE_UNCERTAINTY * g.energy_j
            ):
                warnings.append(f"energy_uncertainty_above_2pct:{g.uuid}")
        idle_adjusted = None
        if total is not None and all(g.idle_power_w is not None for g in per_gpu):
            idle = sum(g.idle_power_w or 0.0 for g in per_gpu)
            idle_adjusted = total - idle * duration
        for foreign in self.foreign:
            tag = f"foreign_process_on_gpu:pid={foreign.pid}"
            if tag not in warnings:
                warnings.append(tag)
        return Energy(
            method=method if method is not None else "none",
            window=EnergyWindow(
                start_unix_s=t0,
                end_unix_s=t1,
                duration_s=duration,
                includes=list(includes),
                excludes=list(excludes),
            ),
            per_gpu=per_gpu,
            gpu_energy_j=total,
            gpu_energy_uncertainty_j=total_uncertainty,
            avg_gpu_power_w=total / duration if total is not None and duration > 0 else None,
            idle_adjusted_gpu_energy_j=idle_adjusted,
            sample_interval_s=self.interval_s,
            sampler_cpu_s=self.sampler_cpu_s,
            warnings=warnings,
        )

    def _gpu_energy(self, w: _Watched, t0: float, t1: float, warnings: list[str]) -> GPUEnergy:
        mig = w.mig_uuids
        if mig:
            warnings.append(f"mig_shared_counter:{w.gpu.uuid}")
        samples = w.samples
        inside = [s for s in samples if t0 <= s.t <= t1]
        powers = [s for s in samples if s.power_w is not None]
        common: dict[str, Any] = {
            "uuid": w.gpu.uuid,
            "nvml_index": w.gpu.index,
            "name": w.gpu.name,
            "idle_power_w": w.idle_power_w,
            "power_samples": len([s for s in inside if s.power_w is not None]),
            "mig_devices": mig,
            "shared_with_other_slices": bool(mig),
        }
        duration = t1 - t0
        counters = [s for s in samples if s.counter_mj is not None]
        if w.lost_at is not None:
            readings = counters if w.has_counter else powers
            last_seen = readings[-1].t if readings else None
            if last_seen is None or t1 > last_seen:
                warnings.append(f"gpu_lost:{w.gpu.uuid}")
                return GPUEnergy(
                    method=None,
                    energy_j=None,
                    avg_power_w=None,
                    unavailable_reason="gpu_lost",
                    **common,
                )
        if w.has_counter and len(counters) >= 1:
            if any(
                (b.counter_mj or 0) < (a.counter_mj or 0) for a, b in itertools.pairwise(counters)
            ):
                warnings.append(f"counter_reset:{w.gpu.uuid}")
                return GPUEnergy(
                    method="nvml_total_energy_counter",
                    energy_j=None,
                    avg_power_w=None,
                    unavailable_reason="counter_reset",
                    **common,
                )
            start_mj = _interpolate(counters, t0)
            end_mj = _interpolate(counters, t1)
            energy_j = (end_mj - start_mj) / 1000.0
            period = _update_period(counters)
            if energy_j > 0 or duration <= 0:
                power = _peak_power(powers, t0, t1)
                if power is None and duration > 0:
                    power = energy_j / duration
                spacing = _median([b.t - a.t for a, b in itertools.pairwise(counters)])
                uncertainty = (
                    (period + spacing) * power
                    if period is not None and spacing is not None and power is not None
                    else None
                )
                return GPUEnergy(
                    method="nvml_total_energy_counter",
                    energy_j=energy_j,
                    avg_power_w=energy_j / duration if duration > 0 else None,
                    counter_start_mj=round(start_mj),
                    counter_end_mj=round(end_mj),
                    energy_uncertainty_j=uncertainty,
                    counter_update_s=period,
                    **common,
                )
            warnings.append(f"window_shorter_than_counter_update:{w.gpu.uuid}")
            common["counter_update_s"] = period
        energy = _integrate(powers, t0, t1)
        return GPUEnergy(
            method="nvml_power_integration",
            energy_j=energy,
            avg_power_w=energy / duration if energy is not None and duration > 0 else None,
            energy_uncertainty_j=_integration_uncertainty(powers, t0, t1),
            **common,
        )

    def memory(self) -> Memory:
        rows = []
        for w in self.watched:
            for device, _ in w.devices:
                rows.append(
                    GPUMemory(
                        uuid=device.uuid,
                        nvml_index=device.gpu.index,
                        peak_used_mib=w.peak_used_mib.get(device.uuid),
                    )
                )
        return Memory(per_gpu=rows)

    def isolation(self) -> Isolation:
        if self.unavailable_reason is not None:
            return Isolation(checked=False, reason=self.unavailable_reason)
        if not self.scanned:
            return Isolation(
                checked=False, reason="NVML listed no processes for the routed devices"
            )
        return Isolation(checked=True, foreign_processes=sorted(self.foreign, key=lambda p: p.pid))


def _interpolate(samples: Sequence[_Sample], t: float) -> float:
    """The counter at time ``t``, linear between the samples that bracket it."""
    times = [s.t for s in samples]
    i = bisect.bisect_left(times, t)
    if i <= 0:
        return float(samples[0].counter_mj or 0)
    if i >= len(samples):
        return float(samples[-1].counter_mj or 0)
    a, b = samples[i - 1], samples[i]
    ca, cb = float(a.counter_mj or 0), float(b.counter_mj or 0)
    if b.t == a.t:
        return cb
    return ca + (cb - ca) * (t - a.t) / (b.t - a.t)


def _integrate(samples: Sequence[_Sample], t0: float, t1: float) -> float | None:
    """Trapezoidal integral of sampled power over [t0, t1] (power held at the ends)."""
    points = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if not points:
        return None
    if t1 <= t0:
        return 0.0
    times = [t for t, _ in points]

    def power_at(t: float) -> float:
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return points[0][1]
        if i >= len(points):
            return points[-1][1]
        (ta, pa), (tb, pb) = points[i - 1], points[i]
        return pa if tb == ta else pa + (pb - pa) * (t - ta) / (tb - ta)

    knots = [t0, *(t for t in times if t0 < t < t1), t1]
    return sum((b - a) * (power_at(a) + power_at(b)) / 2 for a, b in itertools.pairwise(knots))


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _update_period(counters: Sequence[_Sample]) -> float | None:
    """The counter's update period, measured: the median spacing of the times at which a new
    counter value was first sampled (None with fewer than two changes sampled)."""
    changes = [b.t for a, b in itertools.pairwise(counters) if b.counter_mj != a.counter_mj]
    return _median([b - a for a, b in itertools.pairwise(changes)])


def _peak_power(samples: Sequence[_Sample], t0: float, t1: float) -> float | None:
    """The highest power sampled in [t0, t1], or at the samples nearest to it."""
    points = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if not points:
        return None
    inside = [p for t, p in points if t0 <= t <= t1]
    if inside:
        return max(inside)
    before = [p for t, p in points if t < t0]
    after = [p for t, p in points if t > t1]
    return max([*before[-1:], *after[:1]])


def _integration_uncertainty(samples: Sequence[_Sample], t0: float, t1: float) -> float | None:
    """The energy at stake between power samples in [t0, t1]: the power may have changed
    anywhere between two samples, so half the change times the interval, summed. None
    without two power samples in the window."""
    points = [(s.t, s.power_w) for s in samples if s.power_w is not None and t0 <= s.t <= t1]
    if len(points) < 2:
        return None
    return sum((tb - ta) * abs(pb - pa) / 2 for (ta, pa), (tb, pb) in itertools.pairwise(points))
