"""LLM benchmarks on exactly the routed GPUs, with their energy measured on the host.

* ``run_transformers``, ``run_vllm``, ``run_trtllm`` (``run_NAME`` for each runner listed
  in ``gpuroute.bench.runners``): one benchmark run, returning a ``Result`` (schema
  ``gpuroute.bench.result/1``); ``RunOptions`` says where it runs (GPUs, in-process,
  subprocess or container, leases, energy sampling).
* ``EnergyMonitor``: NVML energy, power and memory of the routed GPUs, by UUID.
* ``run_campaign``, ``report_campaign``: a grid of runs with leases, resumable, summarised
  in a table and plots.

Importing this package imports none of pydantic, torch, docker or pynvml: each name is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuroute.bench.runners import RUNNER_NAMES

if TYPE_CHECKING:
    from gpuroute.bench.campaign import report_campaign, run_campaign
    from gpuroute.bench.energy import EnergyMonitor
    from gpuroute.bench.result import SCHEMA, Result
    from gpuroute.bench.runners.common import RunOptions
    from gpuroute.bench.runners.transformers import run_transformers
    from gpuroute.bench.runners.trtllm import run_trtllm
    from gpuroute.bench.runners.vllm import run_vllm

__all__ = [
    "SCHEMA",
    "EnergyMonitor",
    "Result",
    "RunOptions",
    "report_campaign",
    "run_campaign",
    "run_transformers",
    "run_trtllm",
    "run_vllm",
]

_LAZY = {  # imported on first use: the transformers worker runs as a module of this package
    "SCHEMA": "gpuroute.bench.result",
    "Result": "gpuroute.bench.result",
    "EnergyMonitor": "gpuroute.bench.energy",
    "RunOptions": "gpuroute.bench.runners.common",
    "run_campaign": "gpuroute.bench.campaign",
    "report_campaign": "gpuroute.bench.campaign",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    runner = name.removeprefix("run_")
    if runner != name and runner in RUNNER_NAMES:  # each runner's module defines run_NAME
        return getattr(importlib.import_module(f"gpuroute.bench.runners.{runner}"), name)
    raise AttributeError(f"module 'gpuroute.bench' has no attribute {name!r}")
