"""The synthetic campaign of the utilisation benchmarks: one set, shared by every scheduler
measured on it (one host, a Ray cluster), so that their figures compare.

24 experiments, GPU counts 1, 2 and 4, durations from 2 to 12 seconds (times a scale),
listed in one fixed order (the order they are submitted in). The figure is GPU utilisation:
busy GPU-seconds divided by GPUs times makespan; ``best_utilisation`` is the most any
schedule can reach on a given number of GPUs (the work, or the longest experiment, bounds
the makespan from below).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYNTHETIC_SET", "SyntheticExperiment", "best_utilisation", "busy_gpu_seconds"]


@dataclass(frozen=True)
class SyntheticExperiment:
    name: str
    gpus: int
    seconds: float


def _set() -> tuple[SyntheticExperiment, ...]:
    shapes = [
        # (GPUs, seconds), in submission order: long and wide first, as a user would list
        # the expensive configurations of a sweep
        (4, 12), (4, 10), (4, 8), (4, 6),
        (2, 10), (2, 9), (2, 8), (2, 7), (2, 6), (2, 5), (2, 4), (2, 3),
        (1, 12), (1, 11), (1, 10), (1, 9), (1, 8), (1, 7),
        (1, 6), (1, 5), (1, 4), (1, 3), (1, 2), (1, 2),
    ]  # fmt: skip
    return tuple(
        SyntheticExperiment(f"e{n:02d}-{g}gpu-{s}s", g, float(s)) for n, (g, s) in enumerate(shapes)
    )


SYNTHETIC_SET = _set()


def busy_gpu_seconds(scale: float = 1.0) -> float:
    return sum(e.gpus * e.seconds * scale for e in SYNTHETIC_SET)


def best_utilisation(gpus: int) -> float:
    """The utilisation of a perfect schedule on ``gpus`` GPUs (no overhead, no gaps beyond
    those the longest experiment forces)."""
    work = busy_gpu_seconds()
    makespan = max(work / gpus, max(e.seconds for e in SYNTHETIC_SET))
    return work / (gpus * makespan)
