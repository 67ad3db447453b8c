"""GPU utilisation of a single-host campaign, and the gaps between its experiments.

Run: ``python benchmarks/bench_campaign.py [max_parallel]``. Target (issue: speed where it
is lost): busy GPU-seconds / (GPUs x makespan) of at least 0.85 for a campaign of at least 24
synthetic experiments asking for 1, 2 and 4 GPUs, of mixed durations, on 8 GPUs.

The experiments are the shared synthetic set (``benchmarks/synthetic_campaign.py``: 24
experiments of 1, 2 and 4 GPUs, 2 to 12 s each), the set ``bench_ray_campaign.py`` runs on
two nodes of 4 GPUs. They run for real on the simulated 8-GPU host
(``host: {simulate: h100-sxm-8}``), through the campaign's own scheduler: leases, routing,
the energy monitor, the store. Each is the vLLM runner in a subprocess whose ``vllm`` is the
project's stand-in behind a wrapper that sleeps first and logs when the tool ran and on
which GPUs. So:

* busy GPU-seconds: for each experiment, the GPUs it was given times the time its tool ran;
* makespan: from the first experiment's start to the last result written;
* gaps, per experiment, medians: from its start (a worker takes it) to the run's start
  (routing and the lease), from the run's start to the tool's start (the energy monitor and
  the process start), from the tool's end to the run's end (the monitor's last sample and
  the collection), and from the run's end to its result written (the store, synced).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_campaign import (
    best_utilisation,
    campaign,
    install_tools,
    occupancy,
    todo,
    tool_runs,
)

from gpuroute.bench.campaign import Store, _schedule, read_results
from gpuroute.bench.occupancy import overlaps, span_of
from gpuroute.bench.result import Result
from gpuroute.bench.simhost import SimulatedBenchHost

TARGET = 0.85
GPUS = 8


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
        log = install_tools(root)
        settings = campaign("utilisation", simulate="h100-sxm-8", max_parallel=parallel)
        out = root / "out"
        out.mkdir()
        recorder = Recorder()
        sim = SimulatedBenchHost("h100-sxm-8", lease_root=out)
        begin = time.time()
        try:
            _schedule(settings, sim, out, Store(out), todo(), Progress(recorder), None)
        finally:
            sim.close()
        total = time.time() - begin
        results = read_results(out)
        report(results, recorder, log, total, begin, parallel)


def report(
    results: list[Result], recorder: Recorder, log: Path, total: float, begin: float, parallel: int
) -> None:
    tools = tool_runs(log)
    failed = [r for r in results if r.status != "ok"]
    run = occupancy(recorder.started, recorder.finished, log)
    first, last, makespan, busy = run.first, run.last, run.makespan, run.busy
    utilisation = run.utilisation(GPUS)
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
        f"makespan {makespan:.1f} s (scheduler call {total:.1f} s: before the first start "
        f"{first - begin:.1f} s, after the last result {begin + total - last:.1f} s)"
    )
    verdict = "met" if utilisation >= TARGET else "MISSED"
    spans = [s for s in map(span_of, results) if s is not None]
    print(
        f"GPU utilisation {utilisation:.3f} (target ≥ {TARGET}: {verdict}; best possible "
        f"{best_utilisation(GPUS):.3f}); overlaps {len(overlaps(spans))}"
    )
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
