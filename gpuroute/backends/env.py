"""What only the plan may set (the GPU variables, GPU device nodes), and how a caller's own
environment is merged with a plan's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gpuroute.errors import LaunchError

__all__ = ["OWNED", "is_gpu_device_node", "merge_env", "strip_gpu_vars"]

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


def is_gpu_device_node(entry: Any) -> bool:
    """Whether a device mapping (``docker run --device``, compose ``devices:``, as text or as
    a mapping) hands a GPU to the container directly, past the plan."""
    text = entry if isinstance(entry, str) else " ".join(str(v) for v in dict(entry).values())
    return bool(_GPU_NODE.search(text))


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
