"""GPU health marks shared by every process of the host, beside the leases.

A critical Xid makes its GPU unhealthy for every process on the host until someone clears
the mark. Xids come from two places: NVML's events, which NVML delivers to one reader only
(whoever reads first must record them), and the kernel log, which keeps every Xid since
boot (``gpuroute.kernel_log``). Both are judged by the same rule as NVML's events
(``gpuroute.nvml.critical_xid``: every Xid but those an application causes).

A mark is a file ``health-<UUID>.json`` in the lease directory (schema
``gpuroute.health/1``), written to a temporary name and renamed into place under the
directory's lock, and read with the same rules as lease files: never through a symlink,
never blocking on a FIFO, bounded in size; an unreadable one is set aside as ``corrupt-…``.
A mark belongs to the boot it was made in. Clearing it (``gpuroute health clear GPU``,
``clear()``) empties it and records how far the kernel log had got, so that the Xids already
logged do not mark the GPU again; a later Xid does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gpuroute.core.inventory import GPU, Inventory
from gpuroute.core.selection import DeviceState, HostState
from gpuroute.errors import LeaseDirError, LeaseError
from gpuroute.kernel_log import KernelLogState, XidEvent, pci_key
from gpuroute.leases import LeaseDir, boot_id, caller_identity
from gpuroute.nvml import XID_PROBLEM, critical_xid

__all__ = [
    "SCHEMA",
    "Cleared",
    "HealthRecord",
    "HealthStore",
    "XidMark",
    "clear",
    "observe",
]

SCHEMA = "gpuroute.health/1"
_PREFIX = "health-"
_SUFFIX = ".json"
MAX_MARKS = 32
"""Xids kept in one mark (the first and the latest)."""
_MAX_FILE = 1 << 16


def _number(value: object, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if abs(value) > 1e15:
        raise ValueError(f"{name} is out of range: {value!r}")
    return float(value)


def _integer(value: object, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return value


def _text(value: object, name: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return value


@dataclass(frozen=True)
class XidMark:
    """One recorded Xid of a GPU."""

    xid: int
    source: str
    """``kernel_log`` or ``nvml`` (an NVML event, which only its first reader saw)."""
    seen: float
    """When it was recorded (seconds since the epoch)."""
    message: str = ""
    seq: int | None = None
    kernel_time_s: float | None = None

    @classmethod
    def of(cls, event: XidEvent, seen: float) -> XidMark:
        return cls(event.xid, "kernel_log", seen, event.message, event.seq, event.kernel_time_s)

    def same(self, event: XidEvent) -> bool:
        """Whether this mark records that kernel-log line."""
        return (
            self.source == "kernel_log"
            and self.xid == event.xid
            and self.seq == event.seq
            and self.kernel_time_s == event.kernel_time_s
            and self.message == event.message
        )

    def describe(self) -> str:
        where = "the kernel log" if self.source == "kernel_log" else "NVML"
        when = f" at {self.kernel_time_s:.1f} s after boot" if self.kernel_time_s else ""
        text = f": {self.message}" if self.message else ""
        return f"Xid {self.xid}{when} in {where}{text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "xid": self.xid,
            "source": self.source,
            "seen": self.seen,
            "message": self.message,
            "seq": self.seq,
            "kernel_time_s": self.kernel_time_s,
        }

    @classmethod
    def from_dict(cls, data: object) -> XidMark:
        if not isinstance(data, dict):
            raise ValueError("an Xid mark must be an object")
        source = _text(data.get("source"), "source")
        if source not in ("kernel_log", "nvml"):
            raise ValueError(f"unknown source {source!r}")
        xid = _integer(data.get("xid"), "xid")
        seen = _number(data.get("seen"), "seen")
        assert xid is not None
        assert seen is not None
        return cls(
            xid=xid,
            source=source,
            seen=seen,
            message=_text(data.get("message", ""), "message"),
            seq=_integer(data.get("seq"), "seq", optional=True),
            kernel_time_s=_number(data.get("kernel_time_s"), "kernel_time_s", optional=True),
        )


@dataclass(frozen=True)
class Cleared:
    """Who cleared a GPU's mark, when, and how far the kernel log had got then."""

    at: float
    uid: int
    user: str
    seq: int | None = None
    kernel_time_s: float | None = None

    def covers(self, event: XidEvent) -> bool:
        """Whether a kernel-log Xid was logged before this clearing (by its record's sequence
        number, else its time stamp; a line with neither counts as before)."""
        if self.seq is not None and event.seq is not None:
            return event.seq <= self.seq
        if self.kernel_time_s is not None and event.kernel_time_s is not None:
            return event.kernel_time_s <= self.kernel_time_s
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "uid": self.uid,
            "user": self.user,
            "seq": self.seq,
            "kernel_time_s": self.kernel_time_s,
        }

    @classmethod
    def from_dict(cls, data: object) -> Cleared:
        if not isinstance(data, dict):
            raise ValueError("cleared must be an object")
        at = _number(data.get("at"), "at")
        uid = _integer(data.get("uid"), "uid")
        assert at is not None
        assert uid is not None
        return cls(
            at=at,
            uid=uid,
            user=_text(data.get("user"), "user"),
            seq=_integer(data.get("seq"), "seq", optional=True),
            kernel_time_s=_number(data.get("kernel_time_s"), "kernel_time_s", optional=True),
        )


@dataclass(frozen=True)
class HealthRecord:
    """A GPU's mark: the Xids recorded since it was last cleared (none: healthy again)."""

    uuid: str
    boot_id: str
    marks: tuple[XidMark, ...] = ()
    cleared: Cleared | None = None

    @property
    def unhealthy(self) -> bool:
        return bool(self.marks)

    def problem(self, label: str) -> str:
        xids = ", ".join(dict.fromkeys(str(m.xid) for m in self.marks))
        return (
            f"{XID_PROBLEM} {xids} recorded ({self.marks[-1].describe()}); unhealthy for "
            f"every user until cleared with `gpuroute health clear {label}`"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "uuid": self.uuid,
                "boot_id": self.boot_id,
                "marks": [m.to_dict() for m in self.marks],
                "cleared": self.cleared.to_dict() if self.cleared else None,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> HealthRecord:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} record")
        marks = data.get("marks")
        if not isinstance(marks, list) or len(marks) > MAX_MARKS:
            raise ValueError(f"marks must be a list of at most {MAX_MARKS}")
        cleared = data.get("cleared")
        return cls(
            uuid=_text(data.get("uuid"), "uuid", 128),
            boot_id=_text(data.get("boot_id"), "boot_id", 64),
            marks=tuple(XidMark.from_dict(m) for m in marks),
            cleared=Cleared.from_dict(cleared) if cleared is not None else None,
        )

    def adding(self, marks: Iterable[XidMark]) -> HealthRecord:
        every = [*self.marks, *marks]
        if len(every) > MAX_MARKS:
            every = [every[0], *every[-(MAX_MARKS - 1) :]]
        return replace(self, marks=tuple(every))


class HealthStore:
    """The health marks in a lease directory."""

    def __init__(self, directory: LeaseDir) -> None:
        self.directory = directory
        self._dir = str(directory.path)

    def _file(self, uuid: str) -> str:
        if "/" in uuid or uuid.startswith("."):
            raise LeaseError(f"not a device UUID: {uuid!r}")
        return f"{self._dir}/{_PREFIX}{uuid}{_SUFFIX}"

    def read(self) -> tuple[dict[str, HealthRecord], list[str]]:
        """Every GPU's mark of this boot, and notes on files set aside."""
        records: dict[str, HealthRecord] = {}
        notes: list[str] = []
        this_boot = boot_id()
        for entry in os.scandir(self._dir):
            if not (entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX)):
                continue
            uuid = entry.name[len(_PREFIX) : -len(_SUFFIX)]
            try:
                record = self._load(entry.path)
                if record.uuid != uuid:
                    raise ValueError("the record is not this device's")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
                notes.append(self._set_aside(entry.name, exc))
                continue
            if record.boot_id and this_boot and record.boot_id != this_boot:
                continue  # a mark of an earlier boot: the GPU has been reset since
            records[uuid] = record
        return records, notes

    @staticmethod
    def _load(path: str) -> HealthRecord:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError("not a regular file")
            data = os.read(fd, _MAX_FILE + 1)
            if len(data) > _MAX_FILE:
                raise ValueError("larger than a health record can be")
            return HealthRecord.from_json(data.decode())
        finally:
            os.close(fd)

    def _set_aside(self, name: str, exc: BaseException) -> str:
        aside = f"corrupt-{name}-{int(time.time())}-{os.urandom(3).hex()}"
        with contextlib.suppress(OSError):
            os.rename(f"{self._dir}/{name}", f"{self._dir}/{aside}")
        return f"set aside the unreadable health file {name} as {aside} ({exc})"

    def _write(self, record: HealthRecord) -> None:
        target = self._file(record.uuid)
        tmp = f"{self._dir}/.tmp-{_PREFIX}{record.uuid}-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
            )
            try:
                os.write(fd, record.to_json().encode())
            finally:
                os.close(fd)
            os.rename(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise LeaseDirError(
                f"cannot write the health mark {target}: {exc.strerror}; in a sticky (1777) "
                "directory only the file's owner or root may replace it"
            ) from exc

    def add(
        self, found: Mapping[str, list[XidMark]], events: Mapping[str, list[XidEvent]]
    ) -> dict[str, HealthRecord]:
        """Record new Xids (under the lock): ``found`` as they are, ``events`` from the
        kernel log unless already recorded or cleared. Returns the marks as they now are."""
        with self.directory.locked():
            records, _ = self.read()
            this_boot = boot_id()
            now = time.time()
            for uuid in {*found, *events}:
                current = records.get(uuid) or HealthRecord(uuid, this_boot)
                new = list(found.get(uuid, ()))
                for event in events.get(uuid, ()):
                    if current.cleared is not None and current.cleared.covers(event):
                        continue
                    if any(m.same(event) for m in current.marks):
                        continue
                    new.append(XidMark.of(event, now))
                if new:
                    records[uuid] = current.adding(new)
                    self._write(records[uuid])
            return records

    def clear(self, uuid: str, kernel: KernelLogState | None) -> HealthRecord | None:
        """Clear a GPU's mark (under the lock); the previous record, if there was one."""
        with self.directory.locked():
            records, _ = self.read()
            previous = records.get(uuid)
            uid, user = caller_identity()
            monotonic = time.clock_gettime(time.CLOCK_MONOTONIC)
            last_time = kernel.last_time_s if kernel is not None else None
            cleared = Cleared(
                at=time.time(),
                uid=uid,
                user=user,
                seq=kernel.last_seq if kernel is not None else None,
                kernel_time_s=max(monotonic, last_time or 0.0),
            )
            self._write(HealthRecord(uuid, boot_id(), (), cleared))
            return previous


def _store(
    lease_dir: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    *,
    create: bool,
) -> HealthStore | None:
    try:
        return HealthStore(LeaseDir(lease_dir, create=create, environ=environ))
    except LeaseDirError:
        return None


@dataclass
class _Seen:
    records: dict[str, HealthRecord] = field(default_factory=dict)
    unrecorded: dict[str, list[XidMark]] = field(default_factory=dict)
    why_unrecorded: str | None = None


def observe(
    inventory: Inventory,
    state: HostState,
    *,
    kernel: KernelLogState | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> HostState:
    """The live state with the host's health marks: record the critical Xids that NVML
    delivered in ``state`` and those of the kernel log not yet recorded (nor cleared), and
    make every GPU with a mark unhealthy. Where the lease directory cannot be used, the
    Xids seen now still count, and the problem says they could not be recorded."""
    gpus = {g.uuid: g for g in inventory.gpus}
    by_pci: dict[tuple[int, int, int], GPU] = {}
    for gpu in inventory.gpus:
        key = pci_key(gpu.pci_bus_id)
        if key is not None:
            by_pci[key] = gpu
    now = time.time()
    found: dict[str, list[XidMark]] = {}
    for uuid, device in state.devices.items():
        if uuid in gpus:
            for xid in device.xids:
                found.setdefault(uuid, []).append(XidMark(xid, "nvml", now))
    events: dict[str, list[XidEvent]] = {}
    for event in kernel.xids if kernel is not None else ():
        owner = by_pci.get(event.pci)
        if owner is not None and critical_xid(event.xid):
            events.setdefault(owner.uuid, []).append(event)
    seen = _Seen()
    store = _store(lease_dir, environ, create=False)
    if store is not None:
        seen.records, _ = store.read()
    pending = _pending(seen.records, found, events)
    if pending:
        store = store or _store(lease_dir, environ, create=True)
        try:
            if store is None:
                raise LeaseDirError("no usable lease directory")
            seen.records = store.add(found, events)
        except (LeaseDirError, OSError) as exc:
            seen.unrecorded = pending
            seen.why_unrecorded = getattr(exc, "message", None) or str(exc)
    devices = dict(state.devices)
    for uuid, gpu in gpus.items():
        record = seen.records.get(uuid)
        extra = seen.unrecorded.get(uuid)
        if not (record and record.unhealthy) and not extra:
            continue
        if extra:
            marks = HealthRecord(uuid, "", tuple(extra))
            problem = marks.problem(str(gpu.index)).split("; unhealthy")[0] + (
                f"; not recorded for other processes: {seen.why_unrecorded}"
            )
        else:
            assert record is not None
            problem = record.problem(str(gpu.index))
        current = devices.get(uuid) or DeviceState(uuid)
        kept = tuple(p for p in current.problems if not p.startswith(XID_PROBLEM))
        devices[uuid] = replace(current, problems=(*kept, problem))
    return HostState(devices, state.distances, state.source)


def _pending(
    records: Mapping[str, HealthRecord],
    found: Mapping[str, list[XidMark]],
    events: Mapping[str, list[XidEvent]],
) -> dict[str, list[XidMark]]:
    """The Xids not recorded yet: every NVML one, and kernel-log ones neither recorded nor
    cleared."""
    now = time.time()
    pending = {uuid: list(marks) for uuid, marks in found.items() if marks}
    for uuid, evs in events.items():
        record = records.get(uuid)
        for event in evs:
            if record is not None and record.cleared is not None and record.cleared.covers(event):
                continue
            if record is not None and any(m.same(event) for m in record.marks):
                continue
            pending.setdefault(uuid, []).append(XidMark.of(event, now))
    return pending


def clear(
    uuids: Iterable[str],
    *,
    kernel: KernelLogState | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[HealthRecord | None]:
    """Clear the health marks of these GPUs (after a reset, say): their recorded Xids are
    forgotten, and those the kernel log holds so far no longer count. ``kernel`` is the
    kernel log read to its end now (its last record marks the point). Returns each GPU's
    previous record (None where it had none)."""
    store = HealthStore(LeaseDir(lease_dir, create=True, environ=environ))
    return [store.clear(uuid, kernel) for uuid in uuids]
