"""The Ray backend: work started from a driver, on whichever node of a Ray cluster has the
GPUs, routed and leased on that node.

``launch(work, gpus=2)`` checks that some node can ever hold the request (refused before
submission otherwise, naming the largest node), then creates a Ray actor asking for
``num_gpus=2`` (or one unit of a MIG profile's resource). On its node the actor routes what
Ray gave it (``gpuroute.ray.here``: a lease on the node), starts the work there through the
node's own backend (a container on the node's engine, pinned to exactly those GPUs) and
answers ``wait``, ``logs`` and ``stop``. The driver holds a ``RayLaunch``: closing it stops
the work, releases the lease and ends the actor.

Leases held by Ray work name the holder backend ``ray``; ``RayBackend.alive`` judges them by
the worker process that stands for the task on the node.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gpuroute.backends import Backend, Bind, Connection, Launch, Work
from gpuroute.backends.local import process_alive
from gpuroute.core.plan import RoutingPlan
from gpuroute.errors import LaunchError, LaunchTimeout
from gpuroute.ray.resources import mig_resource
from gpuroute.ray.runtime import RayError, connect
from gpuroute.ray.task import Placement, here
from gpuroute.records import Holder

__all__ = ["NodeRunner", "RayBackend", "RayLaunch", "check_fits", "launch"]


class NodeRunner:
    """The actor that runs one piece of work on its node (created by ``launch``)."""

    def __init__(self, work: Work, wait_s: float, ttl_s: float | None) -> None:
        self.placement: Placement = here(wait_s=wait_s, ttl_s=ttl_s)
        try:
            self.handle = self.placement.launch(work)
        except BaseException:
            self.placement.release()
            raise

    def describe(self) -> tuple[RoutingPlan, str, str, list[str]]:
        """The plan, the node id, the work's id on the node, and the launch's notes."""
        return self.placement.plan, self.placement.node, self.handle.id, self.handle.notes

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None while the work still runs after ``timeout`` seconds."""
        try:
            return self.handle.wait(timeout)
        except LaunchTimeout:
            return None

    def logs(self) -> str:
        return self.handle.logs()

    def stop(self, timeout: float) -> None:
        self.handle.stop(timeout)

    def close(self) -> None:
        try:
            self.handle.close()
        finally:
            self.placement.release()


def _nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _describe_node(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node {str(node.get('NodeID', '?'))[:12]})"


def check_fits(ray: Any, *, gpus: int = 0, mig_profile: str | None = None) -> None:
    """Refuse, before anything is submitted, a request that no live node of the cluster can
    ever hold, naming the largest node."""
    resource = "GPU" if mig_profile is None else mig_resource(mig_profile)
    wanted = gpus if mig_profile is None else max(gpus, 1)
    nodes = _nodes(ray)
    if not nodes:
        raise RayError("the Ray cluster has no live node")
    largest = max(nodes, key=lambda n: float(n.get("Resources", {}).get(resource, 0)))
    most = float(largest.get("Resources", {}).get(resource, 0))
    if wanted > most:
        what = "GPU(s)" if mig_profile is None else f"MIG device(s) of profile {mig_profile}"
        raise RayError(
            f"no node of the Ray cluster has {wanted} {what}: the largest, "
            f"{_describe_node(largest)}, has {most:g} ({resource}). Ask for at most {most:g}, "
            "or add a node with more (`gpuroute ray resources` prints a node's)"
        )


class RayLaunch(Launch):
    """A handle, on the driver, on work that runs on a node of the Ray cluster."""

    kind = "ray"

    def __init__(
        self, actor: Any, ray: Any, plan: RoutingPlan, node: str, work_id: str, notes: list[str]
    ) -> None:
        super().__init__(plan, notes)
        self.actor = actor
        self.node = node
        """The Ray node id the work runs on."""
        self.work_id = work_id
        """The work's own id on its node (a container id, a pid)."""
        self._ray = ray

    @property
    def id(self) -> str:
        return str(self.actor._actor_id.hex())

    def wait(self, timeout: float | None = None) -> int:
        code = self._ray.get(self.actor.wait.remote(timeout))
        if code is None:
            raise LaunchTimeout(
                f"work {self.work_id[:12]} on Ray node {self.node[:12]} still runs after "
                f"{timeout:g}s"
            )
        return int(code)

    def logs(self) -> str:
        return str(self._ray.get(self.actor.logs.remote()))

    def stop(self, timeout: float = 10.0) -> None:
        self._ray.get(self.actor.stop.remote(timeout))

    def close(self) -> None:
        """Stop the work, remove it, release its lease on the node and end the actor (unless
        detached: then the actor and the work go on)."""
        if self._closed:
            return
        self._closed = True
        if self._detached:
            return
        try:
            self._ray.get(self.actor.close.remote())
        finally:
            self._ray.kill(self.actor)


def launch(
    work: Work,
    *,
    gpus: int = 1,
    mig_profile: str | None = None,
    address: str | None = None,
    wait_s: float = 0.0,
    ttl_s: float | None = None,
    start_timeout_s: float | None = None,
) -> RayLaunch:
    """Run ``work`` (a ``DockerWork``, ``LocalWork`` or ``ComposeWork``) on ``gpus`` GPUs of
    some node of the Ray cluster at ``address`` (default ``RAY_ADDRESS``, else ``auto``), or on
    one MIG device of ``mig_profile``; return its handle once it runs.

    The node routes and leases what Ray gives the work (``wait_s``: how long to wait there
    for a device a local user holds). A request no node can hold is refused before
    submission. ``start_timeout_s``: how long to wait for Ray to place the work (default:
    as long as it takes, as Ray queues work until a node is free).
    """
    ray = connect(address)
    if gpus < 0 or (mig_profile is None and gpus == 0):
        raise RayError(f"gpus={gpus}: ask for at least one GPU, or for a mig_profile")
    check_fits(ray, gpus=gpus, mig_profile=mig_profile)
    if mig_profile is None:
        options: dict[str, Any] = {"num_gpus": gpus}
    else:
        options = {"num_gpus": 0, "resources": {mig_resource(mig_profile): max(gpus, 1)}}
    actor = (
        ray.remote(NodeRunner)
        .options(num_cpus=0, max_concurrency=4, max_restarts=0, **options)
        .remote(work, wait_s, ttl_s)
    )
    try:
        plan, node, work_id, notes = ray.get(actor.describe.remote(), timeout=start_timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.kill(actor)
        raise LaunchError(
            f"Ray placed no node for the work within {start_timeout_s:g}s (every node able to "
            "hold it is busy)"
        ) from None
    except ray.exceptions.RayActorError as exc:
        ray.kill(actor)
        raise LaunchError(f"the work could not start on its Ray node: {_cause(exc)}") from None
    return RayLaunch(actor, ray, plan, node, work_id, notes)


def _cause(exc: BaseException) -> str:
    """The error that ended an actor's creation, as its node reported it."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if "Error" in stripped and ":" in stripped and not stripped.startswith("File "):
            return stripped
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__


class RayBackend(Backend):
    """Work on a node of a Ray cluster, routed and leased on that node.

    Ray work is planned on the node that runs it, never on the driver: start it with
    ``gpuroute.ray.launch(work, gpus=N)`` (or ``submit``). This backend also judges leases
    whose holder is a Ray task (``alive``)."""

    name: ClassVar[str] = "ray"
    target = "container"

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)

    def submit(self, work: Work, *, gpus: int = 1, **options: Any) -> RayLaunch:
        """``gpuroute.ray.launch`` through this backend."""
        return launch(work, gpus=gpus, **options)

    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        raise LaunchError(
            "Ray work is routed on the node that runs it, not from a plan made here: use "
            "gpuroute.ray.launch(work, gpus=N)"
        )

    def alive(self, holder: Holder) -> bool | None:
        """A Ray task's lease lives while the worker process that runs it does."""
        return process_alive(holder)
