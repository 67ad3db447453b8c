"""gpuroute on Ray: resources from the inventory, faults, and a real two-node cluster of
simulated GPU hosts (``gpuroute_ray_cluster``), each node routing and leasing locally."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

import gpuroute.ray as gray
from gpuroute import Host
from gpuroute.backends.docker import DockerWork
from gpuroute.leases import LeaseDir
from gpuroute.ray.runtime import RayError
from gpuroute.testing import topology
from gpuroute.testing.engine import IMAGE
from gpuroute.testing.ray_cluster import LocalRayCluster, RayNode
from tests.conftest import run_cli

# -- without a cluster --------------------------------------------------------------------


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RayError) as info:
        gray.load_ray()
    message = str(info.value)
    assert "pip install 'gpuroute[ray]'" in message
    assert "\n" not in message


def test_resources_count_whole_gpus_and_each_mig_profile() -> None:
    found = gray.node_resources(topology("a100-mig-4"))
    inventory = topology("a100-mig-4")
    whole = [g.uuid for g in inventory.gpus if not g.mig_mode]
    assert found.num_gpus == 2
    assert found.resources == {
        "mig-1c.2g.20gb": 2,
        "mig-1g.10gb": 3,
        "mig-2g.20gb": 1,
        "mig-3g.40gb": 1,
        "mig-4g.40gb": 1,
    }
    # Ray hands out entries of the node's mask: exactly the GPUs not in MIG mode.
    assert found.cuda_visible_devices == ",".join(whole)
    h100 = gray.node_resources(topology("h100-sxm-8"))
    assert (h100.num_gpus, h100.resources, h100.cuda_visible_devices) == (8, {}, None)
    assert h100.argv() == ["--num-gpus", "8"]
    # Mixed models: CUDA counts the fastest first, so the node is started with UUIDs.
    mixed = gray.node_resources(topology("workstation-mixed"))
    assert mixed.cuda_visible_devices is not None
    assert mixed.cuda_visible_devices.startswith("GPU-")


def test_ray_resources_command_prints_ray_start_arguments() -> None:
    out = run_cli("ray", "resources", "--simulate", "a100-mig-4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["num_gpus"] == 2
    assert data["resources"]["mig-1g.10gb"] == 3
    assert data["argv"][:2] == ["--num-gpus", "2"]
    assert json.loads(data["argv"][3]) == data["resources"]
    text = run_cli("ray", "resources", "--simulate", "a100-mig-4")
    assert text.returncode == 0, text.stderr
    assert "ray start --head --num-gpus 2 --resources" in text.stdout
    assert "CUDA_VISIBLE_DEVICES=GPU-" in text.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_an_unreachable_cluster_is_a_clear_error_within_30s() -> None:
    # In a process of its own: this one may be connected to the session's cluster.
    code = (
        "import sys, gpuroute.ray as r\n"
        "try:\n"
        f"    r.connect('127.0.0.1:{_free_port()}')\n"
        "except r.RayError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert time.monotonic() - started < 30
    assert out.returncode == 3, out.stderr
    assert "does not answer" in out.stdout
    assert "RAY_ADDRESS" in out.stdout


def test_a_malformed_address_is_refused() -> None:
    with pytest.raises(RayError, match="HOST:PORT"):
        gray.connect("no-port-here")


# -- on a real cluster of two simulated hosts ---------------------------------------------


def _on(node: RayNode) -> dict[str, Any]:
    """Ray options that run a task on exactly this node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    assert node.node_id is not None
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}


def _holders(node: RayNode | str) -> dict[str, str]:
    path = node if isinstance(node, str) else node.lease_dir
    records, _ = LeaseDir(path).read()
    return {uuid: record.holder.backend for uuid, record in records.items()}


@pytest.mark.engine
def test_a_task_gets_the_node_gpus_ray_gave_it_leased_there(
    gpuroute_ray_cluster: LocalRayCluster,
) -> None:
    ray = gray.load_ray()
    head = gpuroute_ray_cluster.nodes[0]  # started with CUDA_VISIBLE_DEVICES=4,5,6,7
    head_leases = str(head.lease_dir)

    @ray.remote(num_gpus=2, num_cpus=0)
    def task() -> tuple[str, list[int], list[str], dict[str, str]]:
        import os

        with gray.here() as placement:
            held = _holders(head_leases)
            return (
                os.environ["CUDA_VISIBLE_DEVICES"],
                [d.gpu.index for d in placement.devices],
                [d.uuid for d in placement.plan.devices],
                held,
            )

    mask, indices, uuids, held = ray.get(task.options(**_on(head)).remote(), timeout=120)
    # Ray's entries are the node's own mask entries; on this one-model host they are NVML
    # indices, read in the task's CUDA order.
    assert [int(e) for e in mask.split(",")] == indices
    assert set(indices) <= {4, 5, 6, 7}
    assert held == dict.fromkeys(uuids, "ray")  # leased on the node, by a Ray holder
    assert _holders(head) == {}  # and given back when the task let go


@pytest.mark.engine
def test_a_container_launched_from_the_driver_sees_exactly_its_plan_on_its_node(
    gpuroute_ray_cluster: LocalRayCluster,
) -> None:
    work = DockerWork(command=("nvidia-smi", "-L"), image=IMAGE, verify=True)
    with gray.launch(work, gpus=2, start_timeout_s=120) as handle:
        assert isinstance(handle, gray.RayLaunch)
        node = gpuroute_ray_cluster.node(handle.node)
        planned = [d.uuid for d in handle.plan.devices]
        assert set(planned) <= {g.uuid for g in node.inventory.gpus}
        assert handle.wait(60) == 0
        seen = [line.split("UUID: ")[1].rstrip(")") for line in handle.logs().splitlines()]
        assert sorted(seen) == sorted(planned)
        assert set(_holders(node)) == set(planned)  # the node's lease holds them meanwhile
    assert _holders(node) == {}  # closing stopped the work and released the lease


@pytest.mark.engine
def test_a_local_non_ray_lease_is_respected(gpuroute_ray_cluster: LocalRayCluster) -> None:
    ray = gray.load_ray()
    worker = gpuroute_ray_cluster.nodes[1]  # two whole A100s for Ray
    whole = [g.uuid for g in worker.inventory.gpus if not g.mig_mode]
    local = Host(inventory=worker.inventory, lease_dir=worker.lease_dir)
    lease = local.acquire(",".join(whole))  # a local user, not on Ray, holds both

    @ray.remote(num_gpus=1, num_cpus=0)
    def task(wait_s: float) -> str:
        with gray.here(wait_s=wait_s) as placement:
            return placement.devices[0].uuid

    try:
        with pytest.raises(Exception, match=r"DeviceLeasedError"):
            ray.get(task.options(**_on(worker)).remote(0.0), timeout=120)
        waiting = task.options(**_on(worker)).remote(60.0)
        time.sleep(2)
        assert ray.wait([waiting], timeout=0)[0] == []  # still waiting for the local user
    finally:
        lease.release()
    assert ray.get(waiting, timeout=120) in whole


@pytest.mark.engine
def test_more_gpus_than_any_node_is_refused_before_submission(
    gpuroute_ray_cluster: LocalRayCluster,
) -> None:
    head = gpuroute_ray_cluster.nodes[0]
    assert head.node_id is not None
    work = DockerWork(command=("true",), image=IMAGE)
    with pytest.raises(RayError) as info:
        gray.launch(work, gpus=5)
    message = str(info.value)
    assert head.node_id[:12] in message
    assert "has 4" in message
    with pytest.raises(RayError, match=r"1g\.10gb"):
        gray.launch(work, gpus=4, mig_profile="1g.10gb")


@pytest.mark.engine
def test_tasks_asking_for_a_mig_profile_get_distinct_devices_of_it(
    gpuroute_ray_cluster: LocalRayCluster,
) -> None:
    ray = gray.load_ray()
    worker = gpuroute_ray_cluster.nodes[1]

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self) -> None:
            self.inside = 0

        def enter(self) -> None:
            self.inside += 1

        def count(self) -> int:
            return self.inside

    gate = Gate.remote()  # type: ignore[attr-defined]

    @ray.remote(num_cpus=0, resources={"mig-1g.10gb": 1})
    def task() -> tuple[str, str | None]:
        with gray.here() as placement:
            (device,) = placement.devices
            ray.get(gate.enter.remote())
            deadline = time.monotonic() + 90
            while ray.get(gate.count.remote()) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)  # all three hold theirs at once
            assert device.mig is not None
            return device.uuid, device.mig.profile

    found = ray.get([task.remote() for _ in range(3)], timeout=180)
    expected = {
        m.uuid for g in worker.inventory.gpus for m in g.mig_devices if m.profile == "1g.10gb"
    }
    assert {uuid for uuid, _ in found} == expected
    assert {profile for _, profile in found} == {"1g.10gb"}


@pytest.mark.engine
def test_a_node_whose_inventory_cannot_be_read_fails_the_task_with_the_reason(
    gpuroute_ray_cluster: LocalRayCluster,
) -> None:
    ray = gray.load_ray()

    @ray.remote(num_gpus=1, num_cpus=0)
    def task() -> None:
        gray.here()

    broken = {"env_vars": {"GPUROUTE_INVENTORY": "/nonexistent/inventory.json"}}
    with pytest.raises(Exception, match=r"nonexistent/inventory\.json"):
        ray.get(task.options(runtime_env=broken).remote(), timeout=120)
