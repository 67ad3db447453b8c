"""Talking to the Docker engine: a client that honours DOCKER_HOST, bounded jittered retries
of transient failures, and engine errors turned into gpuroute errors that say what to do."""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpuroute.core.plan import DRIVER_CAPABILITIES
from gpuroute.errors import (
    EngineError,
    EnginePermissionError,
    EngineUnavailableError,
    ImageNotFoundError,
    ToolkitDeviceError,
    ToolkitMissingError,
)

__all__ = ["RetryPolicy", "call", "connect", "translate"]

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
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _text(exc: BaseException) -> str:
    return " | ".join(str(e) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the engine is restarting, overloaded or slow."""
    import docker.errors
    import requests.exceptions

    if is_permission_denied(exc):
        return False
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

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(is_transient),
        sleep=retry.sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
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
