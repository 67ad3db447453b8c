"""Benchmarks on the built-in simulated GPU host (``--simulate NAME``).

``SimulatedBenchHost`` is the session object of every ``--simulate`` command,
``gpuroute.testing.simhost.SimulatedHost`` (the topology's inventory, a FakeNVML whose energy
counters follow the clock, each GPU drawing a steady 75 W unless told otherwise, a lease
directory of its own, and a private engine started on first use), with what a benchmark run
needs from it: its options, and for a container the stand-in vLLM and TensorRT-LLM images.
Everything else runs for real.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from gpuroute.bench.runners.common import RunOptions
from gpuroute.bench.runners.registry import load_runner
from gpuroute.testing.simhost import SimulatedHost

__all__ = ["SIMULATED_NODE_ENV", "SimulatedBenchHost", "check_topology", "simulated_node"]


def check_topology(name: str) -> None:
    """Raise one clear error, naming the known ones, where ``name`` is no built-in simulated
    host: before any other check or work."""
    from gpuroute.testing import topology_path

    topology_path(name)


class SimulatedBenchHost(SimulatedHost):
    def apply(self, options: RunOptions, runner: str) -> RunOptions:
        """``options`` for a run of ``runner`` here: this host's inventory, NVML and lease
        directory, and for a container its private engine (started on first use) with the
        stand-in image, no network, and the limits it can grant. What ``options`` sets
        itself (an image, a lease directory, Docker arguments) is kept."""
        docker: dict[str, Any] = {}
        docker_host = None
        image = options.image
        if options.execution == "container":
            docker_host = self.docker_host
            image = image or self.images.get(runner)
            # The private engine runs unprivileged: it may not grant all a runner asks for.
            docker = {"network_mode": "none", **load_runner(runner).unprivileged_docker_kwargs}
        return replace(
            options,
            inventory=self.inventory,
            nvml=self.nvml,
            simulated_host=self.name,
            docker_host=docker_host,
            docker_kwargs={**docker, **options.docker_kwargs},
            image=image,
            lease_dir=options.lease_dir or self.lease_dir,
        )


SIMULATED_NODE_ENV = "GPUROUTE_SIMULATED_NODE"
"""Set (to the topology's name) in the environment of a Ray node that is a simulated host
(``gpuroute.testing.ray_cluster``): its ``GPUROUTE_INVENTORY`` is a snapshot and its
``DOCKER_HOST`` a private engine with the stand-in images."""


def simulated_node(options: RunOptions, runner: str, name: str) -> RunOptions:
    """``options`` for a run of ``runner`` on a simulated Ray node (this process's
    environment names its snapshot, lease directory and engine): the node's inventory, a
    FakeNVML of it for energy, its engine's stand-in images, no network."""
    from gpuroute.host import default_host
    from gpuroute.testing import FakeNVML
    from gpuroute.testing.engine import STAND_IN_IMAGES

    inventory = default_host().inventory
    docker: dict[str, Any] = {}
    if options.execution == "container":
        docker = {"network_mode": "none", **load_runner(runner).unprivileged_docker_kwargs}
    return replace(
        options,
        inventory=inventory,
        nvml=FakeNVML(inventory, clock=time.time, energy_update_s=0.02),
        simulated_host=name,
        docker_kwargs={**docker, **options.docker_kwargs},
        image=options.image or STAND_IN_IMAGES.get(runner),
    )
