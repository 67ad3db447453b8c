"""GPU health shared by every process of the host: Xids recorded beside the leases (from
NVML's one-shot events and from the kernel log), refused launches with or without a lease,
clearing, and the kernel log read through the same parser as /dev/kmsg."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import gpuroute
from gpuroute import CallerContext, Host, Inventory, NoFreeDeviceError, UnhealthyDeviceError
from gpuroute.backends.local import LocalWork
from gpuroute.health import HealthStore, clear
from gpuroute.kernel_log import MAX_SECONDS, KernelLog, parse_record, pci_key
from gpuroute.leases import LeaseDir
from gpuroute.limits import Policy
from gpuroute.testing import FakeKernelLog, FakeNVML, topology


def host(
    fake: FakeNVML, lease_dir: Path, kernel_log: Path | None = None, *, recheck_s: float = 1.0
) -> Host:
    """A fresh host: as a separate process (a separate command) would be."""
    return Host(
        nvml=fake,
        lease_dir=lease_dir,
        kernel_log=kernel_log,
        policy=Policy(),
        context=CallerContext(),
        environ={},
        recheck_s=recheck_s,
    )


def test_an_nvml_xid_marks_its_gpu_for_every_later_reader(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.inject_xid(3, 79)  # NVML hands it to the first reader only
    with pytest.raises(UnhealthyDeviceError, match="Xid 79"):
        host(fake, tmp_path).acquire("3")
    # Another process, later: NVML has nothing more to say, the mark does.
    with pytest.raises(UnhealthyDeviceError, match="Xid 79"):
        host(fake, tmp_path).acquire("3")
    with pytest.raises(NoFreeDeviceError, match="critical Xid 79"):
        host(fake, tmp_path).acquire("any:8")
    assert not any(
        "Xid" in p
        for p in host(fake, tmp_path).live_state(inventory).of(inventory.gpus[2].uuid).problems
    )
    clear([inventory.gpus[3].uuid], lease_dir=tmp_path)
    with host(fake, tmp_path).acquire("3") as lease:
        assert lease.plan.uuids == (inventory.gpus[3].uuid,)


def test_plan_and_launch_without_a_lease_refuse_an_unhealthy_gpu(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.add_ecc_errors(1)
    h = host(fake, tmp_path)
    with pytest.raises(UnhealthyDeviceError, match="uncorrectable ECC") as err:
        h.plan("1")
    assert "allow_unhealthy=True" in str(err.value)
    assert h.plan("1", allow_unhealthy=True).uuids == (inventory.gpus[1].uuid,)
    assert h.plan("0").uuids == (inventory.gpus[0].uuid,)
    with pytest.raises(UnhealthyDeviceError, match="uncorrectable ECC"):
        gpuroute.launch(["true"], gpus="1", nvml=fake, lease_dir=tmp_path)
    with pytest.raises(UnhealthyDeviceError, match="uncorrectable ECC"):  # a plan made elsewhere
        h.launch(LocalWork(("true",)), gpus=gpuroute.plan("1", inventory))
    with gpuroute.launch(
        ["true"], gpus="1", nvml=fake, lease_dir=tmp_path, allow_unhealthy=True
    ) as run:
        assert run.wait(timeout=30) == 0
    with pytest.raises(UnhealthyDeviceError):  # a lease on it too, unless allowed
        h.acquire("1")
    with h.acquire("1", allow_unhealthy=True) as lease:
        assert lease.plan.uuids == (inventory.gpus[1].uuid,)
    with pytest.raises(NoFreeDeviceError):  # any:N never picks it, allowed or not
        h.acquire("any:8", allow_unhealthy=True)


def test_kernel_log_xids_mark_gpus_for_every_process_until_cleared(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    log = FakeKernelLog(tmp_path / "kmsg")
    leases = tmp_path / "leases"
    fake = FakeNVML(inventory)  # NVML delivers none of them: the reader came too late
    log.line("nvidia-nvlink: Nvlink Core is being initialized")
    log.xid(inventory.gpus[2].pci_bus_id, 79)
    log.xid(inventory.gpus[4].pci_bus_id, 13)  # an application's fault: not the GPU's
    log.xid("0000:ff:00", 79)  # a GPU this inventory does not have
    with pytest.raises(UnhealthyDeviceError, match="Xid 79") as err:
        host(fake, leases, log.path).acquire("2")
    assert "kernel log" in str(err.value)
    assert "gpuroute health clear 2" in str(err.value)
    with host(fake, leases, log.path).acquire("any:7") as lease:
        assert sorted(d.gpu.index for d in lease.devices) == [0, 1, 3, 4, 5, 6, 7]
    # A process that reads no kernel log at all finds the mark beside the leases.
    with pytest.raises(UnhealthyDeviceError, match="Xid 79"):
        host(fake, leases).plan("2")
    # Cleared (after a reset, say): the Xids logged so far no longer count ...
    (previous,) = clear(
        [inventory.gpus[2].uuid], kernel=KernelLog(log.path).poll(), lease_dir=leases
    )
    assert previous is not None
    assert [m.xid for m in previous.marks] == [79]
    assert host(fake, leases, log.path).plan("2").uuids == (inventory.gpus[2].uuid,)
    # ... but a later one does, for a host that kept reading the log as for a new one
    # (within recheck_s a host's plan uses the health it read last; an acquisition reads).
    reader = host(fake, leases, log.path, recheck_s=3600)
    reader.plan("2")
    log.xid(inventory.gpus[2].pci_bus_id, 48)
    assert reader.plan("2").uuids == (inventory.gpus[2].uuid,)
    with pytest.raises(UnhealthyDeviceError, match="Xid 48"):
        reader.acquire("2")
    with pytest.raises(UnhealthyDeviceError, match="Xid 48"):
        reader.plan("2")
    eager = host(fake, leases, log.path, recheck_s=0)
    eager.plan("1")
    log.xid(inventory.gpus[1].pci_bus_id, 48)
    with pytest.raises(UnhealthyDeviceError, match="Xid 48"):
        eager.plan("1")
    with pytest.raises(UnhealthyDeviceError, match="Xid 48"):
        host(fake, leases, log.path).plan("2")


def test_fake_nvml_writes_its_xids_to_the_kernel_log(tmp_path: Path) -> None:
    inventory = topology("a100-mig-4")
    log = FakeKernelLog(tmp_path / "kmsg")
    fake = FakeNVML(inventory, kernel_log=log)
    fake.inject_xid(1, 95)
    fake.nvmlInit()
    events = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(fake.nvmlDeviceGetHandleByIndex(1), 0x8, events)
    fake.nvmlEventSetWait_v2(events, 0)  # someone else consumed the NVML event
    fake.nvmlShutdown()
    state = host(fake, tmp_path / "leases", log.path).live_state(inventory)
    gpu1 = inventory.gpus[1]
    assert any("Xid 95" in p for p in state.of(gpu1.uuid).problems)
    mig = next(d for d in inventory.devices() if d.mig is not None and d.gpu.index == 1)
    assert state.problems_of(mig), "a MIG device is as sick as its GPU"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "3,812,5123456,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, "
            "GPU has fallen off the bus.",
            ((0, 0x3B, 0), 79, 812, 5.123456),
        ),
        (
            "[ 1234.567890] NVRM: Xid (PCI:00000001:DB:00): 48, pid=-, An uncorrectable "
            "double bit error (DBE) has been detected on GPU",
            ((1, 0xDB, 0), 48, None, 1234.56789),
        ),
        (
            "Mar 03 10:00:00 node1 kernel: NVRM: Xid (PCI:0000:18:00.0): 94, pid=77, "
            "name=vllm, Contained: SM (0x1).",
            ((0, 0x18, 0), 94, None, None),
        ),
        (
            "4,90,77000000,-;NVRM: Xid (PCI:0000:01:00 GPU-I:05): 43, pid=5, Ch 00000008",
            ((0, 1, 0), 43, 90, 77.0),
        ),
        ("6,3,100,-;NVRM: Xid (0000:41:00): 31, pid=9, MMU Fault", ((0, 0x41, 0), 31, 3, 0.0001)),
    ],
)
def test_kernel_log_lines_in_every_spelling(
    line: str, expected: tuple[tuple[int, int, int], int, int | None, float | None]
) -> None:
    event = parse_record(line)
    assert event is not None
    assert (event.pci, event.xid, event.seq) == expected[:3]
    if expected[3] is None:
        assert event.kernel_time_s is None
    else:
        assert event.kernel_time_s == pytest.approx(expected[3])


@pytest.mark.parametrize(
    "line",
    [
        "6,1,1,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module",
        "NVRM: Xid (PCI:zz:00): 79, bad",
        "[  1.0] usb 1-1: new device",
        "NVRM: Xid (PCI:0000:3b:00): " + "9" * 50,
    ],
)
def test_other_kernel_lines_are_not_xids(line: str) -> None:
    assert parse_record(line) is None


def test_pci_ids_in_any_spelling_name_one_gpu() -> None:
    assert (
        pci_key("00000000:3B:00.0")
        == pci_key("0000:3b:00")
        == pci_key("3b:00.0")
        == pci_key("3B:00")
        == (0, 0x3B, 0)
    )
    assert pci_key("not a bus id") is None


def test_a_kernel_log_file_is_read_on_from_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "kmsg"
    path.write_text("6,1,100,-;hello\n6,2,200,-;NVRM: Xid (PCI:0000:3b:00): 7")
    reader = KernelLog(path)
    first = reader.poll()
    assert (first.readable, first.xids, first.last_seq) == (True, (), 1)
    with path.open("a") as log:
        log.write("9, pid=1, Unknown\n")  # the rest of the unfinished line
    (event,) = reader.poll().xids
    assert (event.xid, event.seq) == (79, 2)
    assert reader.poll().xids == (event,), "nothing is read twice"


def test_an_unreadable_kernel_log_says_why(tmp_path: Path) -> None:
    missing = KernelLog(tmp_path / "nope").poll()
    assert not missing.readable
    assert missing.reason is not None
    assert "does not exist" in missing.reason
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    odd = KernelLog(fifo).poll()  # never blocks on it
    assert not odd.readable


def test_the_real_kernel_log_is_read_without_blocking_and_within_bounds() -> None:
    """/dev/kmsg is record-oriented: each read returns one record. Where it is readable it
    is read to its end (and on from there); where not, the reason names dmesg_restrict."""
    started = time.monotonic()
    reader = KernelLog("/dev/kmsg")
    state = reader.poll()
    assert time.monotonic() - started < MAX_SECONDS + 1.0
    if state.readable:
        assert state.last_seq is not None, "records carry their sequence numbers"
        again = reader.poll()
        assert again.last_seq is not None
        assert again.last_seq >= state.last_seq
    else:
        assert state.reason is not None
        restricted = Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1"
        assert ("dmesg_restrict" in state.reason) == (
            restricted and os.path.exists("/dev/kmsg") and os.getuid() != 0
        )
    reader.close()


def test_an_unprivileged_reader_is_told_about_dmesg_restrict() -> None:
    """As a user other than root (a child that drops root, where the tests run as root)."""
    restricted = Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            state = KernelLog("/dev/kmsg").poll()
            os.write(write, (state.reason or "readable").encode()[:4000])
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    if restricted and os.path.exists("/dev/kmsg"):
        assert "dmesg_restrict is 1" in said
        assert "CAP_SYSLOG" in said
    else:
        assert said == "readable" or "does not exist" in said


def test_health_files_are_trusted_like_lease_files(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.inject_xid(5, 79)
    host(fake, tmp_path).live_state(inventory)
    store = HealthStore(LeaseDir(tmp_path))
    records, _ = store.read()
    assert list(records) == [inventory.gpus[5].uuid]
    # A planted symlink, a FIFO and garbage are set aside, never followed or waited on.
    target = tmp_path / "elsewhere.json"
    target.write_text(records[inventory.gpus[5].uuid].to_json())
    os.symlink(target, tmp_path / f"health-{inventory.gpus[0].uuid}.json")
    os.mkfifo(tmp_path / f"health-{inventory.gpus[1].uuid}.json")
    (tmp_path / f"health-{inventory.gpus[2].uuid}.json").write_text("{" * 100_000)
    again, notes = store.read()
    assert list(again) == [inventory.gpus[5].uuid]
    assert len(notes) == 3
    assert all("set aside" in n for n in notes)
    state = host(fake, tmp_path).live_state(inventory)
    assert [d.label for d in inventory.devices() if state.problems_of(d)] == ["5"]


def test_an_xid_is_not_lost_where_no_lease_directory_can_be_used(tmp_path: Path) -> None:
    inventory = topology("h100-sxm-8")
    fake = FakeNVML(inventory)
    fake.inject_xid(6, 74)
    blocker = tmp_path / "file"
    blocker.write_text("")
    state = host(fake, blocker / "leases").live_state(inventory)
    (problem,) = state.of(inventory.gpus[6].uuid).problems
    assert "Xid 74" in problem
    assert "not recorded for other processes" in problem


def test_doctor_says_whether_the_kernel_log_is_readable(h100: Inventory, tmp_path: Path) -> None:
    from gpuroute.doctor import diagnose

    fake = FakeNVML(h100)
    log = FakeKernelLog(tmp_path / "kmsg")
    log.xid(h100.gpus[7].pci_bus_id, 79)
    checks = diagnose(inventory=h100, nvml=fake, lease_dir=str(tmp_path), kernel_log=log.path)
    by_name = {c.name: c for c in checks}
    assert by_name["Kernel log"].status == "ok"
    assert "1 Xid" in by_name["Kernel log"].detail
    assert by_name["GPU health"].status == "warn"
    assert "Xid 79" in by_name["GPU health"].detail
    assert "gpuroute health clear" in by_name["GPU health"].fix
    missing = diagnose(
        inventory=h100, nvml=fake, lease_dir=str(tmp_path), kernel_log=tmp_path / "none"
    )
    kernel = next(c for c in missing if c.name == "Kernel log")
    assert kernel.status == "warn"
    assert "does not exist" in kernel.detail
    assert "NVML" in kernel.detail
