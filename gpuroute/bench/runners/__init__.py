"""The benchmark runners, and the one list of them.

Each runner is the module ``gpuroute.bench.runners.<name>``, which defines ``RUNNER``, a
``gpuroute.bench.runners.registry.Runner`` that gives its name, tool, job builder, command
line options, default execution and image, and ``run_<name>``, exported by
``gpuroute.bench``. To add a runner, write its module and add its name to ``RunnerName``
below: ``gpuroute bench``, campaign files, the result schema, ``gpuroute.bench`` and the
simulated host all find it here.

This module imports nothing, so that the result schema can name the runners cheaply.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["RUNNER_NAMES", "RunnerName"]

RunnerName = Literal["transformers", "vllm", "trtllm"]
"""The registered runners, in the order the command line lists them."""

RUNNER_NAMES: tuple[str, ...] = get_args(RunnerName)
