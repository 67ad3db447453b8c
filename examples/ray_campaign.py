"""A small benchmark campaign on a Ray cluster: each experiment a Ray task on whichever node
has its GPUs, routed, leased and measured there; one results file on this machine.

    python examples/ray_campaign.py

With ``RAY_ADDRESS`` set it joins that cluster (its nodes started as ``gpuroute ray
resources`` prints; the vLLM image is pulled on them). Without it, it starts a cluster of
two simulated GPU hosts on this machine (a head of 4 H100s, a worker of 2 A100s and MIG
devices, each with its own private Docker Engine, inventory and leases; needs root and
Debian's docker.io and busybox-static), and stops it at the end.

It prints the summary table, the results per node, and the GPU utilisation of the run: busy
GPU-seconds divided by the cluster's GPUs times the makespan.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from gpuroute.bench.campaign import read_results
from gpuroute.bench.occupancy import overlaps, span_of, utilisation
from gpuroute.bench.progress import Progress
from gpuroute.bench.ray_campaign import node_table, run_on_ray
from gpuroute.bench.report import render_table, summarize

CAMPAIGN = {
    "name": "ray-sweep",
    "execution": "container",
    "retry": {"attempts": 2, "backoff_s": 1},
    "lease_wait_s": 600,
    "grid": {"runner": "vllm", "model": "org/m", "gpus": ["any:1", "any:2"], "num_prompts": [4, 8]},
    "fixed": {"input_len": 16, "output_len": 8},
}


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """The address of a cluster to run on: ``RAY_ADDRESS``'s, or a local one started here."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        yield address
        return
    from gpuroute.testing.ray_cluster import LocalRayCluster

    reason = LocalRayCluster.unavailable()
    if reason is not None:
        sys.exit(f"cannot start a local cluster of simulated hosts: {reason}")
    print("starting two simulated GPU hosts as a Ray cluster (about a minute)...", flush=True)
    with LocalRayCluster() as local:
        yield local.address


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gpuroute-ray-campaign-") as tmp, cluster() as addr:
        from gpuroute.ray import connect

        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(CAMPAIGN))
        gpus = int(connect(addr).cluster_resources().get("GPU", 0))
        started = time.time()
        directory = run_on_ray(path, Path(tmp) / "run", address=addr, progress=Progress(4))
        makespan = time.time() - started
        results = read_results(directory)
        print(render_table(summarize(results)))
        print()
        print(node_table(results))
        spans = [s for s in map(span_of, results) if s is not None]
        assert overlaps(spans) == [], "two experiments held one GPU at once"
        print(
            f"\nGPU utilisation: {utilisation(spans, gpus, makespan):.2f} "
            f"({sum(s.gpu_seconds for s in spans):.1f} busy GPU-seconds on {gpus} GPUs "
            f"over {makespan:.1f} s, start-up included)"
        )
        return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
