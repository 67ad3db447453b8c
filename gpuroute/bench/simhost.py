"""Benchmarks on the built-in simulated GPU host (``--simulate NAME``).

``SimulatedBenchHost`` is the session object of every ``--simulate`` command,
``gpuroute.testing.simhost.SimulatedHost`` (the topology's inventory, a FakeNVML whose energy
counters follow the clock, each GPU drawing a steady 75 W unless told otherwise, a lease
directory of its own, and a private engine started on first use), with what a benchmark run
needs from it: its options, and for a container the stand-in vLLM and TensorRT-LLM images.
Everything else runs for real.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gpuroute.bench.runners.common import RunOptions
from gpuroute.bench.runners.registry import load_runner
from gpuroute.testing.simhost import SimulatedHost

__all__ = ["SimulatedBenchHost", "check_topology"]


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
