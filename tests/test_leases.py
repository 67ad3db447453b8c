"""Leases: no double grants across processes, self-cleaning, safe on disk, limits that count
MIG slices as slices, and selection that respects live state and health."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import gpuroute
import gpuroute.cli
from gpuroute import (
    CallerContext,
    DeviceLeasedError,
    Inventory,
    LeaseDirError,
    LimitExceededError,
    NoFreeDeviceError,
    UnhealthyDeviceError,
)
from gpuroute.cli import main
from gpuroute.core.selection import HostState
from gpuroute.leases import LeaseDir, LeaseRecord
from gpuroute.limits import Limit, Policy, usage_of
from gpuroute.nvml import read_state
from gpuroute.records import Holder
from gpuroute.testing import FakeNVML, topology, topology_path
from tests.conftest import shared_tmp_base

NO_LIMITS = Policy()


def four_gpus() -> Inventory:
    return Inventory(gpus=topology("h100-sxm-8").gpus[:4], driver_version="580.95.05")


def take(request: str, inventory: Inventory, lease_dir: Path, **kw: Any) -> gpuroute.Lease:
    """acquire() with no live state, no limits and no parent mask, unless ``kw`` says so."""
    options: dict[str, Any] = {
        "state": HostState.unknown(),
        "policy": NO_LIMITS,
        "context": CallerContext(),
        **kw,
    }
    return gpuroute.acquire(request, inventory=inventory, lease_dir=lease_dir, **options)


def labels(lease: gpuroute.Lease) -> list[str]:
    return [d.label for d in lease.devices]


# -- many processes ------------------------------------------------------------------------


def _worker(lease_dir: str, board: str, cycles: int, errors: multiprocessing.Queue[str]) -> None:
    inventory = four_gpus()
    for _ in range(cycles):
        lease = take("any:1", inventory, Path(lease_dir), wait_s=30)
        (device,) = lease.devices
        marker = Path(board) / device.uuid
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            errors.put(f"double grant of {device.label}")
        else:
            os.close(fd)
            time.sleep(0.001)
            marker.unlink()
        lease.release()


def test_16_processes_x_50_cycles_never_share_a_device(tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    ctx = multiprocessing.get_context("fork")
    errors: multiprocessing.Queue[str] = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(str(tmp_path / "leases"), str(board), 50, errors))
        for _ in range(16)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * 16
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert sorted(os.listdir(tmp_path / "leases")) == []


def test_a_sigkilled_holder_is_reclaimed(tmp_path: Path) -> None:
    inventory = Inventory(gpus=four_gpus().gpus[:1])
    snapshot = tmp_path / "one.json"
    inventory.save(snapshot)
    code = (
        "import sys, time, gpuroute\n"
        "from gpuroute.core.selection import HostState\n"
        "from gpuroute.limits import Policy\n"
        "inv = gpuroute.Inventory.load(sys.argv[1])\n"
        "gpuroute.acquire('any:1', inventory=inv, lease_dir=sys.argv[2], state=HostState.unknown(),"
        " policy=Policy(), context=gpuroute.CallerContext())\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(snapshot), str(tmp_path / "l")],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NoFreeDeviceError, match="leased"):
            take("any:1", inventory, tmp_path / "l")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lease = take("any:1", inventory, tmp_path / "l")
    assert labels(lease) == ["0"]
    assert any(f"its process {holder.pid} has ended" in n for n in lease.notes)


def test_a_reused_pid_does_not_keep_a_lease(tmp_path: Path) -> None:
    inventory = four_gpus()
    lease = take("1", inventory, tmp_path)
    # The record names a live pid (ours) but another process's start time: a reused pid.
    lease.attach(pid=os.getpid())
    record = replace(lease.record, holder=replace(lease.record.holder, started=1))
    directory = LeaseDir(tmp_path)
    with directory.locked():
        directory.write(record)
    again = take("1", inventory, tmp_path)
    assert any("belongs to another process" in n for n in again.notes)


def test_ttl_and_reboot_end_leases(tmp_path: Path) -> None:
    inventory = four_gpus()
    take("0", inventory, tmp_path, ttl_s=0.05)
    time.sleep(0.1)
    assert any("TTL" in n for n in take("0", inventory, tmp_path).notes)
    lease = take("2", inventory, tmp_path)
    directory = LeaseDir(tmp_path)
    with directory.locked():
        directory.write(replace(lease.record, boot_id="another-boot"))
    assert any("rebooted" in n for n in take("2", inventory, tmp_path).notes)


# -- on disk -------------------------------------------------------------------------------


def test_corrupt_and_half_written_files_cost_only_their_device(tmp_path: Path) -> None:
    inventory = four_gpus()
    kept = take("1", inventory, tmp_path)
    (tmp_path / f"dev-{inventory.gpus[0].uuid}.json").write_text("{not json")
    half = kept.record.to_json()[:40]
    (tmp_path / f"dev-{inventory.gpus[2].uuid}.json").write_text(half)
    lease = take("any:2", inventory, tmp_path)
    assert sorted(labels(lease)) == ["0", "2"]
    assert sum("set aside" in n for n in lease.notes) == 2
    assert len(list(tmp_path.glob("corrupt-*"))) == 2
    with pytest.raises(DeviceLeasedError, match="lease " + kept.id):
        take("1", inventory, tmp_path)


def test_symlink_tricks_are_refused(tmp_path: Path) -> None:
    inventory = four_gpus()
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(LeaseDirError, match="is a symlink"):
        take("0", inventory, tmp_path / "link")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (real / f"dev-{inventory.gpus[0].uuid}.json").symlink_to(victim)
    lease = take("0", inventory, real)  # the planted link is set aside, never followed
    assert victim.read_text() == "precious"
    assert any("set aside" in n for n in lease.notes)
    lease.release()
    # The lock is the directory itself: a link planted as the lock file of earlier versions
    # is never opened, and a directory swapped for a link after its checks is refused.
    (real / "lock").symlink_to(victim)
    take("0", inventory, real).release()
    assert victim.read_text() == "precious"
    directory = LeaseDir(real)
    real.rename(tmp_path / "moved")
    (tmp_path / "real").symlink_to(tmp_path / "moved")
    with pytest.raises(LeaseDirError, match="is a symlink"), directory.locked():
        pass


def test_a_planted_fifo_is_set_aside_never_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until someone writes: an acquirer holding the lock
    would then block everyone. It is refused instead."""
    inventory = four_gpus()
    os.mkfifo(tmp_path / f"dev-{inventory.gpus[0].uuid}.json")
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(take("0", inventory, tmp_path)))
    worker.daemon = True
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "acquire blocked on the FIFO"
    lease = outcome[0]
    assert labels(lease) == ["0"]
    assert any("not a regular file" in n for n in lease.notes)
    lease.release()


def test_a_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    with pytest.raises(LeaseDirError, match="belongs to uid 65534"):
        take("0", four_gpus(), directory)


def test_an_unusable_default_location_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LeaseDirError, match="install -d -m 1777"):
        take("0", four_gpus(), tmp_path / "file" / "leases")


def test_lease_files_say_who_holds_what(tmp_path: Path) -> None:
    inventory = four_gpus()
    with take("3,1", inventory, tmp_path, ttl_s=60) as lease:
        name = LeaseDir.file_name(inventory.gpus[3].uuid, lease.id)
        data = json.loads((tmp_path / name).read_text())
        assert data["schema"] == "gpuroute.lease/2"
        assert data["devices"] == [inventory.gpus[3].uuid, inventory.gpus[1].uuid]
        assert (data["uid"], data["ttl_s"]) == (os.getuid(), 60)
        holder = data["holder"]
        assert (holder["backend"], holder["id"], holder["where"]) == (
            "local",
            str(os.getpid()),
            None,
        )
        assert data["boot_id"]
        assert holder["pid"] == os.getpid()
        assert holder["started"]
        assert lease.plan.container_env["CUDA_VISIBLE_DEVICES"] == "1,0"
    assert sorted(os.listdir(tmp_path)) == []


def _v1_record(lease_id: str, uuid: str, *, pid: int | None, container: str | None) -> str:
    """A record as gpuroute wrote it before holders were backend-neutral."""
    return json.dumps(
        {
            "schema": "gpuroute.lease/1",
            "lease_id": lease_id,
            "devices": [uuid],
            "spec": "0",
            "uid": os.getuid(),
            "user": "someone",
            "pid": pid,
            "pid_start": None,
            "boot_id": "",
            "created": time.time(),
            "ttl_s": None,
            "container_id": container,
            "docker_host": "unix:///nonexistent/docker.sock" if container else None,
        }
    )


def test_records_of_the_earlier_schema_are_still_honoured(tmp_path: Path) -> None:
    inventory = four_gpus()
    held = tmp_path / f"dev-{inventory.gpus[0].uuid}.json"
    held.write_text(
        _v1_record("0a0a0a0a0a0a", inventory.gpus[0].uuid, pid=os.getpid(), container=None)
    )
    with pytest.raises(DeviceLeasedError, match=f"someone .lease 0a0a0a0a0a0a, pid {os.getpid()}"):
        take("0", inventory, tmp_path)
    # Its process has ended: reclaimed like any lease of the new schema.
    dead = subprocess.run(["true"], check=True)
    assert dead.returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()
    held.write_text(
        _v1_record("0b0b0b0b0b0b", inventory.gpus[0].uuid, pid=gone.pid, container=None)
    )
    lease = take("0", inventory, tmp_path)
    assert any(f"its process {gone.pid} has ended" in n for n in lease.notes)
    lease.release()
    # A container holder on an engine that cannot be asked is kept, never guessed gone.
    held.write_text(_v1_record("0c0c0c0c0c0c", inventory.gpus[0].uuid, pid=1, container="c" * 64))
    with pytest.raises(DeviceLeasedError, match="container cccccccccccc"):
        take("0", inventory, tmp_path)
    record = LeaseRecord.from_json(held.read_text())
    assert record.holder == Holder("docker", "c" * 64, "unix:///nonexistent/docker.sock")


@pytest.mark.parametrize(
    "holder",
    [
        {"backend": "local", "id": "", "where": None, "pid": 1, "started": None},
        {"backend": "local", "id": "1", "where": 3, "pid": 1, "started": None},
        {"backend": "no such", "id": "1", "where": None, "pid": 1, "started": None},
        {"backend": "local", "id": "1", "where": None, "pid": 1, "started": True},
        {"backend": "local", "id": "1", "where": None, "pid": 10**30, "started": None},
        {"backend": "local", "id": "1", "where": None, "pid": 0, "started": None},
        {"backend": "local", "id": "1", "where": None, "started": None},
        "pid 1",
    ],
)
def test_malformed_holders_are_set_aside(tmp_path: Path, holder: object) -> None:
    inventory = four_gpus()
    lease = take("0", inventory, tmp_path)
    data = json.loads(lease.record.to_json())
    data["holder"] = holder
    (tmp_path / LeaseDir.file_name(inventory.gpus[0].uuid, lease.id)).write_text(json.dumps(data))
    again = take("0", inventory, tmp_path)
    assert any("set aside" in n for n in again.notes)


# -- selection and health -------------------------------------------------------------------


def test_any_prefers_gpus_on_one_pcie_switch(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.start_process(4242, 1, 500)  # GPU 1 is busy: the pair (0, 1) is broken
    lease = take("any:2", inventory, tmp_path, state=read_state(inventory, fake))
    assert labels(lease) == ["2", "3"]


def test_any_prefers_one_socket_to_across_the_system(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    for pid, busy in enumerate((1, 2, 3, 5, 7), start=4000):  # no free switch pair is left
        fake.start_process(pid, busy, 500)
    lease = take("any:2", inventory, tmp_path, state=read_state(inventory, fake))
    assert labels(lease) == ["4", "6"]  # one socket; 0 and 4 would cross the system


def test_any_on_a_host_too_large_to_try_every_group(tmp_path: Path) -> None:
    """32 GPUs choose 8 is millions of groups: the closest group is found over the PCIe
    hierarchy of pairs and sockets."""
    base = topology("h100-sxm-8").gpus[0]
    gpus = tuple(
        replace(base, index=i, uuid=f"GPU-{i:08x}-0000-0000-0000-000000000000",
                pci_bus_id=f"00000000:{i + 16:02X}:00.0")
        for i in range(32)
    )  # fmt: skip
    inventory = Inventory(gpus=gpus, driver_version="580.95.05")
    fake = FakeNVML(inventory)
    fake.start_process(4242, 0, 500)  # the first switch pair is broken
    lease = take("any:8", inventory, tmp_path, state=read_state(inventory, fake))
    chosen = sorted(d.gpu.index for d in lease.devices)
    # As close as 8 GPUs get: four whole switch pairs on one socket, never GPU 1, whose pair
    # is broken.
    assert [i - chosen[0] for i in chosen] == list(range(8))
    assert chosen[0] % 2 == 0
    assert chosen[0] // 16 == chosen[-1] // 16
    assert 1 not in chosen


def test_foreign_processes_health_and_filters(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.start_process(4242, 0, 500)
    fake.add_ecc_errors(1)
    fake.set_retired_pages_pending(2)
    fake.inject_xid(3, 79)
    fake.inject_xid(4, 13)  # an application's fault, not the GPU's
    fake.lose_gpu(5)
    state = read_state(inventory, fake)
    assert labels(take("any:1", inventory, tmp_path, state=state)) == ["4"]
    with pytest.raises(NoFreeDeviceError) as err:
        take("any:4", inventory, tmp_path, state=state)
    text = str(err.value)
    for fragment in (
        "process(es) 4242 not started by gpuroute",
        "uncorrectable ECC",
        "retired memory pages pending",
        "critical Xid 79",
        "lost from the bus",
    ):
        assert fragment in text
    with pytest.raises(UnhealthyDeviceError, match="ECC"):
        take("1", inventory, tmp_path, state=state)


def test_mig_profile_and_memory_filters(tmp_path: Path) -> None:
    inventory = topology("a100-mig-4")
    fake = FakeNVML(inventory)
    fake.start_process(77, 1, 100, mig=2)  # 1:2 (1g.10gb) busy
    state = read_state(inventory, fake)
    lease = take("any:1", inventory, tmp_path, state=state, mig_profile="1g.10gb")
    assert labels(lease) == ["1:3"]
    with pytest.raises(NoFreeDeviceError, match="MiB free"):
        take("any:1", inventory, tmp_path, state=state, min_free_mib=90_000)
    with pytest.raises(NoFreeDeviceError, match="model is"):
        take("any:1", inventory, tmp_path, state=state, model="H100")


def test_gpuroute_plan_refuses_any_and_points_to_leases(h100: Inventory) -> None:
    with pytest.raises(gpuroute.SpecError, match=r"gpuroute\.acquire\('any:2'\)"):
        gpuroute.plan("any:2", h100, context=CallerContext())


def test_wait_for_a_device(tmp_path: Path) -> None:
    inventory = Inventory(gpus=four_gpus().gpus[:1])
    lease = take("any:1", inventory, tmp_path)
    started = time.monotonic()
    with pytest.raises(NoFreeDeviceError):
        take("any:1", inventory, tmp_path, wait_s=0.3)
    assert time.monotonic() - started >= 0.25
    lease.release()
    assert labels(take("any:1", inventory, tmp_path, wait_s=1)) == ["0"]


# -- limits --------------------------------------------------------------------------------


def test_gpu_equivalents_and_physical_gpus_are_separate(a100: Inventory) -> None:
    slices = [a100.gpus[1].mig_devices[i].uuid for i in (2, 3)] + [a100.gpus[2].mig_devices[3].uuid]
    usage = usage_of(slices[:2], a100)
    assert (usage.gpu_equivalents, len(usage.physical_gpus)) == (Fraction(2, 7), 1)
    assert usage.describe() == "2/7 GPU-equivalents on 1 physical GPU(s)"
    both = usage_of([*slices, a100.gpus[0].uuid], a100)
    assert (both.gpu_equivalents, len(both.physical_gpus)) == (Fraction(10, 7), 3)
    assert both.describe().startswith("1 3/7 GPU-equivalents on 3")


def test_limits_are_enforced_per_user_both_ways(tmp_path: Path, a100: Inventory) -> None:
    me = gpuroute.leases.caller_identity()[1]
    policy = Policy(users={me: Limit(Fraction(3, 7), 1)})
    take("1:2", a100, tmp_path, policy=policy, allow_multiple_mig=True)
    take("1:3", a100, tmp_path, policy=policy)
    with pytest.raises(LimitExceededError) as err:  # another GPU: physical 2 > 1
        take("2:3", a100, tmp_path, policy=policy)
    text = str(err.value)
    assert "physical GPUs 2 > 1" in text
    assert "In use now: 2/7 GPU-equivalents on 1 physical GPU(s)" in text
    assert "Release one of: lease" in text
    with pytest.raises(LimitExceededError, match="GPU-equivalents 5/7 > 3/7"):
        take("1:0", a100, tmp_path, policy=policy)  # 3g on the same GPU


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "default: {gpu_equivalents: 1.5, physical_gpus: 2}\n"
        "users:\n  alice: {gpu_equivalents: 4}\n"
        "groups:\n  lab: {physical_gpus: 3}\n"
    )
    policy = Policy.load(path)
    assert policy.user_limit("alice") == Limit(Fraction(4), None)
    assert policy.user_limit("bob") == Limit(Fraction(3, 2), 2)
    assert policy.groups["lab"] == Limit(None, 3)
    path.write_text("users:\n  alice: {gpus: 4}\n")
    with pytest.raises(gpuroute.PolicyError, match=r"users\.alice"):
        Policy.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read the limits policy .*policy\.yaml"),
        ("users: [alice\n", r"cannot read the limits policy .*policy\.yaml"),
        ("limits: {}\n", r"policy\.yaml: top-level keys are default, users and groups"),
        (
            "groups:\n  lab: {physical_gpus: many}\n",
            r"policy\.yaml: groups\.lab: expected numbers.*'many'",
        ),
        ("default: {gpu_equivalents: 1/0}\n", r"policy\.yaml: default: expected numbers.*'1/0'"),
    ],
)
def test_a_bad_policy_file_is_a_policy_error_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "policy.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(gpuroute.PolicyError, match=message) as err:
        Policy.load(path)
    assert not isinstance(err.value, gpuroute.InventoryError), "not an inventory problem"


def test_two_real_users_share_a_group_budget(
    a100: Inventory, other_user_env: dict[str, str]
) -> None:
    """uid 65534 (nobody) and uid 1 (daemon) acquire through real OS identities; a limit on
    the group of the first binds it, the second is bounded by the default. Their files lie
    where they can reach them and they import gpuroute from a copy they can read, wherever
    this checkout lies."""
    tmp_path = Path(tempfile.mkdtemp(prefix="gpuroute-users-", dir=shared_tmp_base()))
    try:
        _two_users(tmp_path, a100, other_user_env)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _two_users(tmp_path: Path, a100: Inventory, env: dict[str, str]) -> None:
    snapshot = tmp_path / "a100.json"
    a100.save(snapshot)
    leases = tmp_path / "leases"
    leases.mkdir(mode=0o1777)
    leases.chmod(0o1777)  # as documented: sticky, so that no user removes another's leases
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "default: {gpu_equivalents: 1, physical_gpus: 1}\n"
        "groups:\n  nogroup: {gpu_equivalents: 0.2}\n"
    )
    for path in (tmp_path, snapshot, policy):
        path.chmod(0o755 if path.is_dir() else 0o644)
    # Each lease lives with this test's process (the children's parent), as a launcher's would.
    code = (
        "import os, sys, gpuroute\n"
        "from gpuroute.core.selection import HostState\n"
        "from gpuroute.limits import Policy\n"
        "inv = gpuroute.Inventory.load(sys.argv[1])\n"
        "try:\n"
        "    l = gpuroute.acquire(sys.argv[3], inventory=inv, lease_dir=sys.argv[2],"
        " state=HostState.unknown(), policy=Policy.load(sys.argv[4]),"
        " context=gpuroute.CallerContext(), ttl_s=600, pid=os.getppid())\n"
        "    print('granted', l.record.user)\n"
        "except gpuroute.GpurouteError as e:\n"
        "    print(type(e).__name__, e)\n"
    )

    def as_user(uid: int, spec: str) -> str:
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid if uid != 65534 else 65534}",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                str(snapshot),
                str(leases),
                spec,
                str(policy),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert as_user(65534, "1:2") == "granted nobody"  # 1/7 <= 0.2
    assert as_user(65534, "1:3").startswith("LimitExceededError")  # 2/7 > group's 0.2
    assert as_user(1, "1:3") == "granted daemon"  # daemon is not in nogroup
    assert as_user(1, "0").startswith("LimitExceededError")  # 1 1/7 > the default of 1
    assert as_user(65534, "1:2").startswith("DeviceLeasedError")


def test_a_reclaim_never_removes_a_newer_lease_of_the_same_device(tmp_path: Path) -> None:
    """A stale record read earlier must not cost the device's new holder its file."""
    inventory = four_gpus()
    directory = LeaseDir(tmp_path)
    stale = take("3", inventory, tmp_path).record
    fresh = take("3", inventory, tmp_path / "other").record  # same device, another lease
    with directory.locked():
        directory.write(replace(fresh, lease_id="newer"))
        gone = Holder.process(2**22 + 7, None)
        notes = gpuroute.leases.reclaim_stale(
            directory, {inventory.gpus[3].uuid: replace(stale, holder=gone)}, now=time.time()
        )
        assert len(notes) == 1
        records, _ = directory.read()
    assert records[inventory.gpus[3].uuid].lease_id == "newer"


def test_waiting_sees_a_busy_gpu_become_free(tmp_path: Path) -> None:
    inventory = Inventory(gpus=four_gpus().gpus[:1])
    fake = FakeNVML(inventory)
    fake.start_process(4242, 0, 100)
    timer = threading.Timer(0.3, fake.end_process, args=(4242,))
    timer.start()
    try:
        lease = gpuroute.acquire(
            "any:1",
            inventory=inventory,
            lease_dir=tmp_path,
            nvml=fake,
            policy=NO_LIMITS,
            context=CallerContext(),
            wait_s=5,
        )
    finally:
        timer.cancel()
    assert labels(lease) == ["0"]


def test_any_stays_inside_the_parent_mask_for_a_local_process(tmp_path: Path) -> None:
    inventory = four_gpus()
    lease = take(
        "any:1", inventory, tmp_path, context=CallerContext("2,3", "PCI_BUS_ID"), target="local"
    )
    assert labels(lease) == ["2"]
    with pytest.raises(NoFreeDeviceError, match="outside this process's CUDA_VISIBLE_DEVICES"):
        take(
            "any:3", inventory, tmp_path, context=CallerContext("2,3", "PCI_BUS_ID"), target="local"
        )


@pytest.mark.parametrize(
    "field_value", [("pid", "123"), ("created", "yesterday"), ("ttl_s", True), ("extra", 1)]
)
def test_a_record_with_wrong_types_is_set_aside(
    tmp_path: Path, field_value: tuple[str, object]
) -> None:
    inventory = four_gpus()
    record = take("0", inventory, tmp_path).record
    data = json.loads(record.to_json())
    key, value = field_value
    data[key] = value
    name = LeaseDir.file_name(inventory.gpus[0].uuid, record.lease_id)
    (tmp_path / name).write_text(json.dumps(data))
    lease = take("0", inventory, tmp_path)
    assert any("set aside" in n for n in lease.notes)


def _hostile(record: str, key: str, value: str) -> str:
    """The record with one value replaced by raw JSON text (json.dumps cannot write NaN
    into a holder's id, nor 10**30 as a pid in a way every reader parses alike)."""
    data = json.loads(record)
    target = data["holder"] if key in ("id", "started") else data
    target[key] = "@@"
    return json.dumps(data).replace('"@@"', value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", '"1000000000000000000000000000000"'),
        ("id", '"\u00b2"'),
        ("id", '"-1"'),
        ("id", '"0"'),
        ("started", "1000000000000000000000000000000"),
        ("started", "-5"),
        ("created", "1e300"),
        ("created", "-1e300"),
        ("created", "NaN"),
        ("created", "Infinity"),
        ("created", "-Infinity"),
        ("ttl_s", "NaN"),
        ("ttl_s", "Infinity"),
        ("ttl_s", "1e300"),
        ("ttl_s", "-1"),
        ("uid", "1000000000000000000000000000000"),
        ("uid", "-1"),
    ],
)
def test_out_of_range_and_non_finite_records_are_set_aside(
    tmp_path: Path, key: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted record with pid 10**30 or created NaN crashed acquire and `gpuroute leases`
    (OverflowError, ValueError); it is malformed and set aside like any unreadable record."""
    inventory = four_gpus()
    taken = take("0", inventory, tmp_path)
    held = tmp_path / LeaseDir.file_name(inventory.gpus[0].uuid, taken.id)
    record = taken.record.to_json()
    held.write_text(_hostile(record, key, value))
    with pytest.raises(ValueError, match=r"lease record|lease holder"):
        LeaseRecord.from_json(held.read_text())
    snapshot = tmp_path / "four.json"
    inventory.save(snapshot)
    assert main(["leases", "--lease-dir", str(tmp_path), "--inventory", str(snapshot)]) == 0
    out = capsys.readouterr().out  # a listing moves nothing: it says what it ignored
    assert f"ignored the lease file {held.name}" in out
    held.write_text(_hostile(record, key, value))
    lease = take("0", inventory, tmp_path)
    assert any("set aside" in n for n in lease.notes)
    assert [d.uuid for d in lease.devices] == [inventory.gpus[0].uuid]


def test_a_record_nested_too_deeply_is_malformed() -> None:
    with pytest.raises(ValueError, match="lease record"):
        LeaseRecord.from_json("[" * 100_000 + "]" * 100_000)


def test_a_failed_write_leaves_no_partial_lease(tmp_path: Path) -> None:
    inventory = four_gpus()
    directory = LeaseDir(tmp_path)
    record = take("0,1", inventory, tmp_path / "model").record
    # the rename onto it fails
    (tmp_path / LeaseDir.file_name(inventory.gpus[1].uuid, record.lease_id)).mkdir()
    with directory.locked(), pytest.raises(IsADirectoryError):
        directory.write(record)
    assert not (tmp_path / LeaseDir.file_name(inventory.gpus[0].uuid, record.lease_id)).exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_snapshot_of_another_host_is_not_judged_by_this_hosts_nvml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This host's NVML (here: four A100s) knows nothing of an H100 snapshot's GPUs."""
    this_host = FakeNVML(topology("a100-mig-4"))
    monkeypatch.setattr("gpuroute.nvml.load_pynvml", lambda: this_host)
    lease = gpuroute.acquire(
        "0",
        inventory=topology("h100-sxm-8"),
        lease_dir=tmp_path,
        policy=Policy(),
        context=CallerContext(),
    )
    try:
        assert [d.uuid for d in lease.devices] == [topology("h100-sxm-8").gpus[0].uuid]
    finally:
        lease.release()


# -- a shared directory among hostile local users --------------------------------------------
#
# Each attack runs as another real user: a child forked from this test process (so that it
# needs nothing from the checkout, whatever its permissions) that drops to that uid. The test
# process is root, the administrator; NOBODY (65534) and DAEMON (1) are two ordinary users.

NOBODY, DAEMON = 65534, 1


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def as_user(uid: int, action: Callable[[], object], *, umask: int = 0o022) -> str:
    """Run ``action`` as ``uid`` in a forked child; what it returned, or the error it raised
    as ``Name: message``."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(reader)
            os.umask(umask)
            _drop_to(uid)
            try:
                outcome = str(action())
            except BaseException as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(writer, outcome.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as stream:
        text = stream.read().decode()
    os.waitpid(pid, 0)
    return text


@contextlib.contextmanager
def holding_locks(uid: int, paths: list[Path]) -> Iterator[int]:
    """A process of ``uid`` that takes an exclusive flock on each of ``paths`` and keeps it."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            _drop_to(uid)
            for path in paths:  # kept open: the locks last as long as this process
                fcntl.flock(os.open(path, os.O_RDONLY), fcntl.LOCK_EX)
            os.write(writer, b"locked")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 16) == b"locked"
        yield pid
    finally:
        os.close(reader)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A lease directory as docs/leases.md asks an administrator to make it: root-owned,
    mode 1777, reachable by every user."""
    root = Path(tempfile.mkdtemp(prefix="gpuroute-shared-"))
    root.chmod(0o755)
    leases = root / "leases"
    leases.mkdir()
    leases.chmod(0o1777)
    try:
        yield leases
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _granted(lease: gpuroute.Lease) -> str:
    return "granted " + ",".join(labels(lease))


def test_a_shared_directory_without_the_sticky_bit_is_refused(shared: Path) -> None:
    """In a 0777 directory any user can delete or replace another's lease file."""
    shared.chmod(0o777)
    with pytest.raises(LeaseDirError, match=r"not sticky.*chmod 1777"):
        take("0", four_gpus(), shared)
    shared.chmod(0o770)
    with pytest.raises(LeaseDirError, match="not sticky"):
        take("0", four_gpus(), shared)


def test_another_user_can_neither_delete_nor_overwrite_a_lease(shared: Path) -> None:
    inventory = four_gpus()
    lease = take("0", inventory, shared)  # root's, held by this process
    (name,) = os.listdir(shared)

    def attack() -> str:
        outcomes = []
        for how in (
            lambda: os.unlink(shared / name),
            lambda: os.rename(shared / name, shared / "mine"),
            lambda: (shared / name).write_text("{}"),
        ):
            try:
                how()
                outcomes.append("done")
            except PermissionError:
                outcomes.append("refused")
        # A file of their own renamed onto the victim's name.
        (shared / ".tmp-x").write_text(lease.record.to_json())
        try:
            os.rename(shared / ".tmp-x", shared / name)
            outcomes.append("done")
        except PermissionError:
            outcomes.append("refused")
        return " ".join(outcomes)

    assert as_user(NOBODY, attack) == "refused refused refused refused"
    assert as_user(DAEMON, lambda: _granted(take("0", inventory, shared))).startswith(
        "DeviceLeasedError"
    )
    lease.release()


def test_a_forged_record_in_another_users_name_does_not_count(shared: Path) -> None:
    """nobody plants a never-ending record that says root holds GPU 1: it is recognisably
    forged (the file is nobody's) and ignored, so it neither blocks GPU 1 nor counts against
    root. A record in nobody's own name is nobody's lease, and says so."""
    inventory = four_gpus()
    forged = LeaseRecord(
        lease_id="f0f0f0f0f0f0",
        devices=(inventory.gpus[1].uuid,),
        spec="1",
        uid=0,
        user="root",
        holder=Holder("nowhere", "x"),
        boot_id="",
        created=time.time(),
    )
    own = replace(forged, lease_id="0e0e0e0e0e0e", devices=(inventory.gpus[2].uuid,))

    def plant() -> str:
        for record in (forged, own):
            for uuid in record.devices:
                path = shared / LeaseDir.file_name(uuid, record.lease_id)
                path.write_text(record.to_json())
        path = shared / LeaseDir.file_name(own.devices[0], own.lease_id)
        path.write_text(replace(own, uid=NOBODY, user="nobody").to_json())
        return "planted"

    assert as_user(NOBODY, plant) == "planted"
    lease = take("1", inventory, shared)
    assert any("forged" in n and "uid 65534 (nobody)" in n for n in lease.notes)
    with pytest.raises(DeviceLeasedError, match="leased to nobody"):
        take("2", inventory, shared)
    records, _ = LeaseDir(shared).read()
    assert records[inventory.gpus[2].uuid].user == "nobody"
    assert records[inventory.gpus[1].uuid].lease_id == lease.id


def test_a_held_lock_bounds_the_wait_and_names_its_holder(
    shared: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nobody takes every lock there is and keeps it: acquisitions give up after the lock
    timeout with an error naming nobody's process; releasing and listing leases need no
    lock at all."""
    inventory = four_gpus()
    before = take("0", inventory, shared)
    monkeypatch.setattr(gpuroute.leases, "DEFAULT_LOCK_TIMEOUT_S", 1.0)
    lock_file = shared / "lock"  # what earlier versions locked
    lock_file.touch()
    lock_file.chmod(0o644)
    outcome: list[BaseException | gpuroute.Lease] = []

    def acquire() -> None:
        try:
            outcome.append(take("1", inventory, shared))
        except BaseException as exc:
            outcome.append(exc)

    with holding_locks(NOBODY, [shared, lock_file]) as attacker:
        started = time.monotonic()
        worker = threading.Thread(target=acquire, daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "acquire waited for the lock without bound"
        assert 0.9 <= time.monotonic() - started < 10
        (error,) = outcome
        assert isinstance(error, LeaseDirError)
        assert f"pid {attacker} " in str(error)
        assert "user nobody (uid 65534)" in str(error)
        assert "stayed locked for 1s" in str(error)
        released = threading.Thread(target=before.release, daemon=True)
        released.start()
        released.join(timeout=20)
        assert not released.is_alive(), "release waited for the lock"
        listing = threading.Thread(
            target=gpuroute.cli.main,
            args=(["leases", "--simulate", "h100-sxm-8", "--lease-dir", str(shared)],),
            daemon=True,
        )
        listing.start()
        listing.join(timeout=20)
        assert not listing.is_alive(), "gpuroute leases waited for the lock"
    assert "No leases in" in capsys.readouterr().out
    assert labels(take("1", inventory, shared)) == ["1"]


def test_a_deeply_nested_record_is_set_aside_not_a_crash(shared: Path) -> None:
    inventory = four_gpus()
    name = f"dev-{inventory.gpus[0].uuid}.json"

    def plant() -> str:
        (shared / name).write_text("[" * 60_000)
        return "planted"

    assert as_user(NOBODY, plant) == "planted"

    def victim() -> str:
        lease = take("0", inventory, shared)
        lease.release()
        limited = Policy(users={"daemon": Limit(Fraction(4), 4)})  # limits read every record
        again = take("any:1", inventory, shared, policy=limited)
        return f"{_granted(lease)} {_granted(again)} | {' '.join(lease.notes)}"

    outcome = as_user(DAEMON, victim)
    assert outcome.startswith("granted 0 granted 1 | ")  # any:1 read every record, too
    assert "nested too deeply" in outcome
    assert "which only its owner may move" in outcome


def test_another_users_stale_lease_is_reclaimed_in_a_sticky_directory(shared: Path) -> None:
    """nobody's lease outlived its process; daemon may not remove nobody's file, yet takes
    the GPU: the stale lease no longer counts, and its file stays until nobody (or root)
    removes it."""
    inventory = four_gpus()
    gone = subprocess.Popen(["true"])
    gone.wait()
    parent = os.getpid()
    assert as_user(NOBODY, lambda: _granted(take("3", inventory, shared, pid=gone.pid))) == (
        "granted 3"
    )

    def reclaim() -> str:
        lease = take("3", inventory, shared, pid=parent)
        return f"{_granted(lease)} | {' '.join(lease.notes)}"

    outcome = as_user(DAEMON, reclaim)
    assert outcome.startswith("granted 3 | ")
    assert "reclaimed" in outcome
    assert f"its process {gone.pid} has ended" in outcome
    assert "its file stays until nobody or an administrator removes it" in outcome
    assert len(os.listdir(shared)) == 2  # nobody's stale file, daemon's lease
    with pytest.raises(DeviceLeasedError, match="leased to daemon"):
        take("3", inventory, shared)
    assert as_user(NOBODY, lambda: _granted(take("3", inventory, shared))).startswith(
        "DeviceLeasedError: GPU 3"
    )


def test_a_stale_lease_never_comes_back_to_life(tmp_path: Path) -> None:
    """Its devices may have gone to another lease: binding it to new work is refused."""
    inventory = four_gpus()
    lease = take("0", inventory, tmp_path, ttl_s=0.05)
    time.sleep(0.1)
    with pytest.raises(gpuroute.LeaseError, match="TTL"):
        lease.bind(Holder.process(os.getpid(), None))


def test_a_careless_umask_never_frees_a_lease(shared: Path) -> None:
    """nobody's umask is 077: their lease files are readable by every user all the same. A
    file that cannot be read anyway keeps its device held by its owner."""
    inventory = four_gpus()
    parent = os.getpid()
    granted = as_user(
        NOBODY, lambda: _granted(take("2", inventory, shared, pid=parent)), umask=0o077
    )
    assert granted == "granted 2"
    assert as_user(DAEMON, lambda: _granted(take("2", inventory, shared))).startswith(
        "DeviceLeasedError: GPU 2"
    )
    (name,) = os.listdir(shared)
    assert as_user(NOBODY, lambda: (shared / name).chmod(0)) == "None"
    outcome = as_user(DAEMON, lambda: _granted(take("2", inventory, shared)))
    assert outcome.startswith("DeviceLeasedError: GPU 2")
    assert "leased to nobody" in outcome


# -- whose limits bind ---------------------------------------------------------------------


@pytest.fixture
def admin_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The administrator's policy, root-owned and writable by root alone: one GPU each."""
    path = tmp_path / "admin-policy.yaml"
    path.write_text("default: {gpu_equivalents: 2, physical_gpus: 1}\n")
    path.chmod(0o644)
    assert path.stat().st_uid == 0
    monkeypatch.setattr(gpuroute.limits, "DEFAULT_POLICY", str(path))
    return path


def test_a_callers_policy_never_lifts_the_administrators(
    tmp_path: Path,
    admin_policy: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inventory = four_gpus()
    leases = tmp_path / "leases"
    options: dict[str, Any] = {
        "inventory": inventory,
        "lease_dir": leases,
        "state": HostState.unknown(),
        "context": CallerContext(),
    }
    gpuroute.acquire("0", **options)
    monkeypatch.setenv("GPUROUTE_POLICY", "/dev/null")
    with pytest.raises(LimitExceededError, match=f"{admin_policy}\\): physical GPUs 2 > 1"):
        gpuroute.acquire("1", **options)
    monkeypatch.delenv("GPUROUTE_POLICY")
    for lifting in (Policy(), Policy(default=Limit(Fraction(8), 8), source="mine")):
        with pytest.raises(LimitExceededError, match="physical GPUs 2 > 1"):
            gpuroute.acquire("1", policy=lifting, **options)
    # A stricter policy of the caller's does bind: each limit is the stricter of the two.
    me = gpuroute.leases.caller_identity()[1]
    mine = Policy(users={me: Limit(Fraction(1, 2), 4)}, source="mine")
    with pytest.raises(LimitExceededError, match=r"tightened by mine\): GPU-equivalents 2 > 1/2"):
        gpuroute.acquire("1", policy=mine, **options)
    combined = gpuroute.limits.admin_policy().tightened_by(mine)
    assert combined.user_limit(me) == Limit(Fraction(1, 2), 1)
    assert combined.user_limit("someone else") == Limit(Fraction(2), 1)
    inventory_args = ["--simulate", "h100-sxm-8", "--lease-dir", str(leases)]
    assert gpuroute.cli.main(["limits", *inventory_args, "--policy", "/dev/null"]) == 0
    assert "your limit: 2 GPU-equivalents, 1 physical GPU(s)" in capsys.readouterr().out


def test_an_administrators_policy_others_may_write_is_refused(
    tmp_path: Path, admin_policy: Path
) -> None:
    admin_policy.chmod(0o666)
    with pytest.raises(gpuroute.PolicyError, match=r"writable by root alone.*chmod 0644"):
        gpuroute.acquire("0", inventory=four_gpus(), lease_dir=tmp_path, context=CallerContext())
    admin_policy.chmod(0o644)
    os.chown(admin_policy, NOBODY, NOBODY)
    with pytest.raises(gpuroute.PolicyError, match="belongs to uid 65534"):
        gpuroute.acquire("0", inventory=four_gpus(), lease_dir=tmp_path, context=CallerContext())


# -- one file per lease, linked under each device's name ------------------------------------


def test_a_lease_is_one_file_linked_under_each_devices_name(tmp_path: Path) -> None:
    inventory = four_gpus()
    lease = take("2,0,3", inventory, tmp_path)
    names = [LeaseDir.file_name(inventory.gpus[i].uuid, lease.id) for i in (2, 0, 3)]
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    infos = [os.stat(tmp_path / name) for name in names]
    assert {info.st_ino for info in infos} == {infos[0].st_ino}  # one file
    assert infos[0].st_nlink == 3
    assert infos[0].st_mode & 0o777 == 0o644
    with pytest.raises(DeviceLeasedError, match="lease " + lease.id):
        take("0", inventory, tmp_path)
    records, notes = LeaseDir(tmp_path).read()
    assert notes == []
    assert {u for u, r in records.items() if r.lease_id == lease.id} == set(lease.record.devices)
    # Binding rewrites every name atomically, and the names still share one record.
    lease.bind(Holder("docker", "d" * 64, "unix:///nonexistent/docker.sock"))
    records, _ = LeaseDir(tmp_path).read()
    assert {records[u].holder.id for u in lease.record.devices} == {"d" * 64}
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # no temporary name left
    lease.release()
    assert os.listdir(tmp_path) == []


def test_without_hard_links_each_device_gets_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without hard links: the files of the earlier versions, one a device."""
    inventory = four_gpus()

    def no_links(*args: object, **kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    lease = take("any:3", inventory, tmp_path)
    infos = [os.stat(tmp_path / name) for name in os.listdir(tmp_path)]
    assert len(infos) == 3
    assert len({info.st_ino for info in infos}) == 3
    assert {info.st_nlink for info in infos} == {1}
    with pytest.raises(NoFreeDeviceError):
        take("any:2", inventory, tmp_path)
    lease.release()
    assert os.listdir(tmp_path) == []


def _killed_while_writing(lease_dir: Path, call: str, nth: int, **kw: Any) -> None:
    """A process that takes GPUs 0-3 and is SIGKILLed just before its ``nth`` call of
    ``os.<call>`` (``rename``: the record into place; ``link``: a further device's name)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            real = getattr(os, call)
            calls = [0]

            def dying(*args: Any, **kwargs: Any) -> Any:
                calls[0] += 1
                if calls[0] == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            setattr(os, call, dying)
            take("0,1,2,3", four_gpus(), lease_dir, **kw)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize(("call", "nth"), [("rename", 1), ("link", 1), ("link", 2), ("link", 3)])
def test_a_writer_killed_between_links_leaves_a_lease_the_next_one_reclaims(
    tmp_path: Path, call: str, nth: int
) -> None:
    """Killed with the lock held, after the record was renamed onto GPU 0's name and some
    of the other names were linked: the lease holds exactly the names that are there, and
    its holder (the killed process) is gone, so the next acquisition reclaims every one."""
    inventory = four_gpus()
    _killed_while_writing(tmp_path, call, nth)
    present = 0 if call == "rename" else nth  # GPUs 0 .. present-1 have a name
    assert LeaseDir(tmp_path).held() == {inventory.gpus[i].uuid for i in range(present)}
    lease = take("any:4", inventory, tmp_path)  # the lock was released by the death
    assert labels(lease) == ["0", "1", "2", "3"]
    assert sum("reclaimed" in n and "has ended" in n for n in lease.notes) == present
    lease.release()
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".tmp-")] == []
    # Only a kill before the rename leaves its temporary file (as every version did).
    assert len(os.listdir(tmp_path)) == (1 if call == "rename" else 0)


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_a_partial_lease_of_a_live_holder_holds_only_its_names(
    tmp_path: Path, nth: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer was killed between links, but the holder it named lives on (this test's
    process): the lease keeps the devices whose names are there, and no other."""
    inventory = four_gpus()
    _killed_while_writing(tmp_path, "link", nth, pid=os.getpid())
    rest = take(f"any:{4 - nth}", inventory, tmp_path)
    assert labels(rest) == [str(i) for i in range(nth, 4)]
    assert not any("reclaimed" in n for n in rest.notes)
    rest.release()
    with pytest.raises(DeviceLeasedError, match="GPU 0"):
        take("0", inventory, tmp_path)
    args = ["leases", "--inventory", topology_path("h100-sxm-8"), "--lease-dir", str(tmp_path)]
    assert main(args) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if " held" in line]
    assert row.split()[2] == ",".join(str(i) for i in range(nth))


def test_a_hard_link_to_another_users_record_forges_nothing(shared: Path) -> None:
    """daemon holds GPUs 0 and 1. nobody tries to hard-link daemon's file under other
    names, to make GPU 2 or 3 look held, or daemon's lease look held under another id: the
    kernel refuses a link to another user's file (fs.protected_hardlinks=1). Where it does
    not, the links (made here by root, as nobody could make them) are recognised: a name
    counts only for a device its record holds, under its record's lease id."""
    inventory = four_gpus()
    parent = os.getpid()
    victim = as_user(DAEMON, lambda: take("0,1", inventory, shared, pid=parent).id)
    assert victim.isalnum(), victim
    genuine = shared / LeaseDir.file_name(inventory.gpus[0].uuid, victim)
    assert genuine.stat().st_nlink == 2
    forged = [
        shared / LeaseDir.file_name(inventory.gpus[2].uuid, victim),  # another device
        shared / LeaseDir.file_name(inventory.gpus[3].uuid, "0e0e0e0e0e0e"),  # nobody's id
        shared / LeaseDir.file_name(inventory.gpus[0].uuid, "f0f0f0f0f0f0"),  # another id
    ]

    def link() -> str:
        outcomes = []
        for path in forged:
            try:
                os.link(genuine, path)
                outcomes.append("linked")
            except PermissionError:
                outcomes.append("refused")
        return " ".join(outcomes)

    protected = Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    assert as_user(NOBODY, link) == ("refused " * 3 if protected else "linked " * 3).strip()
    for path in forged:
        if not path.exists():
            os.link(genuine, path)
    assert genuine.stat().st_nlink == 5

    def take_2_and_3() -> str:
        lease = take("2,3", inventory, shared)
        return f"{_granted(lease)} | {' '.join(lease.notes)}"

    outcome = as_user(NOBODY, take_2_and_3)
    assert outcome.startswith("granted 2,3 | "), outcome
    assert outcome.count("which only its owner may move") == 3  # daemon's file, not nobody's
    assert "the record does not hold this device" in outcome
    assert "the record's lease id is not the one in its name" in outcome
    assert as_user(NOBODY, lambda: _granted(take("0", inventory, shared))).startswith(
        "DeviceLeasedError: GPU 0"
    )
    records, notes = LeaseDir(shared).read(set_aside=False)
    assert {u: r.lease_id for u, r in records.items() if r.user == "daemon"} == {
        inventory.gpus[0].uuid: victim,
        inventory.gpus[1].uuid: victim,
    }
    assert len(notes) == 3
