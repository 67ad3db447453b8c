"""What every backend implements: the work to run, the handle it returns, and the backend.

A request goes one way through the code (see ``gpuroute.host.Host.launch``): the host routes
the spec (a plan, or a lease and its plan), then the backend **starts** the work for that
plan, **binds** the lease to the work's own holder before the work can run, **verifies**
what the work sees when asked, and later says whether a lease holder of its kind is still
**alive**. Every handle has ``wait``, ``logs``, ``follow``, ``stop``, ``close`` and
``detach``, and is a context manager that stops and removes what it started.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from gpuroute.core import Target
from gpuroute.core.closing import Closing
from gpuroute.core.plan import RoutingPlan
from gpuroute.records import Holder

__all__ = ["Backend", "Bind", "Connection", "HeldLease", "Launch", "Work", "unbound"]


class HeldLease(Protocol):
    """What a handle needs of the lease it keeps (a ``gpuroute.Lease``)."""

    @property
    def id(self) -> str: ...

    def release(self) -> None: ...


Bind = Callable[[Holder], None]
"""Names the work's holder in the lease (a no-op when the work runs without one)."""


def unbound(holder: Holder) -> None:
    """The ``Bind`` of work that runs without a lease."""


@dataclass(frozen=True)
class Connection:
    """How backends reach what they drive: the engine and the environment. One per host.

    ``docker_host``: the engine (default ``DOCKER_HOST``, else the local socket);
    ``docker_client``: a docker-py client to use instead of opening one (the caller keeps
    it); ``retry``: how transient engine failures are retried (a ``RetryPolicy``);
    ``environ``: the environment work inherits (default ``os.environ``, read when used).
    """

    docker_host: str | None = None
    docker_client: Any = None
    retry: Any = None
    environ: Mapping[str, str] | None = None

    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ


@dataclass(frozen=True)
class Work:
    """What to run, whatever runs it. Each backend has its own subclass with its options.

    ``command``: argv (no shell is ever used); ``env``: variables for the work (the GPU
    variables are the plan's alone); ``verify``: check what the work sees after start;
    ``name``: its name where the backend has names.
    """

    backend: ClassVar[str] = ""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    verify: bool = False
    name: str | None = None


class Launch(Closing):
    """A handle on started work. Backends subclass it: LocalLaunch, ContainerLaunch,
    ComposeLaunch."""

    kind: str = ""

    def __init__(self, plan: RoutingPlan, notes: Iterable[str] = ()) -> None:
        self.plan = plan
        self.notes = list(notes)
        self.lease: Any = None
        """The ``gpuroute.Lease`` that holds the work's devices, if any."""
        self._own_lease = False
        self._closed = False
        self._detached = False

    @property
    def id(self) -> str:
        """The process id, container id or container name."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the work to end and return its exit code. Raises LaunchTimeout when
        ``timeout`` seconds pass first (the work keeps running)."""
        raise NotImplementedError

    def logs(self) -> str:
        """Everything the work printed so far (stdout and stderr); empty when the launch
        streams its output (``stream=True``)."""
        raise NotImplementedError

    def follow(self) -> Iterator[bytes]:
        """The work's output as it comes, until it ends, where the backend captures it and
        does not print it itself (containers); nothing otherwise."""
        return iter(())

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the work: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        raise NotImplementedError

    def kill(self) -> None:
        """End the work at once, with no grace period (it sees GPUs it was not given); what
        was started with it ends as ``stop`` ends it."""
        self.stop(timeout=0)

    def pids(self) -> set[int]:
        """The host pids of the work's processes now (for the energy monitor's own-process
        check); empty where unknown."""
        return set()

    def remove(self) -> None:
        """Remove what was started (after it stopped)."""

    def cleanup(self) -> None:
        """Let go of this handle's own resources (log files, connections)."""

    def hold(self, lease: HeldLease, *, own: bool) -> None:
        """Keep ``lease`` with this handle; an own lease is released when the handle closes
        (once the work has surely stopped)."""
        self.lease, self._own_lease = lease, own

    def detach(self) -> None:
        """Leave the work running when this handle closes or this program exits. A lease
        stays with the work and is freed when it ends (its process or container is gone)."""
        self._detached = True

    def close(self) -> None:
        """Stop the work, remove what was started and release an own lease (unless
        detached). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        stopped = False
        try:
            if not self._detached:
                try:
                    self.stop()
                finally:
                    self.remove()
                stopped = True
        finally:
            try:
                self.cleanup()
            finally:
                # The devices go back only once the work is known to have stopped; if
                # stopping failed, the lease stays with the work and ends when it does.
                if self.lease is not None and self._own_lease and stopped:
                    self.lease.release()


class Backend(ABC):
    """One way of running work. A subclass lives in its own module of ``gpuroute.backends``
    and is registered there by name."""

    name: ClassVar[str]
    target: ClassVar[Target]
    """Where the plan's environment applies: ``local`` (this host's CUDA view, bound by a
    parent ``CUDA_VISIBLE_DEVICES``) or ``container`` (renumbered inside)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @abstractmethod
    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        """Start ``work`` on exactly the planned devices. ``bind`` is called with the work's
        holder before the work can run. On failure nothing is left running."""

    def verify(self, handle: Launch) -> None:
        """Check that the started work sees exactly the planned devices; raise
        VerificationError (having stopped and removed it) if not."""
        raise NotImplementedError(f"the {self.name} backend cannot verify what work sees")

    @abstractmethod
    def alive(self, holder: Holder) -> bool | None:
        """Whether a lease holder of this backend still lives: True, False (gone), or None
        (cannot tell; the lease is kept)."""

    def close(self) -> None:  # noqa: B027 - a backend that holds nothing keeps this
        """Let go of what the backend holds (an engine connection)."""
