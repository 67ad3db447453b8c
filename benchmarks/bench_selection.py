"""Choosing free devices for ``any:N`` on large hosts.

Run: ``python benchmarks/bench_selection.py``. Targets (issue: speed where it is lost):
``acquire("any:8")`` on a 64-GPU host within 5 ms, and ``any:8`` (and ``any:16``) with
``mig_profile=`` over 448 MIG devices within 20 ms, each against ``acquire("any:1")`` on the
same host in the same run.

The hosts are synthetic: 64 GPUs (H100 records renumbered), and 64 A100s each split into seven
``1g.10gb`` MIG devices. Their live state, topology distances included, is read once through
``FakeNVML`` (GPUs paired on a PCIe switch, two halves of the host, then across the system)
and passed to every call, so the figures are the choice's and the lease's, not NVML's. Every
lease is released before the next one; the lease directory is a fresh temporary one. The row
``0,…,7`` asks for eight named GPUs: the lease of eight devices without any choice, the part of
``any:8`` that is not the choice.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import sys
import tempfile
import time

import gpuroute
from gpuroute.core.inventory import GPU, MIGDevice
from gpuroute.core.selection import HostState, Need, choose
from gpuroute.limits import Policy
from gpuroute.nvml import read_state
from gpuroute.testing import FakeNVML, topology

GPU_TARGET_MS = 5.0
MIG_TARGET_MS = 20.0


def whole_host(n: int = 64) -> gpuroute.Inventory:
    """``n`` H100s, renumbered, each on its own PCI bus."""
    base = topology("h100-sxm-8").gpus[0]
    gpus = tuple(
        dataclasses.replace(
            base,
            index=i,
            uuid=f"GPU-{i:08x}-0000-4000-8000-000000000000",
            pci_bus_id=f"00000000:{0x10 + i:02X}:00.0",
        )
        for i in range(n)
    )
    return gpuroute.Inventory(gpus=gpus, driver_version="580.95.05")


def mig_host(n: int = 64, per_gpu: int = 7) -> gpuroute.Inventory:
    """``n`` A100s in MIG mode, each split into ``per_gpu`` ``1g.10gb`` devices."""
    gpus = tuple(
        GPU(
            index=i,
            uuid=f"GPU-{i:08x}-0000-4000-8000-000000000000",
            pci_bus_id=f"00000000:{0x10 + i:02X}:00.0",
            name="NVIDIA A100-SXM4-80GB",
            memory_total_mib=81920,
            mig_mode=True,
            mig_compute_slices_total=7,
            mig_devices=tuple(
                MIGDevice(
                    index=j,
                    uuid=f"MIG-{i:08x}-{j:04x}-4000-8000-000000000000",
                    gpu_instance_id=7 + j,
                    compute_instance_id=0,
                    profile="1g.10gb",
                    memory_total_mib=9728,
                    compute_slices=1,
                )
                for j in range(per_gpu)
            ),
        )
        for i in range(n)
    )
    return gpuroute.Inventory(gpus=gpus, driver_version="580.95.05")


def state_of(inventory: gpuroute.Inventory) -> HostState:
    return read_state(inventory, FakeNVML(inventory))


def time_acquire(
    inventory: gpuroute.Inventory, state: HostState, spec: str, rounds: int, **kw: object
) -> tuple[float, float, tuple[str, ...]]:
    """Median wall and CPU ms of ``acquire(spec)`` (released at once), and the devices
    chosen. On a loaded machine the CPU time is the steadier figure."""
    times = []
    cpu = []
    chosen: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory() as d:
        for _ in range(rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            lease = gpuroute.acquire(
                spec,
                inventory=inventory,
                lease_dir=d,
                state=state,
                policy=Policy(),
                context=gpuroute.CallerContext(),
                **kw,  # type: ignore[arg-type]
            )
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            chosen = tuple(dev.label for dev in lease.plan.devices)
            lease.release()
    return statistics.median(times), statistics.median(cpu), chosen


def time_choose(inventory: gpuroute.Inventory, state: HostState, need: Need, rounds: int) -> float:
    """Median CPU ms of the choice alone (``gpuroute.core.selection.choose``)."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        choose(need, inventory, state, (), spec=f"any:{need.count}")
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"Python {platform.python_version()} on {platform.machine()}, {rounds} rounds, medians")
    gpus = whole_host()
    gstate = state_of(gpus)
    migs = mig_host()
    mstate = state_of(migs)
    mig = {"mig_profile": "1g.10gb", "allow_multiple_mig": True}
    rows = [
        ("64 GPUs", gpus, gstate, "any:1", {}, None),
        ("64 GPUs", gpus, gstate, "any:8", {}, GPU_TARGET_MS),
        ("64 GPUs", gpus, gstate, "0,1,2,3,4,5,6,7", {}, None),
        ("448 MIG", migs, mstate, "any:1", mig, None),
        ("448 MIG", migs, mstate, "any:8", mig, MIG_TARGET_MS),
        ("448 MIG", migs, mstate, "any:16", mig, MIG_TARGET_MS),
    ]
    print(
        f"{'host':<8} {'spec':<7} {'acquire ms':>10} {'x any:1':>8} {'CPU ms':>7} {'x any:1':>8} "
        f"{'choose CPU ms':>13} {'target (CPU)':>13}  chosen"
    )
    base: dict[str, tuple[float, float]] = {}
    for name, inventory, state, spec, kw, target in rows:
        ms, cpu, chosen = time_acquire(inventory, state, spec, rounds, **kw)
        named = not spec.startswith("any:")
        count = len(spec.split(",")) if named else int(spec.split(":")[1])
        need = Need(count=count, mig_profile=kw.get("mig_profile"))  # type: ignore[arg-type]
        cms = "-" if named else f"{time_choose(inventory, state, need, rounds):.2f}"
        if count == 1:
            base[name] = (ms, cpu)
        verdict = "" if target is None else f"≤{target:g} {'met' if cpu <= target else 'MISSED'}"
        shown = ",".join(chosen) if len(chosen) <= 8 else ",".join(chosen[:8]) + ",…"
        spec = "0,…,7" if named else spec
        print(
            f"{name:<8} {spec:<7} {ms:>10.2f} {ms / base[name][0]:>8.1f} {cpu:>7.2f} "
            f"{cpu / base[name][1]:>8.1f} {cms:>13} {verdict:>13}  {shown}"
        )


if __name__ == "__main__":
    main()
