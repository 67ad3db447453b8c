"""GPU utilisation of a campaign on a Ray cluster of two simulated nodes of 4 GPUs each.

Run: ``python benchmarks/bench_ray_campaign.py [--scale 1.0] [--json]`` (as for the other
engine benchmarks: the nodes are simulated hosts, each with its own private engine). Target:
at least 0.85.

The experiments are the shared synthetic set (``benchmarks/synthetic_campaign.py``: 24
experiments of 1, 2 and 4 GPUs, 2 to 12 seconds each), the set ``bench_campaign.py`` runs on
one host of 8 GPUs, run the same way (the vLLM runner in a subprocess, its ``vllm`` the
stand-in behind a wrapper that sleeps first and logs when it ran and on which GPUs), through
the campaign's Ray scheduler (``gpuroute.bench.ray_campaign.schedule``): each experiment a
Ray task that routes and leases what Ray gave it on its node, runs the runner there, and
returns its result for the driver to write. So:

* busy GPU-seconds: for each experiment, its GPUs times the time its tool ran;
* makespan: on the driver, from the first experiment handed to the cluster to the last
  result written;
* utilisation = busy GPU-seconds / (8 x makespan); no two experiments may hold one GPU at
  once (checked from the results' spans, by node and UUID).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_campaign import Progress, Recorder
from synthetic_campaign import (
    SYNTHETIC_SET,
    best_utilisation,
    campaign,
    install_tools,
    occupancy,
    todo,
)

from gpuroute.bench.campaign import Store, read_results
from gpuroute.bench.occupancy import overlaps, span_of
from gpuroute.bench.ray_campaign import NODE_LABEL, schedule
from gpuroute.testing.ray_cluster import LocalRayCluster, RayNodeSpec

TARGET = 0.85
GPUS = 8
NODES = (
    RayNodeSpec("h100-sxm-8", cuda_visible_devices="0,1,2,3"),
    RayNodeSpec("h100-sxm-8", cuda_visible_devices="4,5,6,7"),
)


def measure(scale: float, reverse: bool = False) -> dict[str, Any]:
    experiments = todo(scale)[:: -1 if reverse else 1]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        log = install_tools(root)  # before the nodes start: their workers inherit PATH
        out = root / "out"
        out.mkdir()
        with LocalRayCluster(NODES) as cluster:
            recorder = Recorder()
            begin = time.time()
            settings = campaign("utilisation-ray")
            schedule(
                settings, out, Store(out), experiments, Progress(recorder), None,
                address=cluster.address,
            )  # fmt: skip
            total = time.time() - begin
        results = read_results(out)
        run = occupancy(recorder.started, recorder.finished, log)  # the log goes with d
    failed = [r for r in results if r.status != "ok"]
    first, makespan, busy = run.first, run.makespan, run.busy
    spans = [s for s in map(span_of, results) if s is not None]
    per_node: dict[str, float] = {}
    for result, span in zip(results, map(span_of, results), strict=True):
        if span is not None:
            node = result.labels.get(NODE_LABEL, "?")[:12]
            per_node[node] = per_node.get(node, 0.0) + span.gpu_seconds
    return {
        "experiments": len(SYNTHETIC_SET),
        "results": len(results),
        "failed": [r.error for r in failed][:3],
        "scale": scale,
        "listed": "reversed" if reverse else "as in the set",
        "gpus": GPUS,
        "busy_gpu_s": round(busy, 2),
        "work_gpu_s": round(sum(e.gpus * e.seconds * scale for e in SYNTHETIC_SET), 2),
        "makespan_s": round(makespan, 2),
        "before_first_submission_s": round(first - begin, 2),
        "scheduler_call_s": round(total, 2),
        "utilisation": round(busy / (GPUS * makespan), 3),
        "best_possible": round(best_utilisation(GPUS), 3),
        "overlaps": len(overlaps(spans)),
        "run_gpu_s_per_node": {k: round(v, 1) for k, v in per_node.items()},
        "target": TARGET,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times each duration")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="hand the set over in reverse (1 GPU and shortest first, as a grid may list it)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = LocalRayCluster.unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print("starting a Ray cluster of two simulated nodes (about a minute)...", file=sys.stderr)
    found = measure(args.scale, args.reverse)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(
            f"{found['experiments']} experiments ({found['listed']}) on 2 nodes x 4 GPUs: makespan "
            f"{found['makespan_s']} s, busy {found['busy_gpu_s']} GPU-s (work "
            f"{found['work_gpu_s']}), utilisation {found['utilisation']:.3f} (target "
            f">= {TARGET}, best possible {found['best_possible']:.3f}); overlaps "
            f"{found['overlaps']}; {found['results']} results, failed {found['failed']}; "
            f"runs' GPU-s per node {found['run_gpu_s_per_node']}"
        )
    ok = found["utilisation"] >= TARGET and found["overlaps"] == 0 and not found["failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
