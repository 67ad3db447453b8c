"""Core speed: ``plan()`` on the MIG topology, a kept ``Host``'s ``plan``, and the cost of
``import gpuroute``.

Run: ``python benchmarks/bench_core.py``. Prints figures and ratios; targets (issue: core):
plan() median at most 50 us; ``import gpuroute`` at most 1.3 x ``import pydantic``; a kept
``Host``'s ``plan("3,1")`` costs what the core's costs, at most 20 us.

* plan(): median of many calls, each spec resolved against the ``a100-mig-4`` topology with
  a fixed context, compared in the same run with the obvious alternative, building the two
  variables by hand from a list of indices (which checks nothing).
* Host: ``host.plan("3,1")`` on the ``h100-sxm-8`` simulated host, against the core
  (``resolve``), ``gpuroute.plan`` with an inventory given, and ``gpuroute.plan`` with all
  defaults on a live host (a ``FakeNVML`` in place of pynvml), in the same rounds
  (interleaved), with the NVML calls each plan makes, counted in a separate pass.
* import: wall time of ``python -c "import gpuroute"`` against ``python -c "import pydantic"``
  and ``python -c "pass"``, interleaved, fresh interpreters, median, with bytecode caching on
  (as for any installed package).
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import gpuroute
import gpuroute.nvml
from gpuroute import CallerContext, Host, Inventory, plan
from gpuroute.core.resolution import resolve
from gpuroute.testing import FakeNVML, topology

PLAN_TARGET_US = 50.0
HOST_PLAN_TARGET_US = 20.0
IMPORT_TARGET_RATIO = 1.3


def _median_us(fn: Callable[[], object], *, rounds: int = 200, per_round: int = 50) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter_ns() - start) / per_round / 1000)
    return statistics.median(samples)


def _plan_env(spec: str, inventory: Inventory, context: CallerContext) -> object:
    return plan(spec, inventory, context=context).container_env


def bench_plan() -> bool:
    inventory = topology("a100-mig-4")
    context = CallerContext()
    mig = inventory.gpus[2].mig_devices[3]
    specs = {
        "whole GPUs '3,0'": "3,0",
        "MIG index '2:3'": "2:3",
        "MIG UUID": mig.uuid,
        "GPU UUID prefix": inventory.gpus[3].uuid[:10],
        "all": "all",
    }
    print(f"plan() on a100-mig-4 (median of 200 x 50 calls; target <= {PLAN_TARGET_US:.0f} us)")
    ok = True
    for label, spec in specs.items():
        us = _median_us(functools.partial(_plan_env, spec, inventory, context))
        ok &= us <= PLAN_TARGET_US
        print(f"  {label:<20} {us:7.1f} us")

    request = "3,0"

    def by_hand() -> dict[str, str]:
        ids = [int(x) for x in request.split(",")]
        return {
            "NVIDIA_VISIBLE_DEVICES": ",".join(map(str, ids)),
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(ids))),
        }

    hand = _median_us(by_hand)
    full = _median_us(lambda: plan(request, inventory, context=context).container_env)
    print(f"  by hand, unchecked   {hand:7.1f} us   (plan/by-hand ratio {full / hand:.1f}x)")
    return ok


class _CountingNVML:
    """Passes every ``nvml*`` call on to an NVML (here a FakeNVML) and counts them."""

    def __init__(self, api: FakeNVML) -> None:
        self.api = api
        self.NVMLError = api.NVMLError
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.api, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return attr(*args, **kwargs)

        return counted


def _interleaved_us(
    fns: dict[str, Callable[[], object]], *, rounds: int = 200, per_round: int = 50
) -> tuple[dict[str, float], dict[str, float]]:
    """Median us per call of each function, timed in turn within each round: wall time, and
    this thread's CPU time (which a busy machine's other processes disturb less)."""
    wall: dict[str, list[float]] = {label: [] for label in fns}
    cpu: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            for _ in range(per_round):
                fn()
            cpu[label].append((time.thread_time_ns() - start_cpu) / per_round / 1000)
            wall[label].append((time.perf_counter_ns() - start) / per_round / 1000)
    return (
        {label: statistics.median(values) for label, values in wall.items()},
        {label: statistics.median(values) for label, values in cpu.items()},
    )


def _plan_series(spec: str, inventory: Inventory, nvml: Any) -> dict[str, Callable[[], object]]:
    """The ways to plan ``spec``, each reading the live host (where it does) through
    ``nvml``, which also stands in for pynvml while the series run."""
    given = Host(inventory=inventory)
    live = Host(nvml=nvml)  # the default recheck_s

    def former() -> object:
        # what the default path did before a host kept the inventory: read it each call
        return resolve(spec, gpuroute.nvml.read_inventory(nvml))

    return {
        "core: resolve(spec, inventory)": functools.partial(resolve, spec, inventory),
        "gpuroute.plan(spec, inventory=inv)": functools.partial(
            gpuroute.plan, spec, inventory=inventory
        ),
        "host.plan(spec), Host(inventory=inv)": functools.partial(given.plan, spec),
        "host.plan(spec), Host(nvml=FakeNVML)": functools.partial(live.plan, spec),
        "gpuroute.plan(spec), live defaults": functools.partial(gpuroute.plan, spec),
        "inventory re-read each call (former)": former,
    }


def bench_host() -> bool:
    """A kept Host's plan against the core and the module-level doors, on a live host."""
    inventory = topology("h100-sxm-8")
    spec = "3,1"
    saved = gpuroute.nvml.load_pynvml
    this_host: Any = FakeNVML(inventory)
    gpuroute.nvml.load_pynvml = lambda: this_host  # pynvml, as the default host finds it
    try:
        series = _plan_series(spec, inventory, this_host)
        for fn in series.values():  # first reads, imports
            fn()
        us, cpu_us = _interleaved_us(series)

        # NVML calls per plan, in a pass of its own (counting slows the calls down).
        this_host = _CountingNVML(FakeNVML(inventory))
        counted = _plan_series(spec, inventory, this_host)
        counts: dict[str, float] = {}
        n = 1000
        for label, fn in counted.items():
            fn()
            this_host.calls = 0
            for _ in range(n):
                fn()
            counts[label] = this_host.calls / n
    finally:
        gpuroute.nvml.load_pynvml = saved

    core = us["core: resolve(spec, inventory)"]
    print(
        f"\nplan({spec!r}) on h100-sxm-8 (median of 200 x 50 calls, interleaved; target: "
        f"host.plan <= {HOST_PLAN_TARGET_US:.0f} us and as the core)"
    )
    print(f"  {'':<38} {'wall':>7}      {'':<9}   {'CPU':>7}")
    for label, value in us.items():
        print(
            f"  {label:<38} {value:7.1f} us   x{value / core:4.1f} core   "
            f"{cpu_us[label]:7.1f} us   {counts[label]:6.2f} NVML calls"
        )
    host_us = us["host.plan(spec), Host(inventory=inv)"]
    live_us = us["host.plan(spec), Host(nvml=FakeNVML)"]
    module_us = us["gpuroute.plan(spec, inventory=inv)"]
    defaults_us = us["gpuroute.plan(spec), live defaults"]
    former_us = us["inventory re-read each call (former)"]
    print(
        f"  ratios: host.plan / gpuroute.plan(inventory=) {host_us / module_us:.2f}; "
        f"live defaults / host.plan(nvml=) {defaults_us / live_us:.2f}; "
        f"former / live defaults {former_us / defaults_us:.2f}"
    )
    return max(host_us, live_us) <= HOST_PLAN_TARGET_US


# Bytecode caching as an installed package has it: an environment that sets
# PYTHONDONTWRITEBYTECODE would make every run recompile gpuroute's sources (pip writes the
# .pyc files of site-packages, such as pydantic's, at install time), and the comparison unfair.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall_ms(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=_ENV)
    return (time.perf_counter() - start) * 1000


def bench_import(runs: int = 30) -> bool:
    codes = {"pass": "pass", "pydantic": "import pydantic", "gpuroute": "import gpuroute"}
    for code in codes.values():  # warm the file cache
        _wall_ms(code)
    times: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(runs):
        for key, code in codes.items():
            times[key].append(_wall_ms(code))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gpuroute"] / med["pydantic"]
    print(f"\nimport wall time, fresh interpreter (median of {runs}, interleaved)")
    for key in codes:
        print(f"  python -c {codes[key]!r:<20} {med[key]:7.1f} ms")
    print(f"  gpuroute / pydantic ratio      {ratio:7.2f}   (target <= {IMPORT_TARGET_RATIO})")
    return ratio <= IMPORT_TARGET_RATIO


def main() -> int:
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {platform.system()} {platform.release()}\n"
    )
    ok = bench_plan()
    ok &= bench_host()
    ok &= bench_import()
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
