"""Backends: each module is one way of running work, and owns all of it.

    base        the Backend interface, the Launch handle, Work and Connection
    local       a process on this host (subprocess, torchrun); process lease holders
    docker      a container through docker-py: engine connection, retries, engine errors,
                create arguments, handle, verification, container lease holders
    compose     ``compose run`` of a service on a generated configuration
    docker_cli  argv for ``docker run`` (rendering only: gpuroute never runs it)
    env         the variables only the plan may set, shared by all of them

The Ray backend (``gpuroute.ray.backend``) lives above the host, as it routes on each node
through a host of its own; it is registered here by name all the same.

A backend is a ``Backend`` subclass in its own module, registered in ``BACKENDS`` below by
name: adding one is one module and one line. Modules are imported when first used, so
``import gpuroute`` stays light.
"""

from __future__ import annotations

import importlib

from gpuroute.backends.base import Backend, Bind, Connection, Launch, Work, unbound

__all__ = [
    "BACKENDS",
    "Backend",
    "Bind",
    "Connection",
    "Launch",
    "Work",
    "backend_class",
    "unbound",
]

BACKENDS: dict[str, str] = {
    "local": "gpuroute.backends.local:LocalBackend",
    "docker": "gpuroute.backends.docker:DockerBackend",
    "compose": "gpuroute.backends.compose:ComposeBackend",
    "ray": "gpuroute.ray.backend:RayBackend",
}
"""Every backend, by the name that work and lease holders use: ``module:class``."""


def backend_class(name: str) -> type[Backend]:
    """The registered backend called ``name``; LookupError naming the known ones if none."""
    try:
        module, _, attribute = BACKENDS[name].partition(":")
    except KeyError:
        raise LookupError(
            f"no backend {name!r}; the backends are {', '.join(sorted(BACKENDS))}"
        ) from None
    found: type[Backend] = getattr(importlib.import_module(module), attribute)
    return found
