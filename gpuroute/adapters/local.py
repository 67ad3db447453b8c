"""A process on this host: its environment, and torchrun's argv."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from gpuroute.adapters.env import merge_env
from gpuroute.core.plan import RoutingPlan
from gpuroute.errors import LaunchError

__all__ = ["process_env", "torchrun_command"]


def process_env(
    plan: RoutingPlan, base: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for ``subprocess.Popen(..., env=...)``: ``base`` (usually
    ``os.environ``) less its own CUDA device selection, plus ``extra``, plus the plan's local
    view. Raises ContextError if the caller's context forbids a local process this plan."""
    local = plan.local_env  # raises ContextError when refused
    inherited = {k: v for k, v in base.items() if k not in local}
    inherited.pop("NVIDIA_VISIBLE_DEVICES", None)
    return {**inherited, **merge_env(extra, local)}


def torchrun_command(
    plan: RoutingPlan, command: Sequence[str], *, python: str = sys.executable
) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N COMMAND``: one
    worker per planned GPU; worker ``LOCAL_RANK`` i uses ``cuda:i``, the i-th GPU requested."""
    if not plan.devices:
        raise LaunchError("torchrun needs at least one GPU in the plan (gpus=... is empty)")
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(len(plan.devices)),
        *command,
    ]
