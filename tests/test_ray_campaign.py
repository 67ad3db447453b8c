"""Campaigns on a real two-node Ray cluster of simulated GPU hosts: every container sees
exactly its plan on its own node, no two experiments share a GPU in time, and a node lost
mid-campaign loses nothing and counts nothing twice."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from gpuroute.bench.campaign import expand, load_campaign, read_results
from gpuroute.bench.occupancy import overlaps, span_of
from gpuroute.bench.progress import Progress
from gpuroute.bench.ray_campaign import NODE_LABEL, run_on_ray
from gpuroute.bench.result import Result
from gpuroute.core.inventory import Inventory
from gpuroute.errors import BenchConfigError
from gpuroute.leases import LeaseDir
from gpuroute.testing.ray_cluster import LocalRayCluster
from tests.conftest import run_cli


def write_campaign(path: Path, **overrides: object) -> Path:
    campaign: dict[str, object] = {
        "name": "cluster-sweep",
        "execution": "container",
        "energy": {"interval_s": 0.02},
        "retry": {"attempts": 1, "backoff_s": 0},
        "lease_wait_s": 60,
        "grid": {"runner": "vllm", "model": "org/m", "gpus": ["any:1", "any:2"]},
        "fixed": {"input_len": 8, "output_len": 4, "num_prompts": 5},
    }
    campaign.update(overrides)
    grid = campaign["grid"]
    assert isinstance(grid, dict)
    fixed = campaign["fixed"]
    assert isinstance(fixed, dict)
    campaign["fixed"] = {k: v for k, v in fixed.items() if k not in grid}
    path.write_text(yaml.safe_dump(campaign))
    return path


def quiet(total: int) -> Progress:
    import io

    return Progress(total, io.StringIO())


def seen_in_container(result: Result) -> list[str]:
    """The devices the stand-in vLLM listed inside its container."""
    return re.findall(r"^visible cuda:\d+ (\S+)$", result.native_log_tail or "", re.M)


# -- refused before anything is submitted -------------------------------------------------


def test_a_cluster_campaign_names_gpu_counts_not_one_hosts_gpus(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "c.yaml", grid={"runner": "vllm", "model": "m", "gpus": "0"})
    with pytest.raises(BenchConfigError, match=r"gpus: '0' names GPUs of one host.*any:N"):
        run_on_ray(path, tmp_path / "out", address="127.0.0.1:1", progress=quiet(1))
    simulated = write_campaign(tmp_path / "s.yaml", host={"simulate": "h100-sxm-8"})
    with pytest.raises(BenchConfigError, match=r"remove host\.simulate"):
        run_on_ray(simulated, tmp_path / "out", address="127.0.0.1:1", progress=quiet(1))
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


# -- on the cluster -------------------------------------------------------------------------


def _inventories(cluster: LocalRayCluster) -> dict[str, Inventory]:
    return {n.node_id: n.inventory for n in cluster.nodes if n.node_id}


def _check_results(results: list[Result], nodes: dict[str, Inventory]) -> None:
    for result in results:
        assert result.status == "ok", result.error
        inventory = nodes[result.labels[NODE_LABEL]]
        planned = [d.uuid for d in result.routing.devices]
        assert set(planned) <= {g.uuid for g in inventory.gpus}  # its own node's GPUs
        assert sorted(seen_in_container(result)) == sorted(planned)  # exactly its plan
        # energy measured on that node, by UUID, for exactly those GPUs
        assert [g.uuid for g in result.energy.per_gpu] == planned
        assert result.energy.gpu_energy_j is not None
        assert result.energy.gpu_energy_j > 0
    spans = [s for s in map(span_of, results) if s is not None]
    assert len(spans) == len(results)
    assert overlaps(spans) == []  # no two experiments on one GPU at once


@pytest.mark.engine
def test_a_campaign_runs_on_the_cluster_from_the_command_line(
    gpuroute_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    path = write_campaign(
        tmp_path / "c.yaml",
        grid={
            "runner": "vllm",
            "model": "org/m",
            "gpus": ["any:1", "any:2"],
            "num_prompts": [5, 6],
        },
    )
    argv = ("campaign", "run", str(path), "--ray", gpuroute_ray_cluster.address)
    out = run_cli(*argv, "--output-dir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stdout + out.stderr
    results = read_results(tmp_path / "run")
    experiments = expand(load_campaign(path))
    assert sorted(r.labels["experiment"] for r in results) == sorted(e.id for e in experiments)
    _check_results(results, _inventories(gpuroute_ray_cluster))
    assert "GPU-seconds" in out.stdout  # the per-node table, after the summary
    for node in {r.labels[NODE_LABEL] for r in results}:
        assert node[:12] in out.stdout
    # Resuming finds every experiment done: nothing is submitted again.
    again = run_cli(*argv, "--output-dir", str(tmp_path / "run"))
    assert again.returncode == 0, again.stderr
    assert len(read_results(tmp_path / "run")) == len(results)


@pytest.mark.engine
def test_killing_the_worker_node_mid_campaign_loses_nothing(
    gpuroute_ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    worker = gpuroute_ray_cluster.nodes[1]
    killed = worker.node_id
    nodes = _inventories(gpuroute_ray_cluster)
    path = write_campaign(
        tmp_path / "c.yaml",
        repeats=4,
        grid={"runner": "vllm", "model": "org/m", "gpus": "any:1", "num_prompts": [5, 6]},
    )
    experiments = expand(load_campaign(path))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_on_ray(
                path,
                tmp_path / "run",
                address=gpuroute_ray_cluster.address,
                progress=quiet(len(experiments)),
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and thread.is_alive():
            held, _ = LeaseDir(worker.lease_dir).read()
            if any(r.holder.backend == "ray" for r in held.values()):
                break  # an experiment runs on the worker now
            time.sleep(0.05)
        else:
            pytest.fail("no experiment ran on the worker node")
        killed_at = time.time()
        gpuroute_ray_cluster.kill_node(1)
        thread.join(timeout=400)
        assert not thread.is_alive()
        assert errors == []
    finally:
        thread.join(timeout=60)
        gpuroute_ray_cluster.restart_node(1)  # the shared cluster, whole again for the next test
    results = read_results(tmp_path / "run")
    # Every experiment exactly once, and ok: what the lost node ran was never written, and
    # ran again on the node that was left.
    assert sorted(r.labels["experiment"] for r in results) == sorted(e.id for e in experiments)
    _check_results(results, nodes)
    late = [r for r in results if r.labels[NODE_LABEL] == killed and span_of(r) is not None]
    assert all(s.end <= killed_at for s in (span_of(r) for r in late) if s is not None)
    head = gpuroute_ray_cluster.nodes[0].node_id
    assert any(r.labels[NODE_LABEL] == head for r in results)
