"""GPU utilisation of a single-host campaign, and the gaps between its experiments.

Run: ``python benchmarks/bench_campaign.py [max_parallel]``. Target (issue: speed where it
is lost): busy GPU-seconds / (GPUs x makespan) of at least 0.85 for a campaign of at least 24
synthetic experiments asking for 1, 2 and 4 GPUs, of mixed durations, on 8 GPUs.

The campaign runs for real on the simulated 8-GPU host (``host: {simulate: h100-sxm-8}``):
leases, routing, the energy monitor, the store. Each experiment is the vLLM runner in a
subprocess whose ``vllm`` is the project's stand-in (about one second of timed region)
behind a wrapper that first sleeps ``num_prompts / 10`` seconds (0.5, 1.5 or 3 s) and logs
when the tool ran and on which GPUs. So:

* busy GPU-seconds: for each experiment, the GPUs it was given times the time its tool ran;
* makespan: from the first experiment's start to the last result written (the campaign's
  setup before and its report and plots after are shown apart);
* gaps, per experiment, medians: from its start (a worker takes it) to the run's start
  (routing and the lease), from the run's start to the tool's start (the energy monitor and
  the process start), from the tool's end to the run's end (the monitor's last sample and
  the collection), and from the run's end to its result written (the store, synced).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from gpuroute.bench.campaign import read_results, run_campaign
from gpuroute.bench.result import Result

TARGET = 0.85
GPUS = 8
STAND_INS = Path(__file__).resolve().parent.parent / "gpuroute" / "testing" / "image"
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


class Recorder:
    """A campaign progress that records when each experiment was taken by a worker and
    when its result was written (by configuration: repeats share one)."""

    def __init__(self) -> None:
        self.started: dict[str, list[float]] = {}
        self.finished: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def started_at(self, name: str) -> None:
        with self._lock:
            self.started.setdefault(name, []).append(time.time())

    def finished_at(self, name: str) -> None:
        with self._lock:
            self.finished.setdefault(name, []).append(time.time())


class Progress:
    """What ``run_campaign`` calls on its progress, passed on to a Recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def started(self, name: str) -> None:
        self.recorder.started_at(name)

    def finished(self, name: str, ok: bool, seconds: float) -> None:
        self.recorder.finished_at(name)

    def skipped(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def unix(stamp: str | None) -> float:
    assert stamp is not None, "every result has its times"
    return dt.datetime.fromisoformat(stamp).timestamp()


def main() -> None:
    parallel = int(sys.argv[1]) if len(sys.argv) > 1 else GPUS
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        tools = root / "tools"
        tools.mkdir()
        log = root / "tool.log"
        wrapper = tools / "vllm"
        wrapper.write_text(WRAPPER.format(stand_in=STAND_INS / "vllm", log=log))
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{tools}{os.pathsep}{STAND_INS}{os.pathsep}{os.environ['PATH']}"
        campaign = {
            "name": "utilisation",
            "host": {"simulate": "h100-sxm-8"},
            "execution": "subprocess",
            "max_parallel": parallel,
            "repeats": 3,
            "retry": {"attempts": 1, "backoff_s": 0},
            "grid": {
                "runner": "vllm",
                "model": "org/m",
                "gpus": ["any:1", "any:2", "any:4"],
                "num_prompts": [5, 15, 30],
            },
            "fixed": {"input_len": 8, "output_len": 4},
        }
        file = root / "campaign.yaml"
        file.write_text(yaml.safe_dump(campaign))
        recorder = Recorder()
        begin = time.time()
        out = run_campaign(file, root / "out", progress=Progress(recorder))
        total = time.time() - begin
        results = read_results(out)
        report(results, recorder, log, total, begin, parallel)


def report(
    results: list[Result], recorder: Recorder, log: Path, total: float, begin: float, parallel: int
) -> None:
    tools = []
    for line in log.read_text().splitlines():
        start, end, *rest = line.split()
        devices = rest[0].split(",") if rest else []
        tools.append((float(start), float(end), len(devices)))
    failed = [r for r in results if r.status != "ok"]
    first = min(t for times in recorder.started.values() for t in times)
    last = max(t for times in recorder.finished.values() for t in times)
    makespan = last - first
    busy = sum((end - start) * n for start, end, n in tools)
    utilisation = busy / (GPUS * makespan)
    ideal = busy / GPUS
    gaps: dict[str, list[float]] = {"lease": [], "start": [], "stop": [], "write": []}
    by_tool = sorted(tools)
    for result in results:
        config = result.labels["config"]
        run_start, run_end = unix(result.started_at), unix(result.ended_at)
        taken = max(t for t in recorder.started[config] if t <= run_start + 0.01)
        written = min(t for t in recorder.finished[config] if t >= run_end - 0.01)
        # The tool run of this experiment: the one that started inside its run.
        inside = [(s, e) for s, e, _ in by_tool if run_start - 0.01 <= s <= run_end]
        gaps["lease"].append(run_start - taken)
        gaps["write"].append(written - run_end)
        if inside:
            s, e = min(inside, key=lambda t: t[0] - run_start)
            gaps["start"].append(s - run_start)
            gaps["stop"].append(run_end - e)
    print(
        f"{len(results)} experiments ({len(failed)} failed) on {GPUS} simulated GPUs, "
        f"max_parallel {parallel}; {len(tools)} tool runs"
    )
    print(f"busy GPU-seconds {busy:.1f}; at full use they would take {ideal:.1f} s")
    print(
        f"makespan {makespan:.1f} s (campaign call {total:.1f} s: setup "
        f"{first - begin:.1f} s, report and plots {begin + total - last:.1f} s)"
    )
    verdict = "met" if utilisation >= TARGET else "MISSED"
    print(f"GPU utilisation {utilisation:.3f} (target ≥ {TARGET}: {verdict})")
    print("gaps per experiment, median / max, ms:")
    names = {
        "lease": "taken by a worker -> run starts (route, lease)",
        "start": "run starts -> tool starts (energy monitor, process)",
        "stop": "tool ends -> run ends (last sample, collect)",
        "write": "run ends -> result written (store, fsync)",
    }
    for key, values in gaps.items():
        if values:
            print(
                f"  {names[key]:<52} {statistics.median(values) * 1000:8.1f} "
                f"{max(values) * 1000:8.1f}"
            )


if __name__ == "__main__":
    main()
