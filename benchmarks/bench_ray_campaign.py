"""GPU utilisation of a campaign on a Ray cluster of two simulated nodes of 4 GPUs each.

Run: ``python benchmarks/bench_ray_campaign.py [--scale 1.0] [--json]`` (as for the other
engine benchmarks: the nodes are simulated hosts, each with its own private engine). Target:
at least 0.85.

The experiments are the shared synthetic set (``benchmarks/synthetic_campaign.py``: 24
experiments of 1, 2 and 4 GPUs, 2 to 12 seconds each). Each is submitted as a campaign
submits an experiment (``gpuroute.bench.ray_campaign.task_options``: ``num_gpus=N``, no CPU,
no Ray retry), all at once, in the set's order; on its node the task routes and leases what
Ray gave it (``gpuroute.ray.here``), holds the GPUs for the experiment's duration, and
releases them. The runner's own work is replaced by that hold, so the figure is the
scheduling's: Ray's placement, gpuroute's routing and leases on each node, and the driver
collecting results.

* busy GPU-seconds: for each experiment, its GPUs times the time from the task's start on
  its node to its release (routing and leasing count as busy);
* makespan: on the driver, from the first submission to the last result back;
* utilisation = busy GPU-seconds / (8 x makespan); no two experiments may hold one GPU at
  once (checked from the recorded spans, by node and UUID).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_campaign import SYNTHETIC_SET, best_utilisation

from gpuroute.bench.occupancy import Span, overlaps, utilisation
from gpuroute.bench.ray_campaign import task_options
from gpuroute.testing.ray_cluster import LocalRayCluster, RayNodeSpec

TARGET = 0.85
GPUS = 8
NODES = (
    RayNodeSpec("h100-sxm-8", cuda_visible_devices="0,1,2,3"),
    RayNodeSpec("h100-sxm-8", cuda_visible_devices="4,5,6,7"),
)


def hold(seconds: float) -> tuple[str, list[str], float, float]:
    """The task: route and lease what Ray gave it on its node, hold it, give it back."""
    import gpuroute.ray as gray

    start = time.time()
    with gray.here(wait_s=60) as placement:
        time.sleep(seconds)
        uuids = [d.uuid for d in placement.devices]
    return placement.node, uuids, start, time.time()


def measure(scale: float) -> dict[str, Any]:
    with LocalRayCluster(NODES) as cluster:
        import ray

        task = ray.remote(hold)
        started = time.time()
        refs = [
            task.options(**task_options(e.gpus, e.name)).remote(e.seconds * scale)
            for e in SYNTHETIC_SET
        ]
        spans = []
        for experiment, ref in zip(SYNTHETIC_SET, refs, strict=True):
            node, uuids, start, end = ray.get(ref, timeout=600)
            assert len(uuids) == experiment.gpus
            spans.append(Span(node, tuple(uuids), start, end, experiment.name))
        makespan = max(s.end for s in spans) - started
        last_back = time.time() - started
        clashes = overlaps(spans)
        per_node = {
            n.node_id[:12]: sum(s.gpu_seconds for s in spans if s.host == n.node_id)
            for n in cluster.nodes
            if n.node_id
        }
    figure = utilisation(spans, GPUS, max(makespan, last_back))
    return {
        "experiments": len(SYNTHETIC_SET),
        "scale": scale,
        "gpus": GPUS,
        "busy_gpu_s": round(sum(s.gpu_seconds for s in spans), 2),
        "work_gpu_s": round(sum(e.gpus * e.seconds * scale for e in SYNTHETIC_SET), 2),
        "makespan_s": round(max(makespan, last_back), 2),
        "utilisation": round(figure, 3),
        "best_possible": round(best_utilisation(GPUS), 3),
        "overlaps": len(clashes),
        "gpu_s_per_node": {k: round(v, 1) for k, v in per_node.items()},
        "target": TARGET,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times each duration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = LocalRayCluster.unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print("starting a Ray cluster of two simulated nodes (about a minute)...", file=sys.stderr)
    found = measure(args.scale)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(
            f"{found['experiments']} experiments on 2 nodes x 4 GPUs: makespan "
            f"{found['makespan_s']} s, busy {found['busy_gpu_s']} GPU-s (work "
            f"{found['work_gpu_s']}), utilisation {found['utilisation']:.3f} (target "
            f">= {TARGET}, best possible {found['best_possible']:.3f}); overlaps "
            f"{found['overlaps']}; per node {found['gpu_s_per_node']}"
        )
    ok = found["utilisation"] >= TARGET and found["overlaps"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
