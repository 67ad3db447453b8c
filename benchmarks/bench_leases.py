"""Lease throughput and latency, side by side with a bare lock-file scheme in the same run.

Run: ``python benchmarks/bench_leases.py`` (``--help`` for the options). Every target is a
ratio to the bare scheme measured in the same run, so that the machine's speed and load
cancel out:

* uncontended: one process, ``acquire("any:1")`` then ``release()``, on a 4-GPU simulated
  host, in a fresh lease directory, against the bare minimum any lock-file scheme pays (open
  a lock file, take an flock, create a file with O_EXCL, close it, remove it, unlock). The
  two alternate in rounds of ``--cycles`` cycles (``--rounds`` of each), so that a change of
  the machine's load falls on both; the figure is each one's median rate over the rounds.
  Target: gpuroute at >= 0.5x the bare rate.
* contended: 2, 4 and 8 processes (``--processes``), each ``--contended-cycles`` cycles of
  acquire("any:1"), hold 1 ms, release, on a 16-GPU host (so that every acquisition
  succeeds and the figure is the lock's, not the wait for a free GPU): the latency of each
  ``acquire`` call, p50 and p99, against the same critical sections holding nothing but an
  flock and a file (taking it: lock, create, unlock; giving it back: lock, remove, unlock).
  Every process makes one cycle before it starts to count, and all start counting
  together (a barrier), for both schemes alike: the figures are the steady state, not the
  processes' start. The two schemes alternate, ``--repeats`` times, and each one's
  latencies are pooled. Target: gpuroute's p99 <= 3x the bare p99 at each count.

Both pass the live state (none: ``HostState.unknown()``) and an empty policy, so that the
figures are the leases' own; reading NVML's state adds its own cost on a GPU host.

``--only gpuroute`` or ``--only bare`` runs that scheme's uncontended loop alone (for a
profiler, or ``strace -c -f`` to count the system calls of one cycle).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier

import gpuroute
from gpuroute.core.selection import HostState
from gpuroute.limits import Policy
from gpuroute.testing import topology

RATE_RATIO_TARGET = 0.5
P99_RATIO_TARGET = 3.0


def host(n: int) -> gpuroute.Inventory:
    base = topology("h100-sxm-8").gpus
    gpus = []
    for i in range(n):
        g = base[i % len(base)]
        gpus.append(
            dataclasses.replace(
                g,
                index=i,
                uuid=f"GPU-{i:08x}-0000-4000-8000-000000000000",
                pci_bus_id=f"00000000:{0x10 + i:02X}:00.0",
            )
        )
    return gpuroute.Inventory(gpus=tuple(gpus), driver_version="580.95.05")


def cycle(inventory: gpuroute.Inventory, lease_dir: str) -> gpuroute.Lease:
    return gpuroute.acquire(
        "any:1",
        inventory=inventory,
        lease_dir=lease_dir,
        state=HostState.unknown(),
        policy=Policy(),
        context=gpuroute.CallerContext(),
    )


def lease_loop(inventory: gpuroute.Inventory, lease_dir: str, n: int) -> float:
    """``n`` acquire+release cycles; their rate per second."""
    start = time.perf_counter()
    for _ in range(n):
        cycle(inventory, lease_dir).release()
    return n / (time.perf_counter() - start)


def bare_loop(lease_dir: str, n: int) -> float:
    """``n`` cycles of the bare scheme; their rate per second."""
    lock = os.path.join(lease_dir, "bare.lock")
    name = os.path.join(lease_dir, "bare.file")
    start = time.perf_counter()
    for _ in range(n):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        f = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(f)
        os.unlink(name)
        os.close(fd)
    return n / (time.perf_counter() - start)


def uncontended(rounds: int, n: int) -> tuple[float, float, list[float]]:
    """The median rates of gpuroute and of the bare scheme, and each round's ratio."""
    inventory = host(4)
    leases: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        lease_loop(inventory, d, 20)  # warm: the default host, imports
        bare_loop(d, 20)
        for _ in range(rounds):
            leases.append(lease_loop(inventory, d, n))
            bare.append(bare_loop(d, n))
    ratios = [a / b for a, b in zip(leases, bare, strict=True)]
    return statistics.median(leases), statistics.median(bare), ratios


def _bare_take(lease_dir: str, path: str) -> None:
    fd = os.open(os.path.join(lease_dir, "lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    os.close(fd)


def _bare_give(lease_dir: str, path: str) -> None:
    fd = os.open(os.path.join(lease_dir, "lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.unlink(path)
    os.close(fd)


def _contender(
    lease_dir: str,
    cycles: int,
    bare: bool,
    start: Barrier,
    out: multiprocessing.Queue[list[float]],
) -> None:
    inventory = host(16)
    take: Callable[[int], Callable[[], None]]
    if bare:  # the same critical sections, with nothing but a lock and a file in them

        def take(i: int) -> Callable[[], None]:
            path = os.path.join(lease_dir, f"bare-{os.getpid()}-{i}")
            _bare_take(lease_dir, path)
            return lambda: _bare_give(lease_dir, path)

    else:

        def take(i: int) -> Callable[[], None]:
            return cycle(inventory, lease_dir).release

    take(-1)()  # one cycle before counting, for both schemes alike
    start.wait()
    latencies = []
    for i in range(cycles):
        begun = time.perf_counter()
        give = take(i)
        latencies.append(time.perf_counter() - begun)
        time.sleep(0.001)
        give()
    out.put(latencies)


def contended(processes: int, cycles: int, *, bare: bool) -> list[float]:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[float]] = ctx.Queue()
    start = ctx.Barrier(processes)
    with tempfile.TemporaryDirectory() as d:
        workers = [
            ctx.Process(target=_contender, args=(d, cycles, bare, start, out))
            for _ in range(processes)
        ]
        for w in workers:
            w.start()
        latencies = [x for _ in workers for x in out.get()]
        for w in workers:
            w.join()
    return sorted(latencies)


def p99(latencies: list[float]) -> float:
    """The 99th percentile of sorted ``latencies`` (nearest rank below)."""
    return latencies[int(0.99 * (len(latencies) - 1))]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="uncontended rounds of each")
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per uncontended round")
    parser.add_argument("--processes", default="2,4,8", help="contending process counts")
    parser.add_argument("--contended-cycles", type=int, default=200, help="cycles per process")
    parser.add_argument("--repeats", type=int, default=3, help="contended runs of each scheme")
    parser.add_argument("--only", choices=("gpuroute", "bare"), help="one uncontended loop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.only is not None:
        with tempfile.TemporaryDirectory() as d:
            inventory = host(4)
            lease_loop(inventory, d, 20)
            bare_loop(d, 20)
            print("=====START", file=sys.stderr, flush=True)  # a marker for strace's output
            if args.only == "gpuroute":
                rate = lease_loop(inventory, d, args.cycles)
            else:
                rate = bare_loop(d, args.cycles)
            print("=====END", file=sys.stderr, flush=True)
        print(f"{args.only}: {rate:.0f} cycles/s")
        return 0
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    leases, bare, ratios = uncontended(args.rounds, args.cycles)
    rate_ratio = leases / bare
    print(f"uncontended, one process (4-GPU host), median of {args.rounds} x {args.cycles} cycles")
    print(f"  acquire('any:1') + release      {leases:8.0f} /s")
    print(f"  bare flock + O_EXCL file         {bare:8.0f} /s")
    print(
        f"  ratio {rate_ratio:.2f}x (target >= {RATE_RATIO_TARGET}x); per round "
        f"{min(ratios):.2f}-{max(ratios):.2f}x"
    )
    counts = [int(n) for n in args.processes.split(",")]
    print(
        f"\nN processes x {args.contended_cycles} cycles x {args.repeats} runs (16-GPU host): "
        "latency of taking a device, ms"
    )
    print(
        f"  {'processes':>9}  {'acquire p50':>11}  {'acquire p99':>11}  {'bare p50':>8}  "
        f"{'bare p99':>8}  {'p99 ratio':>9}"
    )
    ok = rate_ratio >= RATE_RATIO_TARGET
    for processes in counts:
        lease_runs: list[float] = []
        bare_runs: list[float] = []
        for _ in range(args.repeats):
            lease_runs += contended(processes, args.contended_cycles, bare=False)
            bare_runs += contended(processes, args.contended_cycles, bare=True)
        lease_runs.sort()
        bare_runs.sort()
        ratio = p99(lease_runs) / p99(bare_runs)
        ok = ok and ratio <= P99_RATIO_TARGET
        print(
            f"  {processes:>9}  {statistics.median(lease_runs) * 1000:>11.2f}  "
            f"{p99(lease_runs) * 1000:>11.2f}  {statistics.median(bare_runs) * 1000:>8.2f}  "
            f"{p99(bare_runs) * 1000:>8.2f}  {ratio:>8.1f}x"
        )
    print(f"  target: p99 ratio <= {P99_RATIO_TARGET:g}x at each count")
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
