"""The docker backend: a container through docker-py, and everything it takes.

One module owns it all: the engine connection (a client that honours ``DOCKER_HOST``,
bounded jittered retries of transient failures, engine errors turned into gpuroute errors
that say what to do, at one boundary: ``call``), the ``containers.create`` keyword arguments
of a plan, the container handle, verification with ``nvidia-smi -L`` inside, and whether a
container that holds a lease still exists. docker-py is imported only inside functions."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from gpuroute.backends.base import Backend, Bind, Connection, Launch, Work
from gpuroute.backends.env import (
    gpu_majors,
    gpu_node_at,
    is_gpu_device_node,
    merge_env,
    opens_gpu_devices,
)
from gpuroute.core.plan import DRIVER_CAPABILITIES, RoutingPlan
from gpuroute.errors import (
    CommandNotFoundError,
    EngineError,
    EnginePermissionError,
    EngineUnavailableError,
    ImageNotFoundError,
    LaunchError,
    LaunchTimeout,
    ToolkitDeviceError,
    ToolkitMissingError,
    VerificationError,
)
from gpuroute.records import Holder

__all__ = [
    "TOOLKIT_FIX",
    "UNKNOWN_ENGINE",
    "ContainerLaunch",
    "DockerBackend",
    "DockerWork",
    "Engine",
    "EngineBackend",
    "Pull",
    "RetryPolicy",
    "call",
    "capabilities_for",
    "cdi_device_names",
    "check_docker_kwargs",
    "check_seen",
    "connect",
    "container_kwargs",
    "container_state",
    "init_process",
    "device_requests",
    "ENGINE_CAPABILITIES",
    "engine_address",
    "image_capabilities",
    "is_not_running",
    "is_running",
    "request_capabilities",
    "lists_devices",
    "nvidia_smi_evidence",
    "nvidia_smi_inside",
    "seen_by_nvidia_smi",
    "translate",
]

T = TypeVar("T")

TOOLKIT_FIX = (
    "Install the NVIDIA Container Toolkit on the engine's host, register it with "
    "`sudo nvidia-ctk runtime configure --runtime=docker`, and restart the engine "
    "(`sudo systemctl restart docker`): dockerd looks for nvidia-container-runtime-hook "
    "only when it starts."
)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient engine failures are retried: connection refused or reset (the engine
    restarting), timeouts, and 502/503/504 answers. Waits grow exponentially from
    ``initial_wait`` to ``max_wait`` seconds, each with up to ``jitter`` of itself added at
    random; after ``attempts`` tries the last error is raised as a gpuroute error.
    ``sleep`` is injectable for tests."""

    attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 3.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    # By identity: some exceptions (pynvml's) compare by attributes others lack.
    while current is not None and all(current is not each for each in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _text(exc: BaseException) -> str:
    return " | ".join(str(e) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the engine is restarting, overloaded or slow."""
    import docker.errors
    import requests.exceptions

    if is_permission_denied(exc) or isinstance(exc, EngineError):
        return False  # an EngineError has been retried already, where it was raised
    if isinstance(exc, docker.errors.APIError):
        return exc.status_code in (502, 503, 504)
    for link in _chain(exc):
        if isinstance(
            link,
            requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | ConnectionError
            | FileNotFoundError
            | TimeoutError,
        ):
            return True
    return isinstance(exc, docker.errors.DockerException) and bool(
        re.search(r"Connection (refused|aborted|reset)|No such file|timed out", _text(exc))
    )


def is_permission_denied(exc: BaseException) -> bool:
    return any(isinstance(e, PermissionError) for e in _chain(exc)) or (
        "Permission denied" in _text(exc) and "docker.sock" in _text(exc)
    )


def translate(exc: BaseException, *, where: str, image: str | None = None) -> EngineError:
    """The gpuroute error for an engine failure, with the fix in its message."""
    import docker.errors

    text = _text(exc)
    if is_permission_denied(exc):
        return EnginePermissionError(
            f"permission denied on the Docker engine socket ({where}): add your user to the "
            "`docker` group and log in again, or point DOCKER_HOST at an engine you may use "
            "(for example rootless Docker)."
        )
    if "could not select device driver" in text:
        return ToolkitMissingError(
            f'the Docker engine at {where} could not select device driver "nvidia": it has no '
            f"NVIDIA Container Toolkit, or was not restarted after installing it. {TOOLKIT_FIX}"
        )
    if m := re.search(r"nvidia-container-cli: (device error: [^\n\"]*)", text):
        return ToolkitDeviceError(
            f"the NVIDIA toolkit on the engine's host refused the request ({m[1]}): the engine "
            f"at {where} runs on another host than the inventory describes (check DOCKER_HOST "
            "and GPUROUTE_INVENTORY), or the device is gone (`gpuroute ls` on that host)."
        )
    if m := re.search(r"unsupported capabilities found in '([^']*)'", text):
        return ToolkitDeviceError(
            f"the NVIDIA toolkit refused the driver capabilities {m[1]!r}; use some of "
            f"{', '.join(sorted(DRIVER_CAPABILITIES - {'all'}))}"
        )
    if m := _COMMAND_NOT_FOUND.search(text):
        command, why = m[1], m[2].strip()
        in_image = f"in image {image!r}" if image is not None else "in the image"
        what = "is not executable" if why == "permission denied" else "is not found"
        return CommandNotFoundError(
            f"the command {command!r} {what} {in_image} (the engine said: {why}): install it "
            "in the image, give its full path, or check the image's PATH and entrypoint."
        )
    if m := _HOOK_FAILED.search(_short(exc)):
        return EngineError(
            f"the NVIDIA Container Toolkit's hook failed on the engine at {where} ({m[1]}): "
            f"{_last_line(m[2])}. Check the toolkit's installation and configuration on the "
            "engine's host (nvidia-ctk, /etc/nvidia-container-runtime/config.toml); the "
            "hook's whole output is in this error's cause."
        )
    if isinstance(exc, docker.errors.ImageNotFound) or (
        image is not None and re.search(r"No such image|pull access denied|manifest unknown", text)
    ):
        return ImageNotFoundError(
            f"image {image!r} is not on the engine at {where} and could not be pulled: check "
            f"its name and tag, `docker pull {image}`, or build it there."
        )
    if is_transient(exc):
        return EngineUnavailableError(
            f"cannot reach the Docker engine at {where}: {_short(exc)}. Is dockerd running? "
            "DOCKER_HOST selects another engine."
        )
    return EngineError(f"the Docker engine at {where} failed: {_short(exc)}")


# runc's words when the container's command cannot be started ("exec: \"x\": executable file
# not found in $PATH"; for a path: "stat /x: no such file or directory"); the docker CLI
# exits 127 on it.
_COMMAND_NOT_FOUND = re.compile(
    r'exec: "([^"]*)": (executable file not found in \$PATH|stat [^:]*: no such file or '
    r"directory|no such file or directory|permission denied)"
)
# An OCI hook (the toolkit's prestart hook) that exited with an error, and what it printed.
_HOOK_FAILED = re.compile(
    r"error running (?:\w+ )?hook(?: #\d+)?: (?:error running hook: )?(exit status \d+|[^,]+),"
    r" stdout: .*?, stderr: (.*)",
    re.S,
)


def _last_line(output: str) -> str:
    """A failure's last word: the last line of what it printed (a Python traceback's is the
    exception), without runc's closing ": unknown"."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "(it printed nothing)"
    return last.removesuffix(": unknown").rstrip(".")


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


def call(fn: Callable[[], T], *, retry: RetryPolicy, where: str, image: str | None = None) -> T:
    """Run ``fn``, retrying transient engine failures under ``retry``; raise any failure as
    a gpuroute EngineError."""
    import tenacity

    def wait(state: tenacity.RetryCallState) -> float:
        base = min(retry.max_wait, retry.initial_wait * 2 ** (state.attempt_number - 1))
        return float(base * (1 + retry.jitter * random.random()))  # noqa: S311 - jitter

    def attempt() -> T:
        try:
            return fn()
        except Exception as exc:
            _close_failed_sockets(exc)
            raise

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(is_transient),
        sleep=retry.sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except EngineError:
        raise
    except Exception as exc:
        import docker.errors
        import requests.exceptions

        engine_failures = (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        )
        if isinstance(exc, engine_failures):
            raise translate(exc, where=where, image=image) from exc
        raise


def _close_failed_sockets(exc: BaseException) -> None:
    """Close the socket of a connection that failed to open. docker-py's unix-socket
    transport leaves it open (``connect`` assigns it to the connection only on success), so
    every failed try on a dead engine would leak one, until the garbage collector finds it."""
    import socket
    import traceback

    for link in _chain(exc):
        for frame, _ in traceback.walk_tb(link.__traceback__):
            sock = frame.f_locals.get("sock")
            if isinstance(sock, socket.socket) and frame.f_code.co_name == "connect":
                sock.close()


def engine_address(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(
    docker_host: str | None = None, *, retry: RetryPolicy | None = None, timeout: int = 120
) -> Any:
    """A docker-py client for ``docker_host``, else DOCKER_HOST (with DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH), else the default socket. Retries while the engine comes up."""
    import docker

    where = docker_host or engine_address()

    def make() -> Any:
        if where.startswith("unix://") and not os.path.exists(where[len("unix://") :]):
            # No socket (yet): the engine is down or restarting. Checked here because
            # docker-py leaks the socket of a failed unix connection.
            raise FileNotFoundError(f"no engine socket at {where[len('unix://') :]}")
        # Creating the client asks the engine for its API version: that is the reachability
        # check, no separate ping needed.
        if docker_host:
            return docker.DockerClient(base_url=docker_host, timeout=timeout)
        return docker.from_env(timeout=timeout)

    return call(make, retry=retry or RetryPolicy(), where=where)


UNKNOWN_ENGINE = "unknown"
"""Recorded as a lease holder's engine when the launcher could not tell which engine it used."""


def _is_timeout(exc: BaseException) -> bool:
    import requests.exceptions

    return any(
        isinstance(e, requests.exceptions.ReadTimeout)
        or (isinstance(e, requests.exceptions.ConnectionError) and "timed out" in str(e).lower())
        for e in _chain(exc)
    )


def is_not_running(exc: EngineError) -> bool:
    """Whether an engine error says the container is gone or not running (an exec into a
    container that ended)."""
    import docker.errors

    cause = exc.__cause__
    return isinstance(cause, docker.errors.APIError) and (
        cause.status_code in (404, 409) or "is not running" in str(cause.explanation)
    )


class Engine:
    """One Docker engine: its address, a client opened on first use and kept, and the retry
    policy. Every engine call of the backend goes through ``call``."""

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        client: Any = None,
        retry: RetryPolicy | None = None,
        timeout: int = 120,
    ) -> None:
        self.docker_host = docker_host
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._client = client
        self._own_client = client is None
        # With a caller's client and no docker_host, which engine it talks to is unknown.
        self.where = docker_host or engine_address()
        self.known = self._own_client or docker_host is not None

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.docker_host, retry=self.retry, timeout=self.timeout)
        return self._client

    def call(self, fn: Callable[[], T], *, image: str | None = None) -> T:
        """An engine call, retried and its errors made gpuroute's."""
        return call(fn, retry=self.retry, where=self.where, image=image)

    def once(self, fn: Callable[[], T]) -> T:
        """An engine call that is not retried (waits, streams), its errors made gpuroute's."""
        return call(fn, retry=RetryPolicy(attempts=1), where=self.where)

    def holder_where(self) -> str:
        return self.where if self.known else UNKNOWN_ENGINE

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None


# -- rendering a plan for docker-py -------------------------------------------------------


def cdi_device_names(plan: RoutingPlan) -> list[str]:
    """Fully qualified CDI names (``nvidia.com/gpu=<UUID>``) of the planned devices."""
    return [f"nvidia.com/gpu={uuid}" for uuid in plan.uuids]


ENGINE_CAPABILITIES = frozenset({"compute", "compat32", "graphics", "utility", "video", "display"})
"""The driver capabilities the engine's ``nvidia`` device driver accepts in a device
request; it refuses others (``all``, ``ngx``) with "could not select device driver"."""


def request_capabilities(capabilities: Sequence[str]) -> list[str]:
    """A device request's capabilities for these driver capabilities: ``gpu`` and them, or
    ``gpu`` alone when the engine would not take one of them (then the container's
    ``NVIDIA_DRIVER_CAPABILITIES`` alone carries them: the engine adds none of its own)."""
    if set(capabilities) <= ENGINE_CAPABILITIES:
        return ["gpu", *capabilities]
    return ["gpu"]


def device_requests(plan: RoutingPlan, *, cdi: bool = False) -> list[Any]:
    """The engine's device requests for a plan: none for no GPU.

    ``nvidia`` driver (default): the planned UUIDs, with capability ``gpu`` plus the plan's
    driver capabilities, which the engine passes on as ``NVIDIA_DRIVER_CAPABILITIES``
    (``gpu`` alone for ``all`` or ``ngx``, which it does not take: the environment carries
    them). ``cdi=True``: CDI device names, for engines with CDI enabled (Docker 25+).
    """
    if not plan.devices:
        return []
    from docker.types import DeviceRequest

    if cdi:
        return [DeviceRequest(driver="cdi", device_ids=cdi_device_names(plan))]
    return [
        DeviceRequest(
            driver="nvidia",
            device_ids=list(plan.uuids),
            capabilities=[request_capabilities(plan.driver_capabilities)],
        )
    ]


def container_kwargs(plan: RoutingPlan, *, cdi: bool = False) -> dict[str, Any]:
    """``device_requests`` and ``environment`` for ``containers.create(image, cmd, **kw)``.

    The environment holds the container view (``CUDA_VISIBLE_DEVICES`` as ranks with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) and the host view too, so that an image that bakes
    ``NVIDIA_VISIBLE_DEVICES=all`` run under a default ``nvidia`` runtime still gets exactly
    the planned devices (``void`` for none).
    """
    return {
        "device_requests": device_requests(plan, cdi=cdi),
        "environment": dict(plan.container_run_env),
    }


_FORBIDDEN_DOCKER_KWARGS = ("device_requests", "environment", "command", "image", "detach")


def _bind_sources(docker_kwargs: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(setting, host path) of every bind mount in ``containers.create`` arguments:
    ``volumes`` and ``binds`` (a mapping of host path to ``{"bind": ...}``, or
    ``"SRC:DST[:MODE]"`` strings) and ``mounts`` of type bind."""
    for key in ("volumes", "binds"):
        value = docker_kwargs.get(key) or []
        sources = value.keys() if isinstance(value, Mapping) else value
        for source in sources:
            yield key, str(source).split(":", 1)[0]
    for mount in docker_kwargs.get("mounts") or []:
        if isinstance(mount, Mapping) and str(mount.get("Type", "volume")) == "bind":
            yield "mounts", str(mount.get("Source") or "")


def check_docker_kwargs(docker_kwargs: Mapping[str, Any]) -> None:
    """Refuse the ``containers.create`` settings that would undo the routing."""
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
    majors = gpu_majors()
    for device in docker_kwargs.get("devices") or []:
        if is_gpu_device_node(device, majors):
            raise LaunchError(
                f"docker_kwargs maps the GPU device {device!r} directly (`devices`): it reaches "
                "the container whatever the plan says. Remove it and let gpuroute request GPUs "
                "with gpus=."
            )
    for key, source in _bind_sources(docker_kwargs):
        node = gpu_node_at(source, majors)
        if node is not None:
            shown = "" if node == source else f", which holds the GPU device node {node}"
            raise LaunchError(
                f"docker_kwargs bind-mounts {source!r} (`{key}`){shown}: a GPU device node "
                "bound into a container can reach a GPU past the plan. Bind a directory that "
                "holds no device nodes, and let gpuroute request GPUs with gpus=."
            )
    for rule in docker_kwargs.get("device_cgroup_rules") or []:
        if opens_gpu_devices(rule, majors):
            raise LaunchError(
                f"docker_kwargs sets the device cgroup rule {rule!r} (`device_cgroup_rules`), "
                "which opens NVIDIA's device nodes to the container, past the plan. Remove it "
                "(or narrow it to other majors) and let gpuroute request GPUs with gpus=."
            )


# -- verification -------------------------------------------------------------------------

_UUID = re.compile(r"\(UUID: ((?:GPU|MIG)-[^)]+)\)")


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


def lists_devices(output: str) -> bool:
    """Whether ``output`` looks like ``nvidia-smi -L`` output (names at least one device)."""
    return _UUID.search(output) is not None


def check_seen(plan: RoutingPlan, output: str, where: str) -> None:
    """Raise VerificationError unless ``nvidia-smi -L`` output lists exactly the plan."""
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


TWIN_TIMEOUT_S = 120


def nvidia_smi_inside(engine: Engine, container: Any) -> tuple[int, str] | None:
    """``nvidia-smi -L`` run inside a container: its exit status and output, or None when
    the container is not running (it ended, or was removed)."""
    try:
        code, output = engine.call(lambda: container.exec_run(["nvidia-smi", "-L"]))
    except EngineError as exc:
        if is_not_running(exc):
            return None
        raise
    return int(code) if code is not None else -1, bytes(output).decode(errors="replace")


def is_running(engine: Engine, container: Any) -> bool:
    """Whether a container runs now (False once it ended or was removed)."""
    import docker.errors

    try:
        engine.call(container.reload)
    except EngineError as exc:
        if isinstance(exc.__cause__, docker.errors.NotFound):
            return False
        raise
    return bool(container.status == "running")


PROBE_ATTEMPTS = 3
PROBE_PAUSE_S = 0.2


def nvidia_smi_evidence(engine: Engine, container: Any) -> str | None:
    """What ``nvidia-smi -L`` inside a running container says, when that is evidence of what
    the container sees; None when the container ended before it could answer (the caller
    then checks a twin).

    A clean exit (status 0) is evidence. A failure is evidence only if the container kept
    running through it, ``PROBE_ATTEMPTS`` times over: an exec into a container that is
    ending fails too (killed, "cannot exec in a stopped state", no output), and the engine
    may still call the container running for a moment after its process ended. So a short
    job is never taken for a mis-pinned one, and a container that really sees other GPUs
    (nvidia-smi failing, or listing others) still is."""
    output = ""
    for attempt in range(PROBE_ATTEMPTS):
        if attempt:
            time.sleep(PROBE_PAUSE_S)
        result = nvidia_smi_inside(engine, container)
        if result is None:
            return None
        code, output = result
        if code == 0:
            return output
        if not is_running(engine, container):
            return None
    return output


# -- the handle ---------------------------------------------------------------------------


class ContainerLaunch(Launch):
    """A container started through docker-py."""

    kind = "container"

    def __init__(
        self,
        plan: RoutingPlan,
        engine: Engine,
        container: Any,
        create_kwargs: Mapping[str, Any],
        *,
        own_engine: bool = False,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__(plan, notes)
        self.engine = engine
        self.container = container
        self.create_kwargs = dict(create_kwargs)
        self._own_engine = own_engine
        self._exit_code: int | None = None

    @property
    def client(self) -> Any:
        return self.engine.client

    @property
    def id(self) -> str:
        return str(self.container.id)

    def wait(self, timeout: float | None = None) -> int:
        try:
            result = self.engine.once(lambda: self.container.wait(timeout=timeout))
        except EngineError as exc:
            if timeout is not None and exc.__cause__ is not None and _is_timeout(exc.__cause__):
                raise LaunchTimeout(
                    f"container {self.container.short_id} still runs after {timeout}s"
                ) from exc
            raise
        self._exit_code = int(result["StatusCode"])
        return self._exit_code

    def logs(self) -> str:
        data = self.engine.call(lambda: self.container.logs(stdout=True, stderr=True))
        return bytes(data).decode(errors="replace")

    def follow(self) -> Iterator[bytes]:
        stream = self.engine.once(lambda: self.container.logs(stream=True, follow=True))
        while True:
            chunk = self.engine.once(lambda: next(stream, None))
            if chunk is None:
                return
            yield bytes(chunk)

    def exec(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str]:
        """Run ``argv`` inside the running container; its exit status and output."""
        result = self.engine.once(
            lambda: self.container.exec_run(list(argv), environment=dict(env or {}), demux=False)
        )
        return int(result.exit_code), bytes(result.output).decode(errors="replace")

    def pids(self) -> set[int]:
        from gpuroute.backends.local import process_tree

        with contextlib.suppress(Exception):
            self.container.reload()
            pid = int(self.container.attrs["State"]["Pid"])
            if pid > 0:
                return process_tree(pid)
        return set()

    def stop(self, timeout: float = 10.0) -> None:
        import docker.errors

        if self._exit_code is not None:
            return  # it has ended
        try:
            self.engine.call(lambda: self.container.stop(timeout=int(timeout)))
        except EngineError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise

    def remove(self) -> None:
        import docker.errors

        try:
            self.engine.call(lambda: self.container.remove(force=True))
        except EngineError as exc:
            if not isinstance(exc.__cause__, docker.errors.NotFound):
                raise

    def cleanup(self) -> None:
        if self._own_engine:
            self.engine.close()

    def verify(self) -> None:
        """``nvidia-smi -L`` inside the container (or, if it has already ended, inside a twin
        created exactly like it) must list exactly the planned devices."""
        where = f"container {self.container.short_id}"
        text = nvidia_smi_evidence(self.engine, self.container)
        if text is None:  # it ended before it could be entered
            text = self._twin_output()
            where = f"a twin of container {self.container.short_id} (which had already exited)"
        check_seen(self.plan, text, where)

    def _twin_output(self) -> str:
        """``nvidia-smi -L`` in a container created exactly like this one."""
        # Never auto-removed: its output is read after it ends.
        skip = ("name", "command", "auto_remove")
        kwargs = {k: v for k, v in self.create_kwargs.items() if k not in skip}
        engine = self.engine
        twin = engine.call(
            lambda: engine.client.containers.create(
                command=["-L"], entrypoint=["nvidia-smi"], **kwargs
            )
        )
        try:
            engine.call(twin.start)
            try:
                engine.once(lambda: twin.wait(timeout=TWIN_TIMEOUT_S))
            except EngineError as exc:
                raise VerificationError(
                    f"the verification twin of container {self.container.short_id} did not "
                    f"end within {TWIN_TIMEOUT_S}s"
                ) from exc
            return bytes(engine.call(lambda: twin.logs(stdout=True, stderr=True))).decode(
                errors="replace"
            )
        finally:
            with contextlib.suppress(Exception):
                twin.remove(force=True)


# -- the backend --------------------------------------------------------------------------

Pull = Literal["missing", "never"]


def image_capabilities(engine: Engine, image: str, pull: Pull = "missing") -> str | None:
    """The ``NVIDIA_DRIVER_CAPABILITIES`` an image declares (``all`` in many graphics and
    video images), None when it declares none. A missing image is pulled first, unless
    ``pull="never"`` (then None: creating the container reports the missing image)."""
    client = engine.client
    try:
        found = engine.call(lambda: client.images.get(image), image=image)
    except ImageNotFoundError:
        if pull == "never":
            return None
        engine.call(lambda: client.images.pull(image), image=image)
        found = engine.call(lambda: client.images.get(image), image=image)
    declared = None
    for entry in (found.attrs.get("Config") or {}).get("Env") or []:
        key, _, value = str(entry).partition("=")
        if key == "NVIDIA_DRIVER_CAPABILITIES":
            declared = value
    return declared


def capabilities_for(
    plan: RoutingPlan, declared: str | None, whose: str, notes: list[str] | None = None
) -> RoutingPlan:
    """The plan to render for work that declares ``declared`` driver capabilities: the
    work's own unless the caller chose some (``plan.capabilities_given``). Appends to
    ``notes`` what was kept, or replaced (old -> new)."""
    notes = notes if notes is not None else []
    chosen = ",".join(plan.driver_capabilities)
    if declared is None or not declared.strip():
        return plan
    if plan.capabilities_given:
        if declared != chosen:
            notes.append(
                f"NVIDIA_DRIVER_CAPABILITIES: {declared} ({whose}) -> {chosen} "
                "(driver_capabilities=)"
            )
        return plan
    caps = tuple(dict.fromkeys(c.strip().lower() for c in declared.split(",") if c.strip()))
    if not caps or not set(caps) <= DRIVER_CAPABILITIES:
        notes.append(
            f"{whose} NVIDIA_DRIVER_CAPABILITIES={declared!r} is not a list of driver "
            f"capabilities; used {chosen}"
        )
        return plan
    notes.append(f"kept {whose} NVIDIA_DRIVER_CAPABILITIES={declared}")
    return dataclasses.replace(plan, driver_capabilities=caps)


@dataclass(frozen=True)
class DockerWork(Work):
    """A container of ``image`` through docker-py. ``command`` may be empty (the image's own).

    ``pull``: ``"missing"`` pulls an image that is not on the engine, ``"never"`` does not;
    ``cdi``: request devices by CDI name; ``docker_kwargs``: more ``containers.create``
    keyword arguments (``volumes``, ``network_mode``, ``shm_size``, ...).
    """

    backend: ClassVar[str] = "docker"
    image: str = ""
    pull: Pull = "missing"
    cdi: bool = False
    docker_kwargs: Mapping[str, Any] = field(default_factory=dict)


class EngineBackend(Backend):
    """A backend whose work runs on a Docker engine: it keeps one connection, and asks the
    engine whether a holder's container exists."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """This backend's engine, connected on first use and kept."""
        if self._engine is None:
            self._engine = Engine(
                self.connection.docker_host,
                client=self.connection.docker_client,
                retry=self.connection.retry,
            )
        return self._engine

    def engine_says(self, holder: Holder) -> bool | None:
        """Whether the holder's container (``holder.id``: an id or a name) exists on its
        engine (``holder.where``); None when that engine is unknown or does not answer."""
        if holder.where == UNKNOWN_ENGINE:
            return None
        # This backend's own connection if it is open to that engine; else a short-lived one
        # that tries once: a probe must not wait out the retry policy on a dead engine.
        mine = (
            self._engine is not None
            and self._engine.connected
            and holder.where == self._engine.where
        )
        engine = (
            self.engine if mine else Engine(holder.where, retry=RetryPolicy(attempts=1), timeout=10)
        )
        try:
            return container_state(engine, holder.id)
        finally:
            if not mine:
                engine.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


class DockerBackend(EngineBackend):
    name = "docker"
    target = "container"

    def create_kwargs(
        self, plan: RoutingPlan, work: DockerWork, notes: list[str] | None = None
    ) -> dict[str, Any]:
        """Everything ``containers.create`` gets for ``work`` on ``plan``. The image's own
        driver capabilities are kept unless the caller chose some (``capabilities_given``);
        ``notes`` receives what was kept or replaced."""
        check_docker_kwargs(work.docker_kwargs)
        merge_env(work.env, {})  # refuses what only the plan may set, before the engine
        declared = image_capabilities(self.engine, work.image, work.pull)
        rendered = capabilities_for(plan, declared, "the image's", notes)
        kwargs = container_kwargs(rendered, cdi=work.cdi)
        kwargs["environment"] = merge_env(work.env, kwargs["environment"])
        labels = {
            **dict(work.docker_kwargs.get("labels") or {}),
            "gpuroute.spec": plan.spec,
            "gpuroute.devices": ",".join(plan.uuids),
            "gpuroute.launch": os.urandom(8).hex(),
        }
        return {
            **work.docker_kwargs,
            **kwargs,
            "image": work.image,
            "command": list(work.command) or None,
            "name": work.name or f"gpuroute-{os.urandom(6).hex()}",
            "labels": labels,
            "detach": True,
        }

    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        assert isinstance(work, DockerWork)
        notes: list[str] = []
        create_kwargs = self.create_kwargs(plan, work, notes)
        engine = self.engine
        container = self._create(engine, create_kwargs, work)
        handle = ContainerLaunch(plan, engine, container, create_kwargs, notes=notes)
        try:
            # The lease names the container before it can run: no moment in which the work
            # runs while the lease names only this (mortal) launcher.
            bind(Holder("docker", str(container.id), engine.holder_where()))
            engine.call(container.start, image=work.image)
            # And the container's init process, which outlives the engine's API: liveness is
            # then known even when the engine no longer answers.
            init = init_process(engine, container)
            if init is not None:
                bind(Holder("docker", str(container.id), engine.holder_where(), *init))
        except BaseException:
            handle.close()
            raise
        return handle

    @staticmethod
    def _create(engine: Engine, create_kwargs: Mapping[str, Any], work: DockerWork) -> Any:
        import docker.errors

        name, launch_id = create_kwargs["name"], create_kwargs["labels"]["gpuroute.launch"]
        client = engine.client  # connected (with its own retries) before the first call

        def create() -> Any:
            try:
                return client.containers.create(**create_kwargs)
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # the name is taken: by our own earlier try?
                    with contextlib.suppress(docker.errors.NotFound):
                        existing = client.containers.get(name)
                        if existing.labels.get("gpuroute.launch") == launch_id:
                            return existing  # a retried create that had succeeded
                raise

        try:
            return engine.call(create, image=work.image)
        except ImageNotFoundError:
            if work.pull == "never":
                raise
            engine.call(lambda: client.images.pull(work.image), image=work.image)
            return engine.call(create, image=work.image)

    def verify(self, handle: Launch) -> None:
        assert isinstance(handle, ContainerLaunch)
        handle.verify()

    def alive(self, holder: Holder) -> bool | None:
        """Whether a holder's container still exists (created, running, restarting or
        paused), as its engine says; when the engine cannot be asked, whether the
        container's init process (recorded at start, for an engine on this host) lives;
        None when neither can tell."""
        state = self.engine_says(holder)
        if state is None and holder.pid is not None:
            from gpuroute.backends.local import process_alive

            return process_alive(holder)
        return state


def init_process(engine: Engine, container: Any) -> tuple[int, int] | None:
    """The host pid and start time of a started container's init process, where this
    process can see it (an engine on this host, in our pid namespace); None otherwise."""
    from gpuroute.backends.local import process_start_time

    if not engine.where.startswith("unix://"):
        return None
    try:
        engine.call(container.reload)
        pid = int(container.attrs["State"]["Pid"])
    except (EngineError, KeyError, TypeError, ValueError):
        return None
    started = process_start_time(pid) if pid > 0 else None
    return (pid, started) if started is not None else None


def container_state(engine: Engine, container: str) -> bool | None:
    """Whether a container (id or name) exists and has not ended; None if unknown."""
    import docker.errors

    try:
        found = engine.client.containers.get(container)
        return bool(found.status in ("created", "running", "restarting", "paused"))
    except docker.errors.NotFound:
        return False
    except Exception:
        return None
