"""Summary statistics for latency samples, with the percentile method named.

Pure functions over plain floats (no numpy): ``numpy_linear`` is numpy's default
``percentile`` (linear interpolation between closest ranks), which vLLM and
optimum-benchmark use; ``nearest_rank`` is TensorRT-LLM's ``sorted[int(n * q)]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from gpuroute.bench.result import Stats

__all__ = ["PercentileMethod", "percentile", "summarize"]

PercentileMethod = Literal["numpy_linear", "nearest_rank"]


def percentile(
    values: Sequence[float], q: float, method: PercentileMethod = "numpy_linear"
) -> float:
    """The ``q``-th percentile (0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    n = len(ordered)
    if method == "nearest_rank":
        return ordered[min(int(n * q / 100.0), n - 1)]
    position = (n - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, n - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def summarize(values: Sequence[float], method: PercentileMethod = "numpy_linear") -> Stats | None:
    """Count, mean, population standard deviation, extremes and p50/p90/p95/p99, or None for
    no samples: an absent measurement is null, never zero."""
    if not values:
        return None
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
    return Stats(
        count=n,
        mean=mean,
        std=std,
        min=min(values),
        max=max(values),
        p50=percentile(values, 50, method),
        p90=percentile(values, 90, method),
        p95=percentile(values, 95, method),
        p99=percentile(values, 99, method),
    )
