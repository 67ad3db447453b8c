"""Benchmarks on the built-in simulated GPU host (``--simulate NAME``).

The topology's inventory, a FakeNVML whose energy counters follow the clock (each GPU draws
a steady 75 W unless told otherwise), a lease directory of its own (the simulated GPUs are
not this machine's), and, for containers, a private engine whose images stand in for the
vLLM and TensorRT-LLM images. Everything else runs for real.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpuroute.bench.runners.common import RunOptions
from gpuroute.bench.runners.registry import load_runner

__all__ = ["SIMULATED_NODE_ENV", "SimulatedBenchHost", "simulated_node"]


class SimulatedBenchHost:
    def __init__(self, name: str, *, lease_root: Path | None = None) -> None:
        from gpuroute.testing import FakeNVML, topology

        self.name = name
        self.inventory = topology(name)
        self.nvml = FakeNVML(self.inventory, clock=time.time, energy_update_s=0.02)
        self._own_root = lease_root is None
        root = (
            lease_root if lease_root is not None else Path(tempfile.mkdtemp(prefix="gpuroute-sim-"))
        )
        self.root = root
        leases = root / "leases"
        leases.mkdir(parents=True, exist_ok=True)
        leases.chmod(0o1777)
        self.lease_dir = str(leases)
        self.engine: Any = None
        self._lock = threading.Lock()
        self.docker_host: str | None = None
        self.images: dict[str, str] = {}

    def apply(self, options: RunOptions, runner: str) -> RunOptions:
        """``options`` for a run of ``runner`` here: this host's inventory, NVML and lease
        directory, and for a container its private engine (started on first use) with the
        stand-in image, no network, and the limits it can grant. What ``options`` sets
        itself (an image, a lease directory, Docker arguments) is kept."""
        docker: dict[str, Any] = {}
        if options.execution == "container":
            self._start_engine()
            # The private engine runs unprivileged: it may not grant all a runner asks for.
            docker = {"network_mode": "none", **load_runner(runner).unprivileged_docker_kwargs}
        return replace(
            options,
            inventory=self.inventory,
            nvml=self.nvml,
            simulated_host=self.name,
            docker_host=self.docker_host,
            docker_kwargs={**docker, **options.docker_kwargs},
            image=options.image or self.images.get(runner),
            lease_dir=options.lease_dir or self.lease_dir,
        )

    def _start_engine(self) -> None:
        from gpuroute.testing.engine import STAND_IN_IMAGES, SimulatedGPUHost

        with self._lock:  # campaign runs ask from several threads
            if self.engine is None:
                self.engine = SimulatedGPUHost(self.inventory).start()
                self.docker_host = self.engine.base_url
                self.images = dict(STAND_IN_IMAGES)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


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
