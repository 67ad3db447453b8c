"""The shared-server commands and lease-backed launches: leases, limits, ls, doctor, and a
detached container that keeps its lease until it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpuroute
from gpuroute import CallerContext, DeviceLeasedError, Inventory
from gpuroute.cli import _ls, main
from gpuroute.core.selection import HostState
from gpuroute.doctor import diagnose, render
from gpuroute.limits import Policy
from gpuroute.nvml import read_state
from gpuroute.testing import FakeNVML, topology_path
from gpuroute.testing.engine import IMAGE, SimulatedGPUHost

NO_NET = {"network_mode": "none"}


def take(spec: str, inventory: Inventory, lease_dir: Path) -> gpuroute.Lease:
    return gpuroute.acquire(
        spec,
        inventory=inventory,
        lease_dir=lease_dir,
        state=HostState.unknown(),
        policy=Policy(),
        context=CallerContext(),
    )


def test_ls_says_why_a_gpu_is_not_offered(a100: Inventory) -> None:
    fake = FakeNVML(a100)
    fake.add_ecc_errors(3, 2)
    fake.start_process(321, 1, 100, mig=0)
    text = _ls(a100, read_state(a100, fake))
    row3 = next(line for line in text.splitlines() if line.startswith("3 "))
    assert "UNHEALTHY: 2 uncorrectable ECC error(s)" in row3
    mig10 = next(line for line in text.splitlines() if line.startswith("  1:0"))
    assert mig10.rstrip().endswith("busy: pid 321")


def test_leases_and_limits_commands(
    tmp_path: Path, a100: Inventory, capsys: pytest.CaptureFixture[str]
) -> None:
    take("1:2", a100, tmp_path)
    take("1:3", a100, tmp_path)
    inventory_args = ["--inventory", topology_path("a100-mig-4"), "--lease-dir", str(tmp_path)]
    assert main(["leases", *inventory_args]) == 0
    out = capsys.readouterr().out
    assert out.count("1/7") == 2
    assert "held" in out
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: {gpu_equivalents: 1, physical_gpus: 1}\n")
    assert main(["limits", *inventory_args, "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "hold 2/7 GPU-equivalents on 1 physical GPU(s)" in out
    assert "your limit: 1 GPU-equivalents, 1 physical GPU(s)" in out


def test_local_launch_with_a_lease(tmp_path: Path, h100: Inventory) -> None:
    code = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(30)"
    with gpuroute.launch(
        [sys.executable, "-c", code],
        gpus="any:2",
        inventory=h100,
        context=CallerContext(),
        lease=True,
        lease_dir=tmp_path,
    ) as run:
        assert isinstance(run, gpuroute.LocalLaunch)
        assert run.lease is not None
        assert [d.label for d in run.plan.devices] == ["0", "1"]
        assert run.lease.record.pid == run.process.pid  # the lease lives with the work
        with pytest.raises(DeviceLeasedError):
            take("1", h100, tmp_path)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.engine
def test_a_detached_container_keeps_then_frees_its_lease(
    engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
) -> None:
    run = gpuroute.launch(
        ["sleep", "60"],
        gpus="any:1",
        image=IMAGE,
        inventory=h100,
        lease=True,
        lease_dir=tmp_path,
        docker_kwargs=NO_NET,
    )
    assert isinstance(run, gpuroute.ContainerLaunch)
    device = run.plan.devices[0]
    container_id = run.container.id
    run.detach()
    run.close()  # the launcher lets go: the container runs on, and holds the lease
    with pytest.raises(DeviceLeasedError, match=f"container {container_id[:12]}"):
        take(device.label, h100, tmp_path)
    client = engine.client()
    try:
        client.containers.get(container_id).remove(force=True)
    finally:
        client.close()
    again = take(device.label, h100, tmp_path)
    assert any("container" in n and "is gone" in n for n in again.notes)
    again.release()


@pytest.mark.engine
def test_doctor_on_the_simulated_host(
    engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
) -> None:
    checks = diagnose(
        inventory=h100,
        docker_host=engine.base_url,
        image=IMAGE,
        lease_dir=str(tmp_path),
        nvml=FakeNVML(h100),
        environ={},
    )
    status = {c.name: c.status for c in checks}
    assert status["Docker engine"] == "ok"
    assert status["NVIDIA Container Toolkit"] == "ok"
    assert status["GPU health"] == "ok"
    assert "Nothing stops a launch." in render(checks)


@pytest.mark.engine
def test_doctor_finds_a_missing_toolkit(h100: Inventory, tmp_path: Path) -> None:
    with SimulatedGPUHost(h100, toolkit=False) as bare:
        checks = diagnose(
            inventory=h100,
            docker_host=bare.base_url,
            image=IMAGE,
            lease_dir=str(tmp_path),
            environ={},
        )
    toolkit = next(c for c in checks if c.name == "NVIDIA Container Toolkit")
    assert toolkit.status == "fail"
    assert "nvidia-ctk runtime configure" in toolkit.detail
    assert "A launch would fail" in render(checks)


def test_doctor_warns_about_mixed_models_and_empty_masks(
    workstation: Inventory, tmp_path: Path
) -> None:
    checks = diagnose(
        inventory=workstation,
        docker_host="unix:///nonexistent.sock",
        lease_dir=str(tmp_path),
        environ={"CUDA_VISIBLE_DEVICES": ""},
    )
    by_name = {c.name: c for c in checks}
    assert by_name["CUDA_DEVICE_ORDER"].status == "warn"
    assert "export CUDA_DEVICE_ORDER=PCI_BUS_ID" in by_name["CUDA_DEVICE_ORDER"].fix
    assert "reserves GPU compute for containers" in by_name["CUDA_VISIBLE_DEVICES"].detail
    assert by_name["Docker engine"].status == "fail"


def test_doctor_on_a_machine_without_any_driver() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpuroute", "doctor"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "DOCKER_HOST": "unix:///nonexistent.sock"},
        check=False,
        timeout=120,
    )
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        has_driver = True
    except Exception:
        has_driver = False
    assert result.returncode == 1
    if not has_driver:
        assert "[FAIL] GPU inventory: cannot start NVML" in result.stdout
        assert "GPUROUTE_INVENTORY" in result.stdout
    assert "[FAIL] Docker engine" in result.stdout


def test_doctor_does_not_judge_a_snapshots_gpus_by_this_hosts_nvml(tmp_path: Path) -> None:
    checks = diagnose(
        environ={"GPUROUTE_INVENTORY": topology_path("h100-sxm-8")},
        docker_host="unix:///nonexistent.sock",
        lease_dir=str(tmp_path),
    )
    health = next(c for c in checks if c.name == "GPU health")
    assert (health.status, "not this host's live NVML inventory" in health.detail) == ("info", True)


def test_no_lease_directory_means_no_leases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none"
    assert main(["leases", "--simulate", "h100-sxm-8", "--lease-dir", str(missing)]) == 0
    assert (
        f"No leases: the lease directory {missing} does not exist yet." in capsys.readouterr().out
    )
    assert not missing.exists()
