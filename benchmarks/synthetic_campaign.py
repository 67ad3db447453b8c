"""The synthetic campaign of the utilisation benchmarks: one set, shared by every scheduler
measured on it (one host: ``bench_campaign.py``; a Ray cluster: ``bench_ray_campaign.py``),
so that their figures compare.

24 experiments, GPU counts 1, 2 and 4, durations from 2 to 12 seconds (times a scale),
listed in one fixed order. The figure is GPU utilisation: busy GPU-seconds divided by GPUs
times makespan; ``best_utilisation`` is the most any schedule can reach on a given number
of GPUs (the work, or the longest experiment, bounds the makespan from below).

Both benchmarks run the set as a real campaign (``execution: subprocess``): each experiment
is the vLLM runner, whose ``vllm`` is the project's stand-in (one second of timed region)
behind a wrapper (``install_tools``) that first sleeps the rest of the experiment's duration
and logs when the tool ran and on which GPUs. So:

* busy GPU-seconds: for each experiment, the GPUs it was given times the time its tool ran
  (``tool_runs``);
* makespan: from the first experiment handed to a worker (one host) or to the cluster (Ray)
  to the last result written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SYNTHETIC_SET",
    "SyntheticExperiment",
    "best_utilisation",
    "busy_gpu_seconds",
    "campaign",
    "install_tools",
    "todo",
    "tool_runs",
]

STAND_INS = Path(__file__).resolve().parent.parent / "gpuroute" / "testing" / "image"
STAND_IN_S = 1.0
"""The stand-in ``vllm bench``'s own timed region; the wrapper sleeps the rest."""
WRAPPER = """#!/bin/sh
# The stand-in vllm, first sleeping num_prompts / 10 seconds; logs start, end and GPUs.
n=0; prev=""
for a in "$@"; do [ "$prev" = --num-prompts ] && n=$a; prev=$a; done
start=$(date +%s.%N)
sleep "$(awk -v n="$n" 'BEGIN {{ printf "%.2f", n / 10 }}')"
"{stand_in}" "$@"; code=$?
end=$(date +%s.%N)
echo "$start $end ${{CUDA_VISIBLE_DEVICES:-}}" >> "{log}"
exit $code
"""


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


def install_tools(root: Path) -> Path:
    """Put the wrapper ``vllm`` first on this process's PATH (a Ray node started after
    inherits it); returns the log it appends each tool run to."""
    tools = root / "tools"
    tools.mkdir()
    log = root / "tool.log"
    wrapper = tools / "vllm"
    wrapper.write_text(WRAPPER.format(stand_in=STAND_INS / "vllm", log=log))
    wrapper.chmod(0o755)
    os.environ["PATH"] = f"{tools}{os.pathsep}{STAND_INS}{os.pathsep}{os.environ['PATH']}"
    return log


def campaign(name: str, *, simulate: str | None = None, max_parallel: int = 1) -> Any:
    """The campaign settings the set runs under (one attempt, no lease wait beyond a
    minute)."""
    from gpuroute.bench.campaign import Campaign

    return Campaign.model_validate(
        {
            "name": name,
            "host": {"simulate": simulate},
            "execution": "subprocess",
            "max_parallel": max_parallel,
            "retry": {"attempts": 1, "backoff_s": 0},
            "lease_wait_s": 60,
            "grid": {"runner": "vllm", "model": "org/m", "gpus": "any:1"},
        }
    )


def todo(scale: float = 1.0) -> list[tuple[Any, int]]:
    """The set as a campaign's experiments left to run (none attempted yet), in the set's
    order: ``any:N`` GPUs, ``num_prompts`` ten times the seconds the wrapper sleeps."""
    from gpuroute.bench.campaign import Experiment

    if min(e.seconds for e in SYNTHETIC_SET) * scale < STAND_IN_S:
        raise SystemExit(f"--scale {scale}: the shortest experiment would be under 1 s")
    experiments = []
    for e in SYNTHETIC_SET:
        params = {
            "model": "org/m",
            "num_prompts": round((e.seconds * scale - STAND_IN_S) * 10),
            "input_len": 8,
            "output_len": 4,
        }
        digest = hashlib.sha256(e.name.encode()).hexdigest()[:12]
        experiments.append((Experiment(digest, "vllm", f"any:{e.gpus}", params, 0), 0))
    return experiments


def tool_runs(log: Path) -> list[tuple[float, float, int]]:
    """Each tool run the wrapper logged: its start, its end and its number of GPUs."""
    runs = []
    for line in log.read_text().splitlines():
        start, end, *rest = line.split()
        devices = rest[0].split(",") if rest else []
        runs.append((float(start), float(end), len(devices)))
    return runs


@dataclass(frozen=True)
class Occupancy:
    """A run's figures: the first experiment's start and the last result's time (from the
    progress recorder), the makespan between them and the busy GPU-seconds (from the log)."""

    first: float
    last: float
    busy: float

    @property
    def makespan(self) -> float:
        return self.last - self.first

    def utilisation(self, gpus: int) -> float:
        return self.busy / (gpus * self.makespan)


def occupancy(
    started: dict[str, list[float]], finished: dict[str, list[float]], log: Path
) -> Occupancy:
    """``Occupancy`` of a run from its recorder's start and finish times and its tool log."""
    return Occupancy(
        first=min(t for times in started.values() for t in times),
        last=max(t for times in finished.values() for t in times),
        busy=sum((end - start) * n for start, end, n in tool_runs(log)),
    )
