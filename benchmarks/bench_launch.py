"""Launch overhead: ``gpuroute.launch(...).wait()`` against the same container started
through plain docker-py, on the same engine (the simulated GPU host's private engine).

Run as root with Debian's docker.io and busybox-static: ``python benchmarks/bench_launch.py``.
Both sides run ``true`` in ``gpuroute-sim:latest`` on host GPUs 3 and 1 (the stand-in
toolkit hook runs for both), wait for it to exit and remove it. They alternate, after two
warm-up rounds; the figure is the median wall time of each, and the ratio of the medians
(target: at most 1.03).

Both sides share one docker-py client (``launch(..., docker_client=client)``), so the ratio is
what gpuroute adds: resolving the spec, building the request, its checks, labels and clean-up.
A third series lets gpuroute open its own connection per launch (the default), which adds the
client's API-version request.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from typing import Any

import docker
from docker.types import DeviceRequest

import gpuroute
from gpuroute.testing import topology
from gpuroute.testing.engine import IMAGE, SimulatedGPUHost

TARGET = 1.03


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    reason = SimulatedGPUHost.unavailable()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    inventory = topology("h100-sxm-8")
    context = gpuroute.CallerContext()
    uuids = [inventory.gpus[3].uuid, inventory.gpus[1].uuid]
    with SimulatedGPUHost(inventory) as host:
        client = docker.DockerClient(base_url=host.base_url)

        def plain() -> None:
            container = client.containers.create(
                IMAGE,
                ["true"],
                network_mode="none",
                device_requests=[
                    DeviceRequest(
                        driver="nvidia",
                        device_ids=uuids,
                        capabilities=[["gpu", "compute", "utility"]],
                    )
                ],
                environment={
                    "NVIDIA_VISIBLE_DEVICES": ",".join(uuids),
                    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                    "CUDA_VISIBLE_DEVICES": "1,0",
                    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                },
            )
            container.start()
            container.wait()
            container.remove(force=True)

        def routed(**engine: Any) -> None:
            with gpuroute.launch(
                ["true"],
                gpus="3,1",
                image=IMAGE,
                inventory=inventory,
                context=context,
                docker_kwargs={"network_mode": "none"},
                **engine,
            ) as run:
                run.wait()

        sides = (
            ("docker-py", plain),
            ("gpuroute", functools.partial(routed, docker_client=client)),
            ("gpuroute, own connection", functools.partial(routed, docker_host=host.base_url)),
        )
        times: dict[str, list[float]] = {label: [] for label, _ in sides}
        for i in range(args.runs + 2):
            for label, fn in sides:
                start = time.perf_counter()
                fn()
                if i >= 2:
                    times[label].append(time.perf_counter() - start)
        client.close()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratio = med["gpuroute"] / med["docker-py"]
    own = med["gpuroute, own connection"] / med["docker-py"]
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}; "
        f"{args.runs} runs each, interleaved\n"
    )
    for label, values in times.items():
        q = statistics.quantiles([v * 1000 for v in values], n=4)
        print(f"  {label:<25} median {med[label]:7.1f} ms   (quartiles {q[0]:.1f} - {q[2]:.1f})")
    print(f"\n  ratio gpuroute / docker-py, same client:  {ratio:.3f}   (target <= {TARGET})")
    print(f"  ratio with gpuroute opening its own connection: {own:.3f}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
