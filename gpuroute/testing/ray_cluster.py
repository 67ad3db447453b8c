"""A real Ray cluster of simulated GPU hosts on this machine, for tests and examples.

``LocalRayCluster(nodes)`` starts one Ray node per ``RayNodeSpec`` (the first is the head),
each with a host of its own set in its environment before ``ray start``: its own private
Docker Engine (``SimulatedGPUHost``, as ``DOCKER_HOST``), its own inventory snapshot
(``GPUROUTE_INVENTORY``) and its own lease directory (``GPUROUTE_LEASE_DIR``). Each node is
started with the resources ``gpuroute ray resources`` prints for its topology (or the GPUs a
spec's ``cuda_visible_devices`` names), on ports of its own and under a temporary directory
of its own, so that it cannot clash with another Ray on the machine.

``stop()`` (or leaving the ``with`` block) ends exactly the processes it started: each node's
process group, then any process still naming its temporary directory; never ``ray stop``,
which would end every Ray of this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuroute.core.closing import Closing
from gpuroute.core.inventory import Inventory
from gpuroute.testing import topology as builtin_topology
from gpuroute.testing.engine import SimulatedGPUHost

__all__ = ["DEFAULT_NODES", "LocalRayCluster", "RayClusterError", "RayNode", "RayNodeSpec"]


class RayClusterError(RuntimeError):
    """The local Ray cluster did not come up; the message carries the end of its logs."""


@dataclass(frozen=True)
class RayNodeSpec:
    """One node: a topology (a built-in name or an Inventory), and the
    ``CUDA_VISIBLE_DEVICES`` to start it with (default: as ``gpuroute ray resources`` says)
    with ``num_gpus`` GPUs (default: as many as the mask names, else the whole GPUs)."""

    topology: str | Inventory
    cuda_visible_devices: str | None = None
    num_gpus: int | None = None

    def inventory(self) -> Inventory:
        if isinstance(self.topology, Inventory):
            return self.topology
        return builtin_topology(self.topology)


DEFAULT_NODES = (
    RayNodeSpec("h100-sxm-8", cuda_visible_devices="4,5,6,7"),
    RayNodeSpec("a100-mig-4"),
)
"""A head of 4 H100s (the last four of eight: Ray's ids are the node's mask entries) and a
worker with 2 whole A100s and MIG devices."""


@dataclass
class RayNode:
    """A started node: its spec, engine, snapshot, lease directory and environment."""

    spec: RayNodeSpec
    engine: SimulatedGPUHost
    inventory: Inventory
    root: Path
    env: dict[str, str]
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    node_id: str | None = None

    @property
    def lease_dir(self) -> Path:
        return self.root / "leases"

    @property
    def snapshot(self) -> Path:
        return self.root / "inventory.json"

    @property
    def log(self) -> str:
        path = self.root / "ray-start.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _processes() -> list[tuple[int, bytes, bytes]]:
    """Every other process of this machine that can be read: its pid, command line and
    environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            found.append(
                (
                    int(entry.name),
                    (entry / "cmdline").read_bytes(),
                    (entry / "environ").read_bytes(),
                )
            )
        except OSError:
            continue
    return found


def _ray_command() -> list[str]:
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ray")
    if found is None:
        raise RayClusterError("the `ray` command is not installed: pip install 'gpuroute[ray]'")
    return [found]


class LocalRayCluster(Closing):
    """A head node and more on this machine, each a simulated GPU host (see the module)."""

    def __init__(
        self,
        nodes: Sequence[RayNodeSpec] = DEFAULT_NODES,
        *,
        cpus_per_node: int = 1,
        start_timeout: float = 120.0,
    ) -> None:
        self.specs = tuple(nodes)
        self.cpus_per_node = cpus_per_node
        self.start_timeout = start_timeout
        self.nodes: list[RayNode] = []
        self.root: Path | None = None
        self.port = 0

    @staticmethod
    def unavailable() -> str | None:
        """Why the cluster cannot run here, or None if it can."""
        reason = SimulatedGPUHost.unavailable()
        if reason is not None:
            return reason
        try:
            import ray  # noqa: F401
        except ImportError:
            return "Ray is not installed: pip install 'gpuroute[ray]'"
        return None

    @property
    def address(self) -> str:
        """The head node's address, for ``ray.init(address=...)`` or ``RAY_ADDRESS``."""
        return f"127.0.0.1:{self.port}"

    @property
    def temp_dir(self) -> Path:
        assert self.root is not None, "the cluster is not started"
        return self.root / "ray"

    def start(self) -> LocalRayCluster:
        """Start every node and connect this process; once more if the first try fails (a
        busy machine can make Ray's own start-up deadlines pass). Clusters of this user start
        one at a time on this machine (parallel test workers each start one)."""
        lock = Path(tempfile.gettempdir()) / f"gpuroute-ray-start-{os.getuid()}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return self._start()
            except RayClusterError:
                return self._start()
        finally:
            os.close(fd)  # releases the lock

    def _start(self) -> LocalRayCluster:
        from gpuroute.ray.resources import node_resources

        # Short: Ray's socket paths live below it and must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="grray-", dir="/tmp"))
        self.port = _free_port()
        try:
            package_parent = str(Path(__file__).resolve().parents[2])
            for number, spec in enumerate(self.specs):
                inventory = spec.inventory()
                root = self.root / f"node{number}"
                (root / "leases").mkdir(parents=True)
                (root / "leases").chmod(0o755)
                inventory.save(root / "inventory.json")
                engine = SimulatedGPUHost(inventory).start()
                resources = node_resources(inventory)
                mask = spec.cuda_visible_devices or resources.cuda_visible_devices
                gpus = spec.num_gpus
                if gpus is None:
                    gpus = len(mask.split(",")) if mask else resources.num_gpus
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("CUDA_", "NVIDIA_", "GPUROUTE_", "RAY_"))
                }
                inherited = env.get("PYTHONPATH")
                env.update(
                    {
                        "GPUROUTE_INVENTORY": str(root / "inventory.json"),
                        "GPUROUTE_LEASE_DIR": str(root / "leases"),
                        "DOCKER_HOST": engine.base_url,
                        "PYTHONPATH": os.pathsep.join(
                            [package_parent, *([inherited] if inherited else [])]
                        ),
                        "RAY_USAGE_STATS_ENABLED": "0",
                        # the node is a simulated host (gpuroute.bench.simhost reads it)
                        "GPUROUTE_SIMULATED_NODE": spec.topology
                        if isinstance(spec.topology, str)
                        else "simulated",
                        # a node lost is known within seconds, not Ray's default ~30 s
                        # (and a busy machine's slow answer is not taken for a lost node)
                        "RAY_health_check_initial_delay_ms": "1000",
                        "RAY_health_check_period_ms": "1000",
                        "RAY_health_check_timeout_ms": "3000",
                        "RAY_health_check_failure_threshold": "5",
                        # Keep a worker process per GPU between tasks, as a server with more
                        # CPUs than GPUs does by default (Ray keeps as many idle workers as
                        # the node has CPUs, and this node is given one): a task then starts
                        # in a warm worker, not a new process.
                        "RAY_num_workers_soft_limit": str(max(gpus, self.cpus_per_node)),
                    }
                )
                if mask is not None:
                    env["CUDA_VISIBLE_DEVICES"] = mask
                argv = [
                    *_ray_command(),
                    "start",
                    "--block",
                    f"--num-cpus={self.cpus_per_node}",
                    f"--num-gpus={gpus}",
                    f"--ray-client-server-port={_free_port()}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    "--disable-usage-stats",
                    # loopback only: the cluster never depends on, or listens on, the network
                    "--node-ip-address=127.0.0.1",
                ]
                if resources.resources:
                    argv += ["--resources", resources.argv()[-1]]
                if number == 0:
                    argv += [
                        "--head",
                        f"--port={self.port}",
                        "--include-dashboard=false",
                        f"--temp-dir={self.temp_dir}",
                    ]
                else:
                    argv += [f"--address={self.address}"]
                node = RayNode(spec, engine, inventory, root, env, argv)
                self.nodes.append(node)
                self._start_node(node)
                if number == 0:
                    self._wait_for_port()
            self._wait_for_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, node: RayNode) -> None:
        with open(node.root / "ray-start.log", "ab") as log:
            node.process = subprocess.Popen(
                node.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=node.env,
                start_new_session=True,
            )

    def _logs(self) -> str:
        return "\n".join(f"-- node {i}:\n{n.log[-2000:]}" for i, n in enumerate(self.nodes))

    def _check_running(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                raise RayClusterError(f"a Ray node exited at start-up:\n{self._logs()}")

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_running()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.2)
        raise RayClusterError(f"the head node did not listen in time:\n{self._logs()}")

    def _wait_for_nodes(self) -> None:
        """Connect this process to the cluster and wait until every node is alive."""
        from gpuroute.ray.runtime import connect

        ray = connect(self.address)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_running()
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) == len(self.nodes):
                self._name_nodes(alive)
                return
            time.sleep(0.3)
        raise RayClusterError(f"not every Ray node joined in time:\n{self._logs()}")

    def _name_nodes(self, alive: list[dict[str, Any]]) -> None:
        """Tell the nodes apart by what they offer (the head is the one Ray marks so)."""
        for node_info in alive:
            resources = node_info.get("Resources", {})
            is_head = any(k.startswith("node:__internal_head__") for k in resources)
            index = 0 if is_head else 1 + sum(1 for n in self.nodes[1:] if n.node_id)
            if index < len(self.nodes):
                self.nodes[index].node_id = str(node_info["NodeID"])

    def kill_node(self, index: int) -> None:
        """Lose node ``index`` as a machine is lost: SIGKILL its raylet, then everything
        else the node started (its workers, its ``ray start``); its engine, snapshot and
        lease directory stay, as a server's disk and containers would. The head cannot be
        killed (the cluster would be gone)."""
        if index <= 0 or index >= len(self.nodes):
            raise ValueError(f"node {index}: only a worker node (1..{len(self.nodes) - 1})")
        node = self.nodes[index]
        marker = f"GPUROUTE_LEASE_DIR={node.lease_dir}\0".encode()
        raylets = [p for p, cmd, env in _processes() if marker in env and b"raylet" in cmd]
        for pid in raylets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=30)
        for pid, _, env in _processes():
            if marker in env:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        node.process = None
        node.node_id = None

    def restart_node(self, index: int) -> None:
        """Start a killed worker node again (a new Ray node id, the same host) and wait
        until it has joined."""
        from gpuroute.ray.runtime import connect

        node = self.nodes[index]
        if node.process is not None:
            raise ValueError(f"node {index} is running")
        ray = connect(self.address)
        known = {n.node_id for n in self.nodes if n.node_id}
        self._start_node(node)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_running()
            fresh = [
                str(n["NodeID"]) for n in ray.nodes() if n.get("Alive") and n["NodeID"] not in known
            ]
            if fresh:
                node.node_id = fresh[0]
                return
            time.sleep(0.3)
        raise RayClusterError(f"node {index} did not join again in time:\n{self._logs()}")

    def node(self, node_id: str) -> RayNode:
        """The started node with this Ray node id."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def stop(self) -> None:
        """End every process this cluster started and its engines; delete what it wrote."""
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
        # SIGKILL, not SIGTERM: the cluster and all it wrote are thrown away, and a graceful
        # `ray start --block` takes some 20 s per node to end.
        for node in reversed(self.nodes):
            process = node.process
            if process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):  # swept up below
                    process.wait(timeout=30)
        if self.root is not None:
            self._kill_stragglers(str(self.root))
        for node in self.nodes:
            node.engine.stop()
        self.nodes = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    @staticmethod
    def _kill_stragglers(marker: str) -> None:
        """SIGKILL any process left whose command line or environment names this cluster's
        directory (every node's environment does)."""
        me = os.getpid()
        for _ in range(2):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                try:
                    # its command line, or the environment the node gave it
                    seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
                except OSError:
                    continue
                if marker.encode() in seen:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(entry.name), signal.SIGKILL)
            time.sleep(0.2)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def close(self) -> None:
        """Stop (as leaving a ``with`` block does)."""
        self.stop()
