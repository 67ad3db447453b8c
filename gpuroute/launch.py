"""``gpuroute.launch``: start a process or a container that sees exactly the planned GPUs.

No ``image`` and no ``compose_service``: a local process. ``image=``: a container through
docker-py. ``compose_service=``: ``compose run`` of that service. Each returns a handle with
``.plan``, ``.wait(timeout=None) -> int``, ``.logs() -> str``, ``.stop()``, ``.close()``,
and works as a context manager that stops and removes what it started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from gpuroute.adapters import compose as compose_adapter
from gpuroute.adapters.docker_py import container_kwargs
from gpuroute.adapters.engine import RetryPolicy, call, connect, engine_address
from gpuroute.adapters.env import is_gpu_device_node, merge_env
from gpuroute.adapters.local import process_env, torchrun_command
from gpuroute.api import plan as make_plan
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.core.plan import DEFAULT_DRIVER_CAPABILITIES, LocalIds, RoutingPlan
from gpuroute.core.resolve import Target
from gpuroute.core.spec import SpecInput
from gpuroute.errors import (
    EngineError,
    ImageNotFoundError,
    LaunchError,
    LaunchTimeout,
    VerificationError,
)
from gpuroute.leases import UNKNOWN_ENGINE, Lease, acquire

__all__ = ["ComposeLaunch", "ContainerLaunch", "Launch", "LocalLaunch", "launch"]

Pull = Literal["missing", "never"]
_FORBIDDEN_DOCKER_KWARGS = ("device_requests", "environment", "command", "image", "detach")
_UUID = re.compile(r"\(UUID: ((?:GPU|MIG)-[^)]+)\)")


class Launch:
    """What ``launch`` returns. Subclasses: LocalLaunch, ContainerLaunch, ComposeLaunch."""

    kind: str = ""

    def __init__(self, plan: RoutingPlan, notes: Iterable[str] = ()) -> None:
        self.plan = plan
        self.notes = list(notes)
        self.lease: Lease | None = None
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

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the work: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        raise NotImplementedError

    def _remove(self) -> None:
        """Remove what was started (after it stopped)."""

    def _cleanup(self) -> None:
        """Let go of this handle's own resources (log files, connections)."""

    def _hold(self, lease: Lease, *, own: bool) -> None:
        """Tie ``lease`` to this work; an own lease is released when the handle closes."""
        self.lease, self._own_lease = lease, own
        self._attach(lease)

    def _attach(self, lease: Lease) -> None:
        """Make the lease live as long as the work (its process or its container)."""
        raise NotImplementedError

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
                    self._remove()
                stopped = True
        finally:
            try:
                self._cleanup()
            finally:
                # The devices go back only once the work is known to have stopped; if
                # stopping failed, the lease stays with the work and ends when it does.
                if self.lease is not None and self._own_lease and stopped:
                    self.lease.release()

    def __enter__(self) -> Launch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ProcessLaunch(Launch):
    """Work run by a child process of ours (the program itself, or ``compose run``)."""

    def __init__(
        self,
        plan: RoutingPlan,
        argv: list[str],
        env: dict[str, str],
        *,
        cwd: str | os.PathLike[str] | None,
        stream: bool,
        notes: Iterable[str] = (),
    ) -> None:
        super().__init__(plan, notes)
        self.argv = argv
        # The work's output, kept for logs() as long as the handle lives.
        self._log: IO[bytes] | None = None if stream else tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL if self._log else None,
                stdout=self._log,
                stderr=subprocess.STDOUT if self._log else None,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        except OSError as exc:
            self._close_log()
            raise LaunchError(f"cannot start {argv[0]!r}: {exc.strerror}") from exc

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LaunchTimeout(f"{self.kind} work {self.id} still runs after {timeout}s") from exc

    def logs(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _kill_group(self, timeout: float) -> None:
        """SIGTERM to the whole process group (children the leader left behind included),
        then SIGKILL to whatever of it is left after ``timeout`` seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.poll()  # reap the leader, so that only live members count
            if not self._group_alive():
                break
            time.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()

    def _cleanup(self) -> None:
        self._close_log()


class LocalLaunch(_ProcessLaunch):
    """A process on this host."""

    kind = "local"

    @property
    def id(self) -> str:
        return str(self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        self._kill_group(timeout)

    def _attach(self, lease: Lease) -> None:
        lease.attach(pid=self.process.pid)


class ContainerLaunch(Launch):
    """A container started through docker-py."""

    kind = "container"

    def __init__(
        self,
        plan: RoutingPlan,
        client: Any,
        container: Any,
        *,
        retry: RetryPolicy,
        where: str,
        own_client: bool = True,
        engine_known: bool = True,
    ) -> None:
        super().__init__(plan)
        self._own_client = own_client
        self._engine_known = engine_known
        self.client = client
        self.container = container
        self._retry = retry
        self._where = where
        self._exit_code: int | None = None

    @property
    def id(self) -> str:
        return str(self.container.id)

    def wait(self, timeout: float | None = None) -> int:
        import requests.exceptions

        try:
            result = self.container.wait(timeout=timeout)
        except requests.exceptions.ConnectionError as exc:
            if timeout is not None and "timed out" in str(exc).lower():
                raise LaunchTimeout(
                    f"container {self.container.short_id} still runs after {timeout}s"
                ) from exc
            raise
        except requests.exceptions.ReadTimeout as exc:
            raise LaunchTimeout(
                f"container {self.container.short_id} still runs after {timeout}s"
            ) from exc
        self._exit_code = int(result["StatusCode"])
        return self._exit_code

    def _call(self, fn: Callable[[], Any]) -> Any:
        """An engine call, retried and its errors made gpuroute's."""
        return call(fn, retry=self._retry, where=self._where)

    def logs(self) -> str:
        data = self._call(lambda: self.container.logs(stdout=True, stderr=True))
        return bytes(data).decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        import docker.errors

        if self._exit_code is not None:
            return  # it has ended
        with contextlib.suppress(docker.errors.NotFound):
            self._call(lambda: self.container.stop(timeout=int(timeout)))

    def _remove(self) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self._call(lambda: self.container.remove(force=True))

    def _cleanup(self) -> None:
        if self._own_client:
            self.client.close()

    def _attach(self, lease: Lease) -> None:
        engine = self._where if self._engine_known else UNKNOWN_ENGINE
        lease.attach(container_id=str(self.container.id), docker_host=engine)


class ComposeLaunch(_ProcessLaunch):
    """``compose run --rm`` of one service, on a generated configuration."""

    kind = "compose"

    def __init__(
        self,
        plan: RoutingPlan,
        run: compose_adapter.ComposeRun,
        *,
        cwd: Path,
        stream: bool,
        docker_host: str | None,
        retry: RetryPolicy,
    ) -> None:
        self.run = run
        self._docker_host = docker_host
        self._retry = retry
        self._client: Any = None
        try:
            super().__init__(plan, run.argv, run.env, cwd=cwd, stream=stream, notes=run.notes)
        except LaunchError:
            run.cleanup()
            raise

    @property
    def id(self) -> str:
        return self.run.container_name

    def _docker(self) -> Any:
        """One client for this launch's engine, opened on first use."""
        if self._client is None:
            self._client = connect(self._docker_host, retry=self._retry)
        return self._client

    def _container(self, action: Callable[[Any], None]) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            action(self._docker().containers.get(self.run.container_name))

    def _wait_for_container(self, timeout: float, *, running: bool = False) -> Any:
        """The service's container once it exists (and runs, with ``running``), while the
        compose process lives; None if it does not appear within ``timeout`` seconds."""
        import docker.errors

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(docker.errors.NotFound):
                container = self._docker().containers.get(self.run.container_name)
                if not running or container.status == "running":
                    return container
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            try:
                # Stop the container; compose run then ends and removes it (--rm).
                self._container(lambda c: c.stop(timeout=int(timeout)))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout + 10)
            finally:
                self._kill_group(timeout)

    def _remove(self) -> None:
        self._container(lambda c: c.remove(force=True))

    def _cleanup(self) -> None:
        self.run.cleanup()
        if self._client is not None:
            self._client.close()
            self._client = None
        super()._cleanup()

    def _attach(self, lease: Lease) -> None:
        """Tie the lease to the service's container once it exists (it outlives a killed
        compose client); to the compose process until then, or if it never appears."""
        container = self._wait_for_container(30)
        if container is not None:
            lease.attach(
                container_id=str(container.id), docker_host=self._docker_host or engine_address()
            )
        else:
            lease.attach(pid=self.process.pid)


# -- verification -------------------------------------------------------------------------


def seen_by_nvidia_smi(output: str) -> list[str]:
    """The devices ``nvidia-smi -L`` lists, in its order: a GPU's MIG devices in place of the
    GPU when it has some, else the GPU itself."""
    seen: list[str] = []
    parent: str | None = None
    parent_has_mig = False
    for line in output.splitlines():
        m = _UUID.search(line)
        if m is None:
            continue
        if line.lstrip().startswith("GPU "):
            if parent is not None and not parent_has_mig:
                seen.append(parent)
            parent, parent_has_mig = m[1], False
        else:
            seen.append(m[1])
            parent_has_mig = True
    if parent is not None and not parent_has_mig:
        seen.append(parent)
    return seen


def check_seen(plan: RoutingPlan, output: str, where: str) -> None:
    expected = [d.uuid for d in plan.container_visible]
    seen = seen_by_nvidia_smi(output)
    if seen != expected:
        shown = output.strip() or "(no output)"
        raise VerificationError(
            f"{where} does not see the planned GPUs. Expected, in nvidia-smi order: "
            f"{expected or 'none'}; `nvidia-smi -L` inside it printed:\n{shown}\n"
            "It was stopped and removed. Check the engine's default runtime, the image's "
            "NVIDIA_VISIBLE_DEVICES, and `privileged`."
        )


def _verify_container(handle: ContainerLaunch, create_kwargs: dict[str, Any]) -> None:
    import docker.errors

    engine = handle._call
    where = f"container {handle.container.short_id}"
    text = ""
    try:
        code, output = engine(lambda: handle.container.exec_run(["nvidia-smi", "-L"]))
        text = bytes(output).decode(errors="replace")
        entered = code == 0 or _UUID.search(text) is not None
    except EngineError as exc:
        cause = exc.__cause__
        if not (
            isinstance(cause, docker.errors.APIError)
            and (cause.status_code in (404, 409) or "is not running" in str(cause.explanation))
        ):
            raise
        entered = False
    if not entered:
        try:
            engine(handle.container.reload)
            running = handle.container.status == "running"
        except EngineError:
            running = False  # gone already (auto-removed)
        if not running:  # it ended before it could be entered
            text = _twin_output(handle, create_kwargs)
            where = f"a twin of container {handle.container.short_id} (which had already exited)"
    check_seen(handle.plan, text, where)


TWIN_TIMEOUT_S = 120


def _twin_output(handle: ContainerLaunch, create_kwargs: Mapping[str, Any]) -> str:
    """``nvidia-smi -L`` in a container created exactly like the one to verify."""
    kwargs = {k: v for k, v in create_kwargs.items() if k not in ("name", "command")}
    engine = handle._call

    twin = engine(
        lambda: handle.client.containers.create(command=["-L"], entrypoint=["nvidia-smi"], **kwargs)
    )
    try:
        engine(twin.start)
        try:
            twin.wait(timeout=TWIN_TIMEOUT_S)
        except Exception as exc:
            raise VerificationError(
                f"the verification twin of container {handle.container.short_id} did not end "
                f"within {TWIN_TIMEOUT_S}s"
            ) from exc
        return bytes(engine(lambda: twin.logs(stdout=True, stderr=True))).decode(errors="replace")
    finally:
        with contextlib.suppress(Exception):
            twin.remove(force=True)


def _verify_compose(handle: ComposeLaunch, cwd: Path) -> None:
    import docker.errors

    deadline = time.monotonic() + 60
    while container := handle._wait_for_container(deadline - time.monotonic(), running=True):
        with contextlib.suppress(docker.errors.APIError):  # it ended meanwhile: try again
            _, output = container.exec_run(["nvidia-smi", "-L"])
            check_seen(
                handle.plan,
                bytes(output).decode(errors="replace"),
                f"compose container {handle.run.container_name}",
            )
            return
        time.sleep(0.05)
    # The run ended before it could be entered: check a twin run of the same configuration.
    twin = handle.run.twin_argv("nvidia-smi", "-L")
    result = subprocess.run(
        twin, env=handle.run.env, cwd=cwd, capture_output=True, text=True, check=False
    )
    check_seen(handle.plan, result.stdout, f"a twin run of compose service {handle.run.service!r}")


# -- the front door -----------------------------------------------------------------------


def launch(
    command: Sequence[str],
    *,
    gpus: SpecInput,
    image: str | None = None,
    compose_service: str | None = None,
    compose_files: Sequence[str | os.PathLike[str]] | None = None,
    inventory: Inventory | None = None,
    env: Mapping[str, str] | None = None,
    context: CallerContext | None = None,
    verify: bool = False,
    cdi: bool = False,
    torchrun: bool = False,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] = DEFAULT_DRIVER_CAPABILITIES,
    local_ids: LocalIds = "uuid",
    docker_host: str | None = None,
    docker_client: Any = None,
    retry: RetryPolicy | None = None,
    pull: Pull = "missing",
    name: str | None = None,
    compose: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stream: bool = False,
    docker_kwargs: Mapping[str, Any] | None = None,
    lease: bool | Lease = False,
    lease_dir: str | os.PathLike[str] | None = None,
    ttl_s: float | None = None,
    lease_wait_s: float = 0.0,
) -> Launch:
    """Start ``command`` on exactly the GPUs ``gpus`` names.

    Args:
        command: argv as a list (no shell is ever used); may be empty for a container, to
            run the image's own command.
        gpus: a GPU spec, as for ``gpuroute.plan``.
        image: run in a container of this image, through docker-py.
        compose_service / compose_files: run this service with ``compose run --rm``; the
            files default to ``compose.yaml`` (and friends) in ``cwd``. ``compose`` picks the
            binary (default: ``docker compose`` if present, else ``docker-compose``).
        inventory / context: as for ``gpuroute.plan`` (defaults read from the host).
        env: variables for the work. gpuroute owns CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER,
            NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES; setting them is an error.
            The caller's own CUDA_*/NVIDIA_* variables never reach a container.
        verify: after start, compare ``nvidia-smi -L`` inside the container with the plan;
            on a mismatch the container is stopped and removed and VerificationError raised.
        cdi: request devices by CDI name (``nvidia.com/gpu=<UUID>``) instead of the
            ``nvidia`` driver (engines with CDI enabled).
        torchrun: local only; run ``command`` under torchrun, one worker per planned GPU.
        docker_host: the engine (default: DOCKER_HOST, else the local socket).
        docker_client: a docker-py ``DockerClient`` to use instead of opening a connection
            (``image=`` launches); the caller keeps it open.
        retry: how transient engine failures are retried (default: RetryPolicy()).
        pull: ``"missing"`` pulls an image that is not on the engine; ``"never"`` does not.
        name: the container's name (default: a unique ``gpuroute-…`` name).
        stream: local and compose only; let the work print to this process's stdout and
            stderr instead of capturing it for ``logs()``.
        docker_kwargs: more keyword arguments for ``containers.create`` (``volumes``,
            ``network_mode``, ``shm_size``, ...).
        lease: ``True`` acquires a lease on the devices first (``gpus`` may then be
            ``"any:N"``) and releases it when the work ends and the handle closes; a
            ``Lease`` already held is used as it is (and not released). The lease lives with
            the work: its process, or its container (``handle.detach()`` leaves a container
            running with its lease, freed when the container is gone).
        lease_dir / ttl_s / lease_wait_s: as ``lease_dir``, ``ttl_s`` and ``wait_s`` of
            ``gpuroute.acquire``.

    Returns:
        A LocalLaunch, ContainerLaunch or ComposeLaunch. As a context manager it stops and
        removes what it started.
    """
    if isinstance(command, str | bytes):
        raise LaunchError(
            f"command must be a list of arguments, not the string {command!r}; gpuroute never "
            "runs a shell (write ['sh', '-c', '...'] if you need one)"
        )
    command = list(command)
    if image is not None and compose_service is not None:
        raise LaunchError("give either image= or compose_service=, not both")
    local = image is None and compose_service is None
    if local and not command:
        raise LaunchError("a local launch needs a command")
    if not local and torchrun:
        raise LaunchError(
            "torchrun=True is for local launches; in a container, run torchrun as the command"
        )
    if local and verify:
        raise LaunchError(
            "verify=True checks what a container sees with nvidia-smi; a local process sees "
            "exactly what its CUDA_VISIBLE_DEVICES (plan.local_env) names"
        )
    retry = retry or RetryPolicy()
    target: Target = "local" if local else "container"
    held: Lease | None = lease if isinstance(lease, Lease) else None
    how: dict[str, Any] = {
        "context": context,
        "target": target,
        "allow_multiple_mig": allow_multiple_mig,
        "driver_capabilities": driver_capabilities,
        "local_ids": local_ids,
    }
    if held is None and lease:
        held = acquire(
            gpus,
            inventory=inventory,
            lease_dir=lease_dir,
            ttl_s=ttl_s,
            wait_s=lease_wait_s,
            **how,
        )
    own = held is not None and not isinstance(lease, Lease)
    plan = held.plan if held is not None else make_plan(gpus, inventory, **how)
    handle: Launch
    try:
        if local:
            argv = torchrun_command(plan, command) if torchrun else command
            environment = process_env(plan, os.environ, env)
            handle = LocalLaunch(plan, argv, environment, cwd=cwd, stream=stream)
        elif compose_service is not None:
            handle = _launch_compose(
                plan,
                compose_service,
                command,
                files=compose_files,
                compose=compose,
                env=env,
                cwd=Path(cwd) if cwd is not None else Path.cwd(),
                docker_host=docker_host,
                name=name,
                stream=stream,
                verify=verify,
                retry=retry,
            )
        else:
            assert image is not None
            handle = _launch_container(
                plan,
                image,
                command,
                env=env,
                cdi=cdi,
                docker_host=docker_host,
                docker_client=docker_client,
                retry=retry,
                pull=pull,
                name=name,
                verify=verify,
                docker_kwargs=docker_kwargs or {},
            )
    except BaseException:
        if own and held is not None:
            held.release()
        raise
    if held is not None:
        try:
            handle._hold(held, own=own)
        except BaseException:
            handle.close()
            raise
    return handle


def _check_docker_kwargs(docker_kwargs: Mapping[str, Any]) -> None:
    for key in _FORBIDDEN_DOCKER_KWARGS:
        if key in docker_kwargs:
            raise LaunchError(
                f"docker_kwargs may not set {key!r}: gpuroute sets it (use the "
                "launch arguments command=, env=, gpus=)"
            )
    if docker_kwargs.get("privileged"):
        raise LaunchError(
            "docker_kwargs sets privileged=True: a privileged container sees "
            "every GPU whatever is requested, so gpuroute cannot pin it"
        )
    for device in docker_kwargs.get("devices") or []:
        if is_gpu_device_node(device):
            raise LaunchError(
                f"docker_kwargs maps the GPU device {device!r} directly; let gpuroute request GPUs"
            )


def _launch_container(
    plan: RoutingPlan,
    image: str,
    command: list[str],
    *,
    env: Mapping[str, str] | None,
    cdi: bool,
    docker_host: str | None,
    docker_client: Any,
    retry: RetryPolicy,
    pull: Pull,
    name: str | None,
    verify: bool,
    docker_kwargs: Mapping[str, Any],
) -> ContainerLaunch:
    import docker.errors

    _check_docker_kwargs(docker_kwargs)
    where = docker_host or engine_address()
    kwargs = container_kwargs(plan, cdi=cdi)
    kwargs["environment"] = merge_env(env, kwargs["environment"])
    container_name = name or f"gpuroute-{os.urandom(6).hex()}"
    launch_id = os.urandom(8).hex()
    labels = {
        **dict(docker_kwargs.get("labels") or {}),
        "gpuroute.spec": plan.spec,
        "gpuroute.devices": ",".join(plan.uuids),
        "gpuroute.launch": launch_id,
    }
    create_kwargs: dict[str, Any] = {
        **docker_kwargs,
        **kwargs,
        "image": image,
        "command": command or None,
        "name": container_name,
        "labels": labels,
        "detach": True,
    }
    own_client = docker_client is None
    client = connect(docker_host, retry=retry) if own_client else docker_client

    def create() -> Any:
        try:
            return client.containers.create(**create_kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # the name is taken: by our own earlier try?
                with contextlib.suppress(docker.errors.NotFound):
                    existing = client.containers.get(container_name)
                    if existing.labels.get("gpuroute.launch") == launch_id:
                        return existing  # a retried create that had succeeded
            raise

    try:
        try:
            container = call(create, retry=retry, where=where, image=image)
        except ImageNotFoundError:
            if pull == "never":
                raise
            call(lambda: client.images.pull(image), retry=retry, where=where, image=image)
            container = call(create, retry=retry, where=where, image=image)
    except BaseException:
        if own_client:
            client.close()
        raise
    handle = ContainerLaunch(
        plan,
        client,
        container,
        retry=retry,
        where=where,
        own_client=own_client,
        # With the caller's client and no docker_host, which engine it talks to is unknown.
        engine_known=own_client or docker_host is not None,
    )
    try:
        call(container.start, retry=retry, where=where, image=image)
        if verify:
            _verify_container(handle, create_kwargs)
    except BaseException:
        handle.close()
        raise
    return handle


def _launch_compose(
    plan: RoutingPlan,
    service: str,
    command: list[str],
    *,
    files: Sequence[str | os.PathLike[str]] | None,
    compose: Sequence[str] | None,
    env: Mapping[str, str] | None,
    cwd: Path,
    docker_host: str | None,
    name: str | None,
    stream: bool,
    verify: bool,
    retry: RetryPolicy,
) -> ComposeLaunch:
    environ = dict(os.environ)
    if docker_host:
        environ["DOCKER_HOST"] = docker_host
    run = compose_adapter.prepare(
        plan,
        service,
        command,
        files=files,
        compose=compose,
        env=env,
        environ=environ,
        cwd=cwd,
        container_name=name,
    )
    handle = ComposeLaunch(plan, run, cwd=cwd, stream=stream, docker_host=docker_host, retry=retry)
    if verify:
        try:
            _verify_compose(handle, cwd)
        except BaseException:
            handle.close()
            raise
    return handle
