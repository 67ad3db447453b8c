"""The whole simulated GPU host, as one session object: what ``--simulate TOPOLOGY`` means on
every ``gpuroute`` command and in benchmarks and campaigns.

``SimulatedHost(name)`` carries the topology's inventory, a ``FakeNVML`` of it whose energy
counters follow the clock, a lease directory of its own (the simulated GPUs are not this
machine's, so their leases are not either), and, started on first use only (by ``engine``,
``docker_host`` or ``start_engine()``), a private Docker Engine with the stand-in NVIDIA
toolkit (``gpuroute.testing.engine.SimulatedGPUHost``) and its stand-in images. ``close()``
(or leaving the ``with`` block) stops that engine and deletes every file the session wrote.

    with SimulatedHost("h100-sxm-8") as sim:
        handle = gpuroute.launch(["nvidia-smi", "-L"], gpus="3,1", image=sim.image,
                                 **sim.launch_kwargs(container=True))
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuroute.core.closing import Closing
from gpuroute.core.inventory import Inventory
from gpuroute.errors import GpurouteError
from gpuroute.testing import TOPOLOGIES, topology

if TYPE_CHECKING:
    from gpuroute.testing.engine import SimulatedGPUHost
    from gpuroute.testing.fake_nvml import FakeNVML

__all__ = ["SimulatedHost", "SimulatedHostError"]


class SimulatedHostError(GpurouteError):
    """The simulated host cannot be used as asked: an unknown topology, or a private engine
    that cannot run on this machine."""


class SimulatedHost(Closing):
    """A built-in simulated GPU host for one session (a command, a benchmark, a campaign).

    ``lease_root`` keeps the lease directory (``lease_root/leases``) in a directory of the
    caller's, which ``close()`` leaves in place; by default it lies in a fresh temporary
    directory that ``close()`` removes. Thread-safe: campaign runs ask from several threads.
    """

    def __init__(self, name: str, *, lease_root: str | Path | None = None) -> None:
        if name not in TOPOLOGIES:
            raise SimulatedHostError(
                f"no simulated topology named {name!r}; choose one of: {', '.join(TOPOLOGIES)}"
            )
        self.name = name
        self.inventory: Inventory = topology(name)
        self._nvml: FakeNVML | None = None
        self._own_root = lease_root is None
        self.root = (
            Path(lease_root)
            if lease_root is not None
            else Path(tempfile.mkdtemp(prefix="gpuroute-sim-"))
        )
        leases = self.root / "leases"
        leases.mkdir(parents=True, exist_ok=True)
        leases.chmod(0o1777)
        self.lease_dir = str(leases)
        self._engine: SimulatedGPUHost | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def nvml(self) -> FakeNVML:
        """The host's FakeNVML (energy counters following the clock), made on first use:
        a command that only plans never loads pynvml."""
        with self._lock:
            if self._nvml is None:
                from gpuroute.testing.fake_nvml import FakeNVML

                self._nvml = FakeNVML(self.inventory, clock=time.time, energy_update_s=0.02)
            return self._nvml

    # -- the private engine, started on first use ----------------------------------------

    @property
    def engine_started(self) -> bool:
        return self._engine is not None

    def start_engine(self) -> SimulatedGPUHost:
        """The private Docker Engine with the stand-in NVIDIA toolkit, simulating this
        topology; started (with its stand-in images) on the first call."""
        from gpuroute.testing.engine import SimulatedGPUHost

        with self._lock:
            if self._closed:
                raise SimulatedHostError(f"the simulated host {self.name!r} is closed")
            if self._engine is None:
                reason = SimulatedGPUHost.unavailable()
                if reason is not None:
                    raise SimulatedHostError(
                        f"the simulated host {self.name!r} needs a private Docker Engine for "
                        f"containers, and {reason}"
                    )
                self._engine = SimulatedGPUHost(self.inventory).start()
            return self._engine

    @property
    def engine(self) -> SimulatedGPUHost:
        return self.start_engine()

    @property
    def docker_host(self) -> str:
        """The private engine's address (``unix://…``); starts it."""
        return self.start_engine().base_url

    @property
    def image(self) -> str:
        """The stand-in image: busybox with ``nvidia-smi -L`` and ``cuda-devices``."""
        from gpuroute.testing.engine import IMAGE

        return IMAGE

    @property
    def images(self) -> dict[str, str]:
        """The stand-in image of each benchmark runner that has one, by runner name."""
        from gpuroute.testing.engine import STAND_IN_IMAGES

        return dict(STAND_IN_IMAGES)

    def launch_kwargs(self, *, container: bool = False) -> dict[str, Any]:
        """Keyword arguments of ``gpuroute.launch`` for work on this host: its inventory,
        NVML and lease directory, and with ``container`` its private engine (started now)."""
        kwargs: dict[str, Any] = {
            "inventory": self.inventory,
            "nvml": self.nvml,
            "lease_dir": self.lease_dir,
        }
        if container:
            kwargs["docker_host"] = self.docker_host
        return kwargs

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the private engine (removing its containers and files) and delete the lease
        directory this session made. Safe to call more than once."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
        try:
            if engine is not None:
                engine.stop()
        finally:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)
