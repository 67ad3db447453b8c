"""Loading Ray, and reaching a cluster: the only places that import ``ray``.

Ray is an optional dependency (the ``ray`` extra): nothing in gpuroute imports it until a Ray
function is called, and a missing Ray is one clear error naming the extra.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from typing import Any

from gpuroute.errors import GpurouteError

__all__ = ["CONNECT_TIMEOUT_S", "RAY_ADDRESS_ENV", "RayError", "connect", "load_ray"]

RAY_ADDRESS_ENV = "RAY_ADDRESS"
CONNECT_TIMEOUT_S = 30.0
"""How long ``connect`` waits for a cluster's head node to answer, at most."""

_INSTALL = "pip install 'gpuroute[ray]'"


class RayError(GpurouteError):
    """Ray is missing, the cluster cannot be reached, or it cannot run the request."""


def load_ray() -> Any:
    """The ``ray`` module; a RayError naming the extra when it is not installed."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise RayError(f"Ray is not installed ({exc}); install it with `{_INSTALL}`") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a head node's GCS, or None for ``auto`` and ``ray://`` addresses."""
    if address == "auto" or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayError(
            f"the Ray address {address!r} is not HOST:PORT (the head node's address, as "
            "`ray start --head` prints it), `auto` or a ray:// address"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


def connect(address: str | None = None, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """Connect this process to a Ray cluster (once; later calls reuse the connection) and
    return the ``ray`` module.

    ``address``: the head node's ``HOST:PORT``, ``auto`` (the cluster started on this
    machine), or a ``ray://`` address; default ``RAY_ADDRESS``, else ``auto``. Never starts a
    cluster. A cluster that does not answer is a RayError within ``timeout_s`` seconds.
    """
    ray = load_ray()
    chosen = address or os.environ.get(RAY_ADDRESS_ENV, "").strip() or "auto"
    target = _host_port(chosen)  # a malformed address is refused, connected or not
    if ray.is_initialized():
        return ray
    if target is not None:
        _probe(chosen, target, timeout_s)
    try:
        ray.init(
            address=chosen,
            logging_level="warning",
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        raise RayError(
            f"cannot connect to the Ray cluster at {chosen}: {exc}. Start one with `ray start "
            f"--head` (see `gpuroute ray resources`), or name its head node with "
            f"{RAY_ADDRESS_ENV}=HOST:PORT"
        ) from None
    return ray


def _probe(address: str, target: tuple[str, int], timeout_s: float) -> None:
    """Fail fast, within ``timeout_s``, when nothing listens at the head node's address."""
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(target, timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            last = exc
            if isinstance(exc, ConnectionRefusedError):
                break  # nothing listens: waiting will not change that
            time.sleep(0.5)
    raise RayError(
        f"the Ray cluster at {address} does not answer ({last}); start its head node with "
        f"`ray start --head --port={target[1]}`, or name the right one with "
        f"{RAY_ADDRESS_ENV}=HOST:PORT"
    )
