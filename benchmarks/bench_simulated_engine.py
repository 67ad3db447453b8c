"""The simulated host's private engine: its start, with the test images loaded from one
archive whose single layer they share, against the obvious alternative, one
``import_image_from_data`` of the same root filesystem per image (as it was built before).

Run: ``python benchmarks/bench_simulated_engine.py [ROUNDS]`` (root, Debian's docker.io and
busybox-static, as for the simulated host). Prints, for each way, the median wall time and
machine-wide CPU time of loading the four images into a freshly started engine, and of the
whole start; then the ratios. The two ways alternate, one of each per round, so that a
change in the machine's load reaches both alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

from gpuroute.testing import topology
from gpuroute.testing.engine import _IMAGES, SimulatedGPUHost, _image_tar

ROUNDS = 5


def _cpu_seconds() -> float:
    """The machine's busy CPU time so far (every process: dockerd and containerd too)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _four_imports(host: SimulatedGPUHost) -> None:
    """The alternative: each image imported from the root filesystem on its own."""
    data = _image_tar()
    client = host.client()
    try:
        for tag, env, entrypoint in _IMAGES:
            repository, _, version = tag.partition(":")
            changes = ["ENV PATH=/bin", 'CMD ["sh"]', *(f"ENV {e}" for e in env)]
            if entrypoint is not None:
                changes.append("ENTRYPOINT " + str(list(entrypoint)).replace("'", '"'))
            client.api.import_image_from_data(
                data, repository=repository, tag=version, changes=changes
            )
    finally:
        client.close()


def _one_archive(host: SimulatedGPUHost) -> None:
    SimulatedGPUHost._build_images(host)  # what the simulated host does


def _measure(load: Callable[[SimulatedGPUHost], None]) -> tuple[float, float, float]:
    """(load wall s, load CPU s, whole start wall s) for one engine start."""
    timings: list[float] = []

    class Timed(SimulatedGPUHost):
        def _build_images(self) -> None:
            wall, cpu = time.perf_counter(), _cpu_seconds()
            load(self)
            timings.extend([time.perf_counter() - wall, _cpu_seconds() - cpu])

    start = time.perf_counter()
    host = Timed(topology("h100-sxm-8")).start()
    whole = time.perf_counter() - start
    try:
        client = host.client()
        try:
            for tag, _, _ in _IMAGES:
                client.images.get(tag)  # every image is there, whichever way
        finally:
            client.close()
    finally:
        host.stop()
    return timings[0], timings[1], whole


def main() -> int:
    reason = SimulatedGPUHost.unavailable()
    if reason is not None:
        print(f"cannot start the simulated engine here: {reason}", file=sys.stderr)
        return 1
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    ways = {"one archive (gpuroute)": _one_archive, "four imports (alternative)": _four_imports}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, load in ways.items():
            samples[name].append(_measure(load))
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{rounds} rounds, medians")  # fmt: skip
    print(f"{'':28}{'load wall s':>12}{'load CPU s':>12}{'start wall s':>14}")
    medians = {}
    for name, rows in samples.items():
        medians[name] = tuple(statistics.median(r[i] for r in rows) for i in range(3))
        wall, cpu, whole = medians[name]
        print(f"{name:28}{wall:12.2f}{cpu:12.2f}{whole:14.2f}")
    ours, theirs = medians["one archive (gpuroute)"], medians["four imports (alternative)"]
    print(
        f"ratio (one archive / four imports): load wall {ours[0] / theirs[0]:.2f}x, "
        f"load CPU {ours[1] / theirs[1]:.2f}x, whole start {ours[2] / theirs[2]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
