"""Launch overhead: ``host.launch(...).wait()`` and ``gpuroute.launch(...).wait()`` against
the same container started through plain docker-py, on the same engine (the simulated GPU
host's private engine).

Run as root with Debian's docker.io and busybox-static: ``python benchmarks/bench_launch.py``.
Every series runs ``true`` in ``gpuroute-sim:latest`` on host GPUs 3 and 1 (the stand-in
toolkit hook runs for all), waits for it to exit and removes it. The series alternate, after
two warm-up rounds; the figure is the median wall time of each, and the ratio of its median to
plain docker-py's.

* ``gpuroute.Host``: an orchestrator's kept host, with its own connection to the engine, kept
  open between launches (target: at most 1.01).
* ``gpuroute.launch(..., docker_client=client)``: the same client as plain docker-py, so the
  ratio is what gpuroute adds: resolving the spec, building the request, its checks, labels
  and clean-up (target: at most 1.03).
* ``gpuroute.launch(..., docker_host=...)``: the module-level door opening its own connection,
  which the default host keeps between launches.
"""

from __future__ import annotations

import argparse
import functools
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import docker
from docker.types import DeviceRequest

import gpuroute
from gpuroute.backends.docker import DockerWork
from gpuroute.testing import topology
from gpuroute.testing.engine import IMAGE, SimulatedGPUHost

TARGET = 1.03
HOST_TARGET = 1.01


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

        kept = gpuroute.Host(inventory=inventory, context=context, docker_host=host.base_url)
        work = DockerWork(command=("true",), image=IMAGE, docker_kwargs={"network_mode": "none"})

        def hosted() -> None:
            with kept.launch(work, gpus="3,1") as run:
                run.wait()

        sides = (
            ("docker-py", plain),
            ("gpuroute.Host", hosted),
            ("gpuroute", functools.partial(routed, docker_client=client)),
            ("gpuroute, own connection", functools.partial(routed, docker_host=host.base_url)),
        )
        times: dict[str, list[float]] = {label: [] for label, _ in sides}
        cpu: dict[str, list[float]] = {label: [] for label, _ in sides}
        for i in range(args.runs + 2):
            # each series takes each place in the round in turn
            for label, fn in sides[i % len(sides) :] + sides[: i % len(sides)]:
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                if i >= 2:
                    times[label].append(time.perf_counter() - start)
                    cpu[label].append(time.process_time() - start_cpu)
        sent_by = {label: _engine_requests(fn) for label, fn in sides}
        kept.close()
        client.close()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    # the ratio of the medians, and the median of each round's own ratio
    ratios = {
        k: (med[k] / med["docker-py"], _paired(times[k], times["docker-py"]))
        for k in times
        if k != "docker-py"
    }
    hosted_ratio = ratios["gpuroute.Host"][0]
    ratio = ratios["gpuroute"][0]
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}; "
        f"{args.runs} runs each, interleaved\n"
    )
    print(
        "  series                    wall median (quartiles)          "
        "CPU here, median   engine requests"
    )
    for label, values in times.items():
        q = statistics.quantiles([v * 1000 for v in values], n=4)
        print(
            f"  {label:<25} {med[label]:7.1f} ms ({q[0]:6.1f} - {q[2]:6.1f})   "
            f"{statistics.median(cpu[label]) * 1000:7.2f} ms        {len(sent_by[label])}"
        )
    print("\n  ratio to docker-py                    of medians   median per round   target")
    described = {
        "gpuroute.Host": ("gpuroute.Host, own kept connection", f"<= {HOST_TARGET}"),
        "gpuroute": ("gpuroute.launch, same client", f"<= {TARGET}"),
        "gpuroute, own connection": ("gpuroute.launch, own connection", ""),
    }
    for key, (label, target) in described.items():
        of_medians, per_round = ratios[key]
        print(f"  {label:<38} {of_medians:6.3f}       {per_round:6.3f}         {target}")
    extra = statistics.median(cpu["gpuroute.Host"]) - statistics.median(cpu["docker-py"])
    print(
        f"\n  CPU a Host launch spends here beyond plain docker-py's: {extra * 1000:.2f} ms, "
        f"{extra * 1000 / med['docker-py']:.2%} of docker-py's wall median"
    )
    for label, sent in sent_by.items():
        print(f"  {label:<25} {', '.join(sent)}")
    return 0 if hosted_ratio <= HOST_TARGET and ratio <= TARGET else 1


def _engine_requests(fn: Callable[[], None]) -> list[str]:
    """The HTTP requests one call of ``fn`` sends to the engine (method and path)."""
    import requests

    sent: list[str] = []
    original = requests.Session.send

    def send(session: Any, request: Any, **kwargs: Any) -> Any:
        path = re.sub(r"/v[0-9.]+/", "/", request.path_url.split("?")[0])
        sent.append(f"{request.method} {re.sub(r'[0-9a-f]{64}', '<id>', path)}")
        return original(session, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign,assignment]
    try:
        fn()
    finally:
        requests.Session.send = original  # type: ignore[method-assign]
    return sent


def _paired(values: list[float], baseline: list[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, baseline, strict=True))


if __name__ == "__main__":
    sys.exit(main())
