"""What only the plan may set (the GPU variables, GPU device nodes), and how a caller's own
environment is merged with a plan's.

A GPU device node is judged by what it is, not by its name: a character device whose major
number is NVIDIA's (195: ``/dev/nvidia0`` .. ``/dev/nvidiactl``) or one the kernel lists for
an ``nvidia*`` driver in ``/proc/devices`` (``nvidia-uvm``, ``nvidia-caps``, which are
numbered when the driver loads), wherever it lies and however its path is spelled
(``/dev/./nvidia0``, a symbolic link, a node made with ``mknod`` elsewhere). A directory
holds one when such a node lies beneath it. Paths that do not exist on this host (an engine
on another host) are judged by name: ``/dev/nvidia*`` after normalising the spelling."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gpuroute.errors import LaunchError

__all__ = [
    "NVIDIA_MAJOR",
    "OWNED",
    "PROC_DEVICES",
    "gpu_majors",
    "gpu_node_at",
    "is_gpu_device_node",
    "merge_env",
    "opens_gpu_devices",
    "strip_gpu_vars",
]

OWNED = frozenset(
    {
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
    }
)
"""Variables that only the plan may set: a caller's value would undo the routing."""

_GPU_PREFIXES = ("CUDA_", "NVIDIA_")
_GPU_NODE = re.compile(r"/dev/nvidia|nvidia\.com/gpu")

NVIDIA_MAJOR = 195
"""The character major of ``/dev/nvidia<N>``, ``/dev/nvidiactl`` and ``/dev/nvidia-modeset``."""

PROC_DEVICES = Path("/proc/devices")

WALK_LIMIT = 20_000
"""How many entries below a bind-mounted directory are looked at for GPU nodes."""


def gpu_majors(proc_devices: str | os.PathLike[str] | None = None) -> frozenset[int]:
    """NVIDIA's character majors on this host: 195, and every major ``/proc/devices`` lists
    for a driver whose name starts with ``nvidia`` (``nvidia-uvm``, ``nvidia-caps``,
    ``nvidia-frontend``, ``nvidia``)."""
    majors = {NVIDIA_MAJOR}
    try:
        text = Path(PROC_DEVICES if proc_devices is None else proc_devices).read_text(
            errors="replace"
        )
    except OSError:
        return frozenset(majors)
    section = ""
    for line in text.splitlines():
        if line.endswith(":"):
            section = line
            continue
        number, _, name = line.strip().partition(" ")
        if section.startswith("Character") and name.startswith("nvidia") and number.isdigit():
            majors.add(int(number))
    return frozenset(majors)


def _is_gpu_node(path: str, majors: frozenset[int]) -> bool:
    try:
        st = os.stat(path)  # follows symbolic links, as the engine does
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in majors


def _special_files(root: str) -> Iterator[str]:
    """Special files (devices, FIFOs, sockets) below ``root``, breadth first, among at most
    WALK_LIMIT entries. Regular files, directories and symbolic links are told apart by the
    directory entry alone (no stat); links are not followed: inside the container a link
    names the container's own path."""
    pending = [root]
    seen = 0
    while pending:
        try:
            with os.scandir(pending.pop(0)) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            seen += 1
            if seen > WALK_LIMIT:
                return
            try:
                if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
            except OSError:
                continue
            yield entry.path


def gpu_node_at(path: str, majors: frozenset[int] | None = None) -> str | None:
    """The GPU device node that a host path hands to a container, if any: the path itself
    (a GPU node, or a link to one), or one beneath it when it is a directory (``/dev``,
    ``/``, a directory holding a node made with mknod). By name (``/dev/nvidia*``) when
    the path does not exist on this host."""
    if not path.startswith("/"):
        return None  # a volume's name, not a host path
    majors = gpu_majors() if majors is None else majors
    normal = "/" + os.path.normpath(path).lstrip("/")  # POSIX keeps a leading //
    if not os.path.lexists(normal):
        return normal if normal.startswith("/dev/nvidia") else None
    if _is_gpu_node(normal, majors):
        return normal
    real = os.path.realpath(normal)
    if not os.path.isdir(real):
        return None
    if "/dev/".startswith(real.rstrip("/") + "/"):
        # / or /dev: it holds the host's own GPU nodes, if there are any.
        for node in sorted(os.listdir("/dev")):
            if _is_gpu_node(f"/dev/{node}", majors):
                return f"/dev/{node}"
        if real != "/dev":
            return None  # the root is not walked; its /dev was looked at
    for below in _special_files(real):
        if _is_gpu_node(below, majors):
            return below
    return None


def _device_source(entry: Any) -> str:
    """The host side of a device mapping: ``SRC[:DST[:PERMS]]``, or a mapping's
    ``source``/``PathOnHost``."""
    if isinstance(entry, Mapping):
        return str(entry.get("source") or entry.get("PathOnHost") or "")
    return str(entry).split(":", 1)[0]


def is_gpu_device_node(entry: Any, majors: frozenset[int] | None = None) -> bool:
    """Whether a device mapping (``docker run --device``, compose ``devices:``, as text or as
    a mapping) hands a GPU to the container directly, past the plan: a GPU device node by
    what it is (see the module), a directory holding one, or a CDI name of an NVIDIA GPU."""
    text = entry if isinstance(entry, str) else " ".join(str(v) for v in dict(entry).values())
    if _GPU_NODE.search(text):
        return True
    source = _device_source(entry)
    return bool(source) and gpu_node_at(source, majors) is not None


_CGROUP_RULE = re.compile(r"^\s*([abc])\s+(\d+|\*):(\d+|\*)\s+([rwm]+)\s*$")


def opens_gpu_devices(rule: str, majors: frozenset[int] | None = None) -> bool:
    """Whether a device cgroup rule (``c 195:* rwm``, ``a *:* rwm``, ``c *:* rw``) lets a
    container read or write GPU device nodes. A rule the engine would not accept either
    is left to the engine."""
    m = _CGROUP_RULE.match(str(rule))
    if m is None:
        return False
    kind, major, _, access = m.groups()
    if kind == "b" or not {"r", "w"} & set(access):
        return False
    if major == "*":
        return True
    return int(major) in (gpu_majors() if majors is None else majors)


def merge_env(user: Mapping[str, str] | None, plan_env: Mapping[str, str]) -> dict[str, str]:
    """The user's variables plus the plan's. A user variable that gpuroute owns is refused,
    naming it, rather than silently overridden or silently winning."""
    merged = dict(user or {})
    clash = sorted(OWNED & merged.keys())
    if clash:
        raise LaunchError(
            f"env sets {', '.join(clash)}, which gpuroute sets from the GPU spec; "
            "remove it and choose GPUs with gpus=... instead"
        )
    merged.update(plan_env)
    return merged


def strip_gpu_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without its CUDA_* and NVIDIA_* variables, so that nothing of
    the caller's own GPU selection reaches a container by accident (compose passes a
    variable listed without a value through from its own environment)."""
    return {k: v for k, v in environ.items() if not k.startswith(_GPU_PREFIXES)}
