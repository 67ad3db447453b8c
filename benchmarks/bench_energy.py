"""One energy window on 8 GPUs against the NVML reads it cannot do without.

Run: ``python benchmarks/bench_energy.py [rounds]``. Target (issue: speed where it is lost):
one window (begin, end, read the total) on 8 GPUs within 3x two bare
``nvmlDeviceGetTotalEnergyConsumption`` reads per GPU through the same NVML.

All on the 8-GPU simulated host (``FakeNVML``, its counters following the real clock), in one
process, alternating, medians over the rounds:

* bare: two counter reads per GPU through handles opened beforehand, nothing else;
* window: ``begin_window``/``end_window`` on a started ``EnergyMonitor`` (its 10 Hz sampler
  running, so the counter's update period, hence the uncertainty, is known), and the total;
* the same bare reads and windows on a FakeNVML whose counters stand still (the cheapest
  reads, so the strictest baseline), with no sampler;
* whole monitor: ``EnergyMonitor(...).start()``, ``stop()``, ``energy()``: what a window cost
  before named windows (NVML opened, handles looked up, a thread started, samples kept, a
  result model built), for comparison;
* Zeus (``zeus.monitor.ZeusMonitor`` ``begin_window``/``end_window``), only if it is installed:
  it is not a dependency (it pulls pandas, scikit-learn and scipy), and without it the line
  says so.
"""

from __future__ import annotations

import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Callable

from gpuroute.api import plan
from gpuroute.bench.energy import EnergyMonitor
from gpuroute.testing import FakeNVML, topology

TARGET = 3.0


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    inventory = topology("h100-sxm-8")
    devices = plan("all", inventory=inventory).devices
    fake = FakeNVML(inventory, power_w=300.0, clock=time.time)
    fake.nvmlInit()
    handles = [fake.nvmlDeviceGetHandleByUUID(g.uuid) for g in inventory.gpus]
    read = fake.nvmlDeviceGetTotalEnergyConsumption

    def bare() -> None:
        for handle in handles:
            read(handle)
        for handle in handles:
            read(handle)

    monitor = EnergyMonitor(devices, nvml=fake).start()
    time.sleep(0.5)  # the sampler measures the counter's update period

    def window() -> None:
        monitor.begin_window("w")
        monitor.end_window("w").energy_j  # noqa: B018 - reading the total is part of it

    def whole() -> None:
        EnergyMonitor(devices, nvml=fake).start().stop().energy()

    def median_us(fn: Callable[[], None], n: int) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6

    series: dict[str, list[float]] = {"bare": [], "window": [], "whole": []}
    for _ in range(10):  # alternate, in blocks
        series["bare"].append(median_us(bare, rounds // 10))
        series["window"].append(median_us(window, rounds // 10))
        series["whole"].append(median_us(whole, max(rounds // 100, 5)))
    monitor.begin_window("check")
    time.sleep(0.05)
    last = monitor.end_window("check")
    monitor.stop()
    bare_us = statistics.median(series["bare"])
    window_us = statistics.median(series["window"])
    whole_us = statistics.median(series["whole"])
    print(f"Python {platform.python_version()} on {platform.machine()}, 8 simulated GPUs")
    print(f"{'what':<44} {'µs':>8} {'x bare':>7}")
    print(f"{'bare: 2 counter reads per GPU (16 calls)':<44} {bare_us:>8.1f} {1.0:>7.2f}")
    verdict = "met" if window_us <= TARGET * bare_us else "MISSED"
    print(
        f"{'window: begin_window + end_window + total':<44} {window_us:>8.1f} "
        f"{window_us / bare_us:>7.2f}  (target ≤ {TARGET:g}x: {verdict})"
    )
    whole_ratio = whole_us / bare_us
    print(f"{'whole monitor: start + stop + energy()':<44} {whole_us:>8.1f} {whole_ratio:>7.2f}")
    print(f"{'window / whole monitor':<44} {'':>8} {window_us / whole_us:>7.3f}")
    print(
        f"a 50 ms window: {last.energy_j:.2f} J ± {last.uncertainty_j or float('nan'):.2f} J, "
        f"warnings {last.warnings[:2]}{' …' if len(last.warnings) > 2 else ''}"
    )
    # The strictest baseline: counters that stand still answer fastest (no clock to follow).
    still = FakeNVML(inventory, power_w=300.0)
    still.nvmlInit()
    fixed = [still.nvmlDeviceGetHandleByUUID(g.uuid) for g in inventory.gpus]
    read_still = still.nvmlDeviceGetTotalEnergyConsumption

    def bare_still() -> None:
        for handle in fixed:
            read_still(handle)
        for handle in fixed:
            read_still(handle)

    plain = EnergyMonitor(devices, nvml=still, sampler=False).start()

    def window_still() -> None:
        plain.begin_window("w")
        plain.end_window("w").energy_j  # noqa: B018

    pairs = [(median_us(bare_still, rounds // 10), median_us(window_still, rounds // 10))]
    pairs += [(median_us(bare_still, rounds // 10), median_us(window_still, rounds // 10))]
    b = statistics.median(p[0] for p in pairs)
    w = statistics.median(p[1] for p in pairs)
    verdict = "met" if w <= TARGET * b else "MISSED"
    print(
        f"counters standing still, no sampler: bare {b:.1f} µs, window {w:.1f} µs, "
        f"{w / b:.2f}x (target ≤ {TARGET:g}x: {verdict})"
    )
    plain.stop()
    print(zeus_line())


def zeus_line() -> str:
    if importlib.util.find_spec("zeus") is None:
        return (
            "Zeus: not installed, not measured (it is no dependency: it pulls pandas, "
            "scikit-learn, scipy and amdsmi)"
        )
    return "Zeus: installed, but not measured here (its NVML calls would need FakeNVML patched in)"


if __name__ == "__main__":
    main()
