"""Shared by the examples: the GPU host to run on.

On a machine with an NVIDIA driver: this host's GPUs and its Docker engine, with the image
you name. Without one: the built-in simulated host, a private Docker Engine with a stand-in
NVIDIA toolkit (needs root and Debian's docker.io, docker-compose and busybox-static).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import gpuroute
from gpuroute.testing import topology
from gpuroute.testing.engine import IMAGE, SimulatedGPUHost


@dataclass
class Host:
    inventory: gpuroute.Inventory
    docker_host: str | None  # None: the engine DOCKER_HOST names
    image: str
    simulated: bool


@contextlib.contextmanager
def gpu_host(image: str | None = None, simulate: str = "h100-sxm-8") -> Iterator[Host]:
    try:
        inventory = gpuroute.default_inventory()
    except gpuroute.NVMLError:
        reason = SimulatedGPUHost.unavailable()
        if reason is not None:
            sys.exit(f"no NVIDIA driver here, and the simulated host cannot run: {reason}")
        print(f"(no NVIDIA driver here: using the simulated host {simulate!r})\n")
        with SimulatedGPUHost(topology(simulate)) as host:
            yield Host(host.inventory, host.base_url, IMAGE, simulated=True)
        return
    if image is None:
        sys.exit("on a GPU host, name an image that has nvidia-smi (utility capability)")
    yield Host(inventory, None, image, simulated=False)
