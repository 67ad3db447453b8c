"""GPU leases on a shared host: race-free, daemon-free, and self-cleaning.

A lease directory (default ``/run/gpuroute/leases``; ``GPUROUTE_LEASE_DIR`` or ``lease_dir=``)
holds one small JSON file per leased device, ``dev-<UUID>.json``, naming the lease that holds
it. Every change happens under an exclusive ``flock`` on the directory's ``lock`` file, so two
acquisitions never see the same free device, across processes and users. Files are written
to a temporary name and renamed into place, so a reader never sees half a record; a record
that is unreadable anyway (a crash, a disk error, an edit) is moved aside as
``corrupt-…`` and only that device is affected.

A lease records who holds it (uid and user name), its holder (the work that keeps it alive,
named the same way for every backend: a process with its start time, so that a reused pid is
not mistaken for it, a container, a compose service; see ``gpuroute.records``), the boot id,
its creation time and an optional TTL. A lease is stale, and reclaimed by the next
acquisition, when its holder's backend says the holder is gone, the host rebooted, or its TTL
passed.

Leases are advisory, like every daemon-free scheme: they keep cooperating users (and their
scripts) from colliding. They do not stop someone who bypasses gpuroute.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from gpuroute.backends.local import (
    process_alive,
    process_holder,
    process_start_time,
    process_state,
)
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.plan import RoutingPlan
from gpuroute.core.selection import HostState, Need, choose
from gpuroute.core.spec import Kind, ParsedSpec
from gpuroute.errors import (
    DeviceLeasedError,
    LeaseDirError,
    LeaseError,
    LimitExceededError,
    NoFreeDeviceError,
    UnhealthyDeviceError,
)
from gpuroute.limits import Policy
from gpuroute.records import Holder, LeaseRecord

__all__ = [
    "DEFAULT_LEASE_DIR",
    "lease_dir_path",
    "LEASE_DIR_ENV",
    "Acquisition",
    "Alive",
    "Holder",
    "Lease",
    "LeaseDir",
    "LeaseRecord",
    "boot_id",
    "caller_identity",
    "process_start_time",
    "reclaim_stale",
    "stale_reason",
]

DEFAULT_LEASE_DIR = "/run/gpuroute/leases"
LEASE_DIR_ENV = "GPUROUTE_LEASE_DIR"
_PREFIX = "dev-"
_SUFFIX = ".json"

Alive = Callable[[Holder], "bool | None"]
"""Asks the holder's backend whether a holder lives: True, False (gone) or None (unknown)."""


@functools.cache
def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); empty where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def local_only(holder: Holder) -> bool | None:
    """The ``Alive`` that probes processes only (it needs no engine); other holders are
    unknown, and so kept."""
    return process_alive(holder) if holder.backend == "local" else None


def stale_reason(
    record: LeaseRecord, *, now: float, this_boot: str, alive: Alive = local_only
) -> str | None:
    """Why a lease no longer holds its devices, or None while it does."""
    if record.boot_id and this_boot and record.boot_id != this_boot:
        return "the host rebooted since it was taken"
    expires = record.expires()
    if expires is not None and now >= expires:
        return f"its TTL of {record.ttl_s:g}s passed"
    holder = record.holder
    if alive(holder) is not False:
        return None
    if holder.backend == "local" and holder.pid is not None:
        state = process_state(holder.pid)
        if state in ("Z", "X"):
            return f"its process {holder.id} has ended (a zombie its parent never collected)"
        if state is not None:
            return f"its process {holder.id} has ended (the pid now belongs to another process)"
        return f"its process {holder.id} has ended"
    return f"its {holder.describe()} is gone"


def lease_dir_path(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The lease directory: ``path``, else ``GPUROUTE_LEASE_DIR``, else the default."""
    env = os.environ if environ is None else environ
    return Path(path or env.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)


class LeaseDir:
    """The lease directory: its safety checks, its lock, and its device files."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = lease_dir_path(path, environ)
        self._dir = str(self.path)  # plain strings on the hot path
        self._lock = f"{self._dir}/lock"
        self._check(create)

    def _check(self, create: bool) -> None:
        me = os.getuid()
        fix = (
            f"ask an administrator to run `install -d -m 0777 {self.path}` (a tmpfiles.d rule "
            f"keeps it across reboots); a directory of your own ({LEASE_DIR_ENV}) keeps "
            "leases among your own jobs only"
        )
        try:
            info = os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise LeaseDirError(f"lease directory {self.path} does not exist; {fix}") from None
            try:
                self.path.mkdir(parents=True, mode=0o777, exist_ok=True)  # others may race us
                with contextlib.suppress(PermissionError):  # another user made it first
                    os.chmod(self.path, 0o777)  # noqa: S103 - shared by every user of the host
            except OSError as exc:
                raise LeaseDirError(
                    f"lease directory {self.path} does not exist and cannot be created "
                    f"({exc.strerror}); {fix}"
                ) from exc
            info = os.lstat(self.path)
        if stat.S_ISLNK(info.st_mode):
            raise LeaseDirError(f"lease directory {self.path} is a symlink; refusing it ({fix})")
        if not stat.S_ISDIR(info.st_mode):
            raise LeaseDirError(f"{self.path} is not a directory; {fix}")
        if info.st_uid not in (0, me):
            raise LeaseDirError(
                f"lease directory {self.path} belongs to uid {info.st_uid}, who could swap "
                f"its files; it must belong to root or to you. {fix}"
            )
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise LeaseDirError(f"lease directory {self.path} is not writable for uid {me}; {fix}")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (a kernel flock, released if we die)."""
        fd = self._open(self._lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o666:
                with contextlib.suppress(PermissionError):
                    os.fchmod(fd, 0o666)  # every user must be able to open it
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _open(path: str, flags: int, mode: int = 0o644) -> int:
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LeaseDirError(f"{path} is a symlink; remove it") from exc
            raise LeaseDirError(f"cannot open {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LeaseDirError(f"{path} is not a regular file; remove it")
        return fd

    def _device_file(self, uuid: str) -> str:
        return f"{self._dir}/{_PREFIX}{uuid}{_SUFFIX}"

    def held(self) -> set[str]:
        """The UUIDs that have a lease file (call under the lock). Names only: fast."""
        return {
            name[len(_PREFIX) : -len(_SUFFIX)]
            for name in os.listdir(self._dir)
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX)
        }

    def read(self) -> tuple[dict[str, LeaseRecord], list[str]]:
        """Every device's record (call under the lock), and notes on files set aside."""
        records: dict[str, LeaseRecord] = {}
        notes: list[str] = []
        for entry in os.scandir(self.path):
            if not (entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX)):
                continue
            uuid = entry.name[len(_PREFIX) : -len(_SUFFIX)]
            try:
                record = self._load(entry.path)
                if uuid not in record.devices:
                    raise ValueError("the record does not hold this device")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError) as exc:
                notes.append(self._set_aside(entry.name, exc))
                continue
            records[uuid] = record
        return records, notes

    @staticmethod
    def _load(path: str) -> LeaseRecord:
        """One record file. Never follows a link and never blocks: a FIFO or a device
        planted in the directory is refused, not waited on."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError("not a regular file")
            return LeaseRecord.from_json(os.read(fd, 1 << 16).decode())
        finally:
            os.close(fd)

    def _set_aside(self, name: str, exc: BaseException) -> str:
        aside = f"corrupt-{name}-{int(time.time())}-{os.urandom(3).hex()}"
        with contextlib.suppress(OSError):
            os.rename(self.path / name, self.path / aside)
        return f"set aside the unreadable lease file {name} as {aside} ({exc})"

    def write(self, record: LeaseRecord) -> None:
        """Write the record into each of its device files (call under the lock)."""
        data = record.to_json().encode()
        written: list[str] = []
        try:
            for uuid in record.devices:
                tmp = f"{self._dir}/.tmp-{uuid}-{os.getpid()}-{os.urandom(4).hex()}"
                fd = self._open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                    os.rename(tmp, self._device_file(uuid))
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
                written.append(uuid)
        except BaseException:
            for uuid in written:  # all or nothing
                self.remove(uuid, record.lease_id)
            raise

    def remove(self, uuid: str, lease_id: str | None = None) -> None:
        """Remove a device file (only if it still belongs to ``lease_id``, when given)."""
        path = self._device_file(uuid)
        if lease_id is not None:
            try:
                current = self._load(path)
            except (OSError, ValueError, TypeError, KeyError):
                return
            if current.lease_id != lease_id:
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@dataclass
class Lease:
    """Devices held for one piece of work. ``plan`` routes exactly them; ``release()`` (or
    leaving the ``with`` block) gives them back."""

    plan: RoutingPlan
    record: LeaseRecord
    directory: LeaseDir
    notes: list[str] = field(default_factory=list)
    released: bool = False

    @property
    def id(self) -> str:
        return self.record.lease_id

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.plan.devices

    @property
    def holder(self) -> Holder:
        return self.record.holder

    def bind(self, holder: Holder) -> None:
        """Name ``holder`` (the process, container or service doing the work) as the one
        that keeps this lease: it then lives exactly as long as that holder does."""
        record = replace(self.record, holder=holder)
        with self.directory.locked():
            current, _ = self.directory.read()
            if any(
                current.get(u) is None or current[u].lease_id != self.id for u in record.devices
            ):
                raise LeaseError(f"lease {self.id} no longer holds its devices; it was reclaimed")
            self.directory.write(record)
        self.record = record

    def attach(
        self,
        *,
        pid: int | None = None,
        container_id: str | None = None,
        docker_host: str | None = None,
    ) -> None:
        """``bind`` to a process of this host, or to a docker container (shorthand)."""
        if container_id is not None:
            self.bind(Holder("docker", container_id, docker_host))
        elif pid is not None:
            self.bind(process_holder(pid))

    def release(self) -> None:
        """Give the devices back. Safe to call twice."""
        if self.released:
            return
        with self.directory.locked():
            for uuid in self.record.devices:
                self.directory.remove(uuid, self.id)
        self.released = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def caller_identity() -> tuple[int, str]:
    """The caller's OS uid and user name: the only identity leases and limits use."""
    uid = os.getuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, str(uid)


Plan = Callable[[ParsedSpec | str], RoutingPlan]
"""Resolves a spec (the request's own, or the devices chosen for ``any:N``) into the plan,
with the request's options."""


@dataclass
class Acquisition:
    """One request for a lease, against one lease directory: what to choose from, who asks,
    who will hold it, and how liveness is judged. ``once(state)`` tries to take it."""

    spec: ParsedSpec
    plan: Plan
    inventory: Inventory
    directory: LeaseDir
    policy: Policy
    context: CallerContext
    need: Need
    holder: Holder
    alive: Alive = local_only
    ttl_s: float | None = None
    local_only_target: bool = False
    notes: list[str] = field(default_factory=list)
    _records: dict[str, LeaseRecord] | None = None

    def once(self, state: HostState) -> Lease:
        """Take the lease now, or raise (NoFreeDeviceError, DeviceLeasedError, ...)."""
        self.notes = []
        self._records = None
        if state.source == "none":
            self.notes.append(
                "no live GPU state (NVML unavailable): only leases decide what is free"
            )
        allowed: set[str] | None = None
        if self.local_only_target:
            visible = self.context.visible_devices(self.inventory)  # ContextError if unreadable
            if visible is not None:
                allowed = {d.uuid for d in visible}
        # Fast path: choose from the lease files' names without the lock, then take the lock
        # only to check that nobody took those devices meanwhile and to write the files. The
        # lock is held for a directory listing and a few renames.
        if not self.policy.active:
            for _ in range(3):
                try:
                    plan = self._pick(state, self.directory.held(), allowed, locked=False)
                except (NoFreeDeviceError, DeviceLeasedError):
                    break
                with self.directory.locked():
                    if self.directory.held().isdisjoint(plan.uuids):
                        return self._take(plan, time.time())
        # Slow path, all under the lock: limits, precise errors, and reclaiming stale leases.
        with self.directory.locked():
            now = time.time()
            held = self.directory.held()
            try:
                plan = self._pick(state, held, allowed, locked=True)
            except (NoFreeDeviceError, DeviceLeasedError, LimitExceededError):
                # Only now read every record and look for stale ones: the common path reads
                # file names alone and probes no holder. Unreadable files are set aside.
                current = self._read()
                set_aside = len(current) < len(held)
                if not (self._reclaim(current, now) or set_aside):
                    raise
                plan = self._pick(state, set(current), allowed, locked=True)
            return self._take(plan, now)

    def _read(self) -> dict[str, LeaseRecord]:
        """The lease files' contents, read on demand (under the lock): the common path needs
        only names."""
        if self._records is None:
            self._records, aside = self.directory.read()
            self.notes.extend(aside)
        return self._records

    def _pick(
        self, state: HostState, held: set[str], allowed: set[str] | None, *, locked: bool
    ) -> RoutingPlan:
        token = self.spec.tokens[0] if self.spec.tokens else None
        if token is not None and token.kind is Kind.ANY:
            need = replace(self.need, count=token.index or 1)
            devices = choose(
                need, self.inventory, state, held, spec=self.spec.text, allowed=allowed
            )
            plan = self.plan(",".join(d.label for d in devices))
        else:
            plan = self.plan(self.spec)
        for device in plan.devices:
            if device.uuid in held:
                # Records are read only under the lock: a read outside it could be stale.
                record = self._read().get(device.uuid) if locked else None
                who = (
                    f"{record.user} ({record.describe()})"
                    if record
                    else "a lease whose file is unreadable"
                )
                raise DeviceLeasedError(
                    f"{device.describe()} is leased to {who}; choose another device, or ask "
                    "for any free one with 'any:N'",
                    spec=self.spec.text,
                )
            problems = state.problems_of(device)
            if problems:
                raise UnhealthyDeviceError(
                    f"{device.describe()} is unhealthy and is not given out: {'; '.join(problems)}",
                    spec=self.spec.text,
                )
        if self.policy.active:
            uid, user = caller_identity()
            self.policy.check(uid, user, plan.devices, self._read().values(), self.inventory)
        return plan

    def _take(self, plan: RoutingPlan, now: float) -> Lease:
        """Write the lease's files (under the lock) and return it."""
        uid, user = caller_identity()
        record = LeaseRecord(
            lease_id=os.urandom(6).hex(),
            devices=plan.uuids,
            spec=self.spec.text,
            uid=uid,
            user=user,
            holder=self.holder,
            boot_id=boot_id(),
            created=now,
            ttl_s=self.ttl_s,
        )
        if plan.devices:
            self.directory.write(record)
        return Lease(plan, record, self.directory, list(self.notes))

    def _reclaim(self, records: dict[str, LeaseRecord], now: float) -> bool:
        """Remove the files of stale leases (under the lock); say whether there were any."""
        notes = reclaim_stale(self.directory, records, now=now, alive=self.alive)
        self.notes.extend(notes)
        return bool(notes)


def reclaim_stale(
    directory: LeaseDir, records: dict[str, LeaseRecord], *, now: float, alive: Alive = local_only
) -> list[str]:
    """Remove the files of stale leases from ``directory`` and ``records`` (call under the
    lock); a note for each device reclaimed. A file is removed only while it still holds
    the stale lease: a newer lease of the same device keeps its file."""
    verdicts: dict[str, str | None] = {}
    this_boot = boot_id()
    notes: list[str] = []
    for uuid, record in list(records.items()):
        if record.lease_id not in verdicts:
            verdicts[record.lease_id] = stale_reason(
                record, now=now, this_boot=this_boot, alive=alive
            )
        reason = verdicts[record.lease_id]
        if reason is not None:
            directory.remove(uuid, record.lease_id)  # only if it is still that lease's file
            del records[uuid]
            notes.append(f"reclaimed {uuid} from {record.user}'s lease {record.lease_id}: {reason}")
    return notes
