"""Every example runs as a script, here on the simulated host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpuroute import Inventory
from gpuroute.testing import topology, topology_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **(env or {})},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_plan_a_request_runs_on_a_snapshot() -> None:
    out = run_example("plan_a_request.py", {"GPUROUTE_INVENTORY": topology_path("h100-sxm-8")})
    assert "'CUDA_VISIBLE_DEVICES': '1,0'" in out
    assert "cuda:0 in the container is host GPU 3" in out


@pytest.mark.engine
def test_pinned_container(h100: Inventory) -> None:
    out = run_example("pinned_container.py")
    assert f"cuda:0 {h100.gpus[3].uuid}" in out  # the stand-in CUDA inside the container
    assert f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[1].uuid})" in out


@pytest.mark.engine
def test_compose_service(h100: Inventory) -> None:
    out = run_example("compose_service.py")
    assert f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[2].uuid})" in out
    assert "GPU 1:" not in out
    assert "note: replaced the GPU reservation" in out


@pytest.mark.engine
def test_zero_gpu() -> None:
    out = run_example("zero_gpu.py")
    assert "NVIDIA_VISIBLE_DEVICES=void CUDA_VISIBLE_DEVICES=[]" in out
    assert "UUID" not in out


def test_torchrun_job(h100: Inventory) -> None:
    pytest.importorskip("torch", reason="the torch extra is not installed")
    out = run_example("torchrun_job.py", {"GPUROUTE_INVENTORY": topology_path("h100-sxm-8")})
    assert f"worker 0: cuda:0 is {h100.gpus[5].uuid}" in out
    assert f"worker 1: cuda:1 is {h100.gpus[2].uuid}" in out
    assert "all_reduce sum 3" in out


def test_energy_per_token_measures_the_routed_gpus_on_the_simulated_host() -> None:
    out = run_example("energy_per_token.py", {"HOME": os.environ.get("HOME", "/tmp")})
    h100 = topology("h100-sxm-8")
    assert "128 output tokens" in out
    assert f"GPU 3 {h100.gpus[3].uuid}:" in out
    assert f"GPU 1 {h100.gpus[1].uuid}:" in out
    assert "J per output token" in out


@pytest.mark.engine
def test_ray_campaign_runs_on_a_local_cluster_of_two_simulated_hosts() -> None:
    inherited = {k: os.environ[k] for k in ("HOME", "PYTHONPATH") if k in os.environ}
    out = run_example("ray_campaign.py", inherited)
    assert "node          ok  failed  GPU-seconds" in out  # the results per node
    rows = re.findall(r"^([0-9a-f]{12}) +(\d+) +(\d+) +[\d.]+$", out, re.M)
    assert rows
    assert sum(int(ok) for _, ok, _ in rows) == 4  # every experiment, once, ok
    assert all(failed == "0" for _, _, failed in rows)
    found = re.search(r"^GPU utilisation: (\d+\.\d\d) ", out, re.M)
    assert found is not None, out
    assert 0 < float(found[1]) <= 1
