"""The host object: what it reads once, what makes it read again, the one route of every
request, and backends as the one place a way of running work plugs in."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

import gpuroute
from gpuroute import CallerContext, DeviceLeasedError, Host, Inventory, MIGModeError
from gpuroute.backends import BACKENDS, Backend, Bind, Launch, Work, backend_class
from gpuroute.core.plan import RoutingPlan
from gpuroute.core.spec import parse_spec
from gpuroute.records import Holder
from gpuroute.testing import FakeNVML, topology


class CountingNVML(FakeNVML):
    """FakeNVML that counts full inventory reads (the only reader of GPU names)."""

    def __init__(self, inventory: Inventory) -> None:
        super().__init__(inventory)
        self.name_reads = 0

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self.name_reads += 1
        return super().nvmlDeviceGetName(handle)


def without_mig_on_gpu1(inventory: Inventory) -> Inventory:
    """The same host after an administrator turned MIG off on GPU 1."""
    gpu1 = replace(inventory.gpus[1], mig_mode=False, mig_devices=())
    return replace(inventory, gpus=(inventory.gpus[0], gpu1, *inventory.gpus[2:]))


def test_a_host_reads_its_inventory_once() -> None:
    fake = CountingNVML(topology("h100-sxm-8"))
    host = Host(nvml=fake, context=CallerContext(), recheck_s=3600)
    first = host.plan("3,1")
    reads = fake.name_reads
    assert reads > 0
    for _ in range(20):
        assert host.plan("3,1").uuids == first.uuids
    assert fake.name_reads == reads


def test_a_changed_layout_is_read_again(tmp_path: Path) -> None:
    a100 = topology("a100-mig-4")
    fake = CountingNVML(a100)
    host = Host(nvml=fake, context=CallerContext(), recheck_s=3600, lease_dir=tmp_path)
    with pytest.raises(MIGModeError):
        host.plan("1")
    fake.repartition(without_mig_on_gpu1(a100))
    # Within recheck_s, plan keeps the inventory it holds ...
    with pytest.raises(MIGModeError):
        host.plan("1")
    # ... an acquisition always asks NVML whether the layout changed ...
    with host.acquire("1") as lease:
        assert lease.plan.uuids == (a100.gpus[1].uuid,)
    assert host.plan("1").uuids == (a100.gpus[1].uuid,)
    # ... and recheck_s=0 asks at every plan, reading the whole inventory only on a change.
    eager = Host(nvml=fake, context=CallerContext(), recheck_s=0)
    eager.plan("1")
    reads = fake.name_reads
    eager.plan("3")
    assert fake.name_reads == reads
    fake.repartition(a100)
    with pytest.raises(MIGModeError):
        eager.plan("1")
    assert fake.name_reads > reads


def test_refresh_reads_again_and_a_given_inventory_stays(h100: Inventory) -> None:
    fake = CountingNVML(topology("a100-mig-4"))
    host = Host(nvml=fake, context=CallerContext(), recheck_s=3600)
    host.plan("1:0")
    fake.repartition(without_mig_on_gpu1(topology("a100-mig-4")))
    assert not host.refresh().gpus[1].mig_mode
    given = Host(inventory=h100, nvml=fake, context=CallerContext())
    assert given.refresh() is h100


def test_the_default_host_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h100, a100 = topology("h100-sxm-8"), topology("a100-mig-4")
    first, second = tmp_path / "h100.json", tmp_path / "a100.json"
    h100.save(first)
    a100.save(second)
    monkeypatch.setenv("GPUROUTE_INVENTORY", str(first))
    assert gpuroute.plan("3").uuids == (h100.gpus[3].uuid,)
    monkeypatch.setenv("GPUROUTE_INVENTORY", str(second))
    assert gpuroute.plan("3").uuids == (a100.gpus[3].uuid,)
    # The same file, rewritten: read again.
    h100.save(second)
    os.utime(second, ns=(1, 1))
    assert gpuroute.plan("3").uuids == (h100.gpus[3].uuid,)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert gpuroute.plan("3").context.cuda_visible_devices == "2"


def test_a_policy_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: {gpu_equivalents: 1, physical_gpus: 1}\n")
    host = Host(
        inventory=topology("h100-sxm-8"),
        context=CallerContext(),
        lease_dir=tmp_path / "leases",
        environ={"GPUROUTE_POLICY": str(policy)},
    )
    with host.acquire("0"), pytest.raises(gpuroute.LimitExceededError):
        host.acquire("1")
    policy.write_text("default: {gpu_equivalents: 2, physical_gpus: 2}\n")
    os.utime(policy, ns=(2, 2))
    with host.acquire("0"), host.acquire("1") as second:
        assert second.plan.uuids == (topology("h100-sxm-8").gpus[1].uuid,)


def test_one_route_for_plans_leases_and_plans_already_made(tmp_path: Path) -> None:
    h100 = topology("h100-sxm-8")
    host = Host(inventory=h100, context=CallerContext(), lease_dir=tmp_path)
    planned = host.route("3,1")
    assert (planned.lease, planned.own) == (None, False)
    assert planned.plan.uuids == (h100.gpus[3].uuid, h100.gpus[1].uuid)
    assert host.route(planned.plan).plan is planned.plan
    assert host.route(parse_spec("3,1")).plan.uuids == planned.plan.uuids
    taken = host.route("any:2", lease=True)
    assert taken.lease is not None
    assert taken.own
    assert taken.plan is taken.lease.plan
    again = host.route("ignored", lease=taken.lease)
    assert (again.lease, again.own) == (taken.lease, False)
    with pytest.raises(DeviceLeasedError):
        host.route(taken.plan.spec, lease=True)
    taken.release()
    assert host.route(taken.plan.spec, lease=True).lease is not None


# -- a backend is one module and one registration line -------------------------------------

_RUNNING: dict[str, threading.Thread] = {}


@dataclass(frozen=True)
class ThreadWork(Work):
    """Work that runs a function in a thread of this process: a backend of another kind
    than a process or a container (as a Ray task would be)."""

    backend: ClassVar[str] = "thread"
    target_fn: Any = None


class ThreadLaunch(Launch):
    kind = "thread"

    def __init__(self, plan: RoutingPlan, thread: threading.Thread) -> None:
        super().__init__(plan)
        self.thread = thread

    @property
    def id(self) -> str:
        return self.thread.name

    def wait(self, timeout: float | None = None) -> int:
        self.thread.join(timeout)
        return 0

    def logs(self) -> str:
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)


class ThreadBackend(Backend):
    name = "thread"
    target = "local"

    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        assert isinstance(work, ThreadWork)
        thread = threading.Thread(target=work.target_fn, args=(plan,), name=os.urandom(4).hex())
        _RUNNING[thread.name] = thread
        bind(Holder("thread", thread.name, None))  # before the work can run
        thread.start()
        return ThreadLaunch(plan, thread)

    def alive(self, holder: Holder) -> bool | None:
        thread = _RUNNING.get(holder.id)
        return None if thread is None else thread.is_alive()


@pytest.fixture
def thread_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(BACKENDS, "thread", f"{__name__}:ThreadBackend")
    yield
    _RUNNING.clear()


def test_unknown_backends_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        LookupError, match="no backend 'kubernetes'; the backends are compose, docker, local, ray"
    ):
        backend_class("kubernetes")
    # A lease held by a backend this host does not know is kept, never guessed gone.
    host = Host(inventory=topology("h100-sxm-8"), context=CallerContext(), lease_dir=tmp_path)
    assert host.alive(Holder("kubernetes", "task-1", "node-2")) is None


@pytest.mark.usefixtures("thread_backend")
def test_a_new_backend_runs_work_and_holds_leases_like_the_others(tmp_path: Path) -> None:
    h100 = topology("h100-sxm-8")
    host = Host(inventory=h100, context=CallerContext(), lease_dir=tmp_path)
    gate = threading.Event()
    seen: list[dict[str, Any]] = []

    def work(plan: RoutingPlan) -> None:
        # The lease names this thread before it runs.
        (path,) = tmp_path.glob(f"dev-{plan.uuids[0]}.*.json")
        seen.append(json.loads(path.read_text()))
        gate.wait(10)

    handle = host.launch(ThreadWork(target_fn=work), gpus="any:1", lease=True)
    assert handle.lease is not None
    uuid = handle.lease.plan.uuids[0]
    try:
        with pytest.raises(DeviceLeasedError, match=f"thread {handle.id}"):
            host.acquire(handle.lease.plan.spec)
    finally:
        gate.set()
        handle.wait()
    assert seen[0]["holder"] == {
        "backend": "thread",
        "id": handle.id,
        "where": None,
        "pid": None,
        "started": None,
    }
    # Its thread has ended: its backend says so, and the next acquisition reclaims it.
    again = host.acquire(handle.lease.plan.spec)
    assert again.plan.uuids == (uuid,)
    assert any(f"its thread {handle.id} is gone" in note for note in again.notes)
