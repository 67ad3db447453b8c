"""GPU leases on a shared host: race-free, daemon-free, and self-cleaning.

A lease directory (default ``/run/gpuroute/leases``; ``GPUROUTE_LEASE_DIR`` or ``lease_dir=``)
holds one small JSON file per lease, created and owned by the lease's user, under one name per
device, ``dev-<UUID>.<lease id>.json`` (hard links to the one file; separate copies where the
file system has no hard links). Every acquisition happens under an exclusive ``flock`` on the
directory itself, waited for at most ``DEFAULT_LOCK_TIMEOUT_S``, so two acquisitions never see
the same free device, across processes and users. The file is written to a temporary name and
renamed into place, so a reader never sees half a record; a device is held while its name is
there. A record that is unreadable anyway (a crash, a disk error, an edit) is moved aside as
``corrupt-…`` and only that device is affected.

A lease records who holds it (uid and user name), its holder (the work that keeps it alive,
named the same way for every backend: a process with its start time, so that a reused pid is
not mistaken for it, a container, a compose service; see ``gpuroute.records``), the boot id,
its creation time and an optional TTL. A lease is stale, and reclaimed by the next
acquisition, when its holder's backend says the holder is gone, the host rebooted, or its TTL
passed.

In the shared directory (root-owned, mode 1777) a user can delete or replace only their own
files, and a record counts only in a file owned by the user it names (or by root); docs/leases.md
says what this guarantees against whom. Leases are advisory, like every daemon-free scheme:
they do not stop someone who runs work on a GPU without one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import pwd
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpuroute.backends.local import (
    process_alive,
    process_holder,
    process_start_time,
    process_state,
)
from gpuroute.core.closing import Closing
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
    "DEFAULT_LOCK_TIMEOUT_S",
    "lock_holder",
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
_MAX_RECORD = 1 << 16
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_BAD_RECORD = (ValueError, TypeError, KeyError, ArithmeticError, RecursionError)
"""What reading a planted or damaged record may raise (OSError aside)."""
DEFAULT_LOCK_TIMEOUT_S = 30.0
"""How long an acquisition waits for the lease directory's lock. gpuroute holds it for
milliseconds (longer only while it asks an engine whether a container lives); a process
that holds it longer is stuck or hostile, and is named in the error."""

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


def _split(name: str) -> tuple[str, str | None] | None:
    """A lease file's name -> (device UUID, lease id); None for any other name. A name of the
    earlier layout (``dev-<UUID>.json``, one file per device) has no lease id."""
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    rest = name[len(_PREFIX) : -len(_SUFFIX)]
    uuid, dot, lease_id = rest.rpartition(".")
    return (uuid, lease_id) if dot else (rest, None)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def lock_holder(info: os.stat_result, locks: str = "/proc/locks") -> str:
    """Who holds a lock on the file ``info`` describes, from ``/proc/locks``: its pid, user
    and command, or what is known of it."""
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path(locks).read_text().splitlines()
    except OSError:
        return "a process this host does not name (no /proc/locks)"
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[5] != inode:
            continue  # "->": a waiter, not the holder
        pid = fields[4]
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return f"pid {pid} (not visible from here)"
        return f"pid {pid} ({command}) of user {_user_name(uid)} (uid {uid})"
    return "a process that has since let go"


class LeaseDir:
    """The lease directory: its safety checks, its lock, and its lease files.

    Every lease has one file, created by its owner and owned by them, under one name per
    device, ``dev-<UUID>.<lease id>.json``; a name counts only for a device its record holds,
    under its record's lease id. The directory itself is the lock (a kernel ``flock`` on it,
    waited for at most ``lock_timeout_s``), so that no user can swap or delete the lock. A
    record counts only in a file owned by the user it names (or by root). See docs/leases.md
    for what this guarantees against whom.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        environ: Mapping[str, str] | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        # A plain string on the hot path; ``path`` is the same, as a Path.
        self._dir = os.fspath(path or env.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)
        self.lock_timeout_s = DEFAULT_LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s
        self._me = os.getuid()
        self._local = threading.local()  # the locked directory's fd, per thread
        self._check(create)

    @functools.cached_property
    def path(self) -> Path:
        """The directory (``lease_dir_path`` of what was given)."""
        return Path(self._dir)

    def _fix(self) -> str:
        return (
            f"ask an administrator to run `install -d -m 1777 {self.path}` (root-owned and "
            f"sticky; a tmpfiles.d rule keeps it across reboots); a directory of your own "
            f"({LEASE_DIR_ENV}) keeps leases among your own jobs only"
        )

    def _check(self, create: bool) -> None:
        try:
            info = os.lstat(self._dir)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise LeaseDirError(
                    f"lease directory {self.path} does not exist; {self._fix()}"
                ) from None
            # root creates the shared directory (sticky: nobody removes another's files);
            # anyone else a directory of their own.
            mode = 0o1777 if self._me == 0 else 0o755
            try:
                self.path.mkdir(parents=True, mode=mode, exist_ok=True)  # others may race us
                info = os.lstat(self.path)
                if info.st_uid == self._me and stat.S_IMODE(info.st_mode) != mode:
                    os.chmod(self.path, mode)  # the umask narrowed it
                    info = os.lstat(self.path)
            except OSError as exc:
                raise LeaseDirError(
                    f"lease directory {self.path} does not exist and cannot be created "
                    f"({exc.strerror}); {self._fix()}"
                ) from exc
        self._validate(info)
        if not os.access(self._dir, os.W_OK | os.X_OK):
            raise LeaseDirError(
                f"lease directory {self.path} is not writable for uid {self._me}; {self._fix()}"
            )

    def _validate(self, info: os.stat_result) -> None:
        """The directory may hold leases: a real directory, owned by root or the caller, and
        sticky wherever others may write in it (else any of them could delete or replace
        another user's lease files)."""
        if stat.S_ISLNK(info.st_mode):
            raise LeaseDirError(
                f"lease directory {self.path} is a symlink; refusing it ({self._fix()})"
            )
        if not stat.S_ISDIR(info.st_mode):
            raise LeaseDirError(f"{self.path} is not a directory; {self._fix()}")
        if info.st_uid not in (0, self._me):
            raise LeaseDirError(
                f"lease directory {self.path} belongs to uid {info.st_uid}, who could swap "
                f"its files; it must belong to root or to you. {self._fix()}"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise LeaseDirError(
                f"lease directory {self.path} is writable by other users but not sticky, so "
                f"any of them could delete or replace another user's lease; its owner must "
                f"run `chmod 1777 {self.path}` (or `chmod o-w,g-w` for a private one)"
            )

    def _open_dir(self) -> int:
        """The directory, opened and checked again (it may have been swapped since)."""
        try:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self._validate(os.lstat(self._dir))
            raise LeaseDirError(f"cannot open lease directory {self.path}: {exc.strerror}") from exc
        try:
            self._validate(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _dir_fd(self) -> Iterator[int]:
        """The locked directory's fd when this thread holds the lock, else a fresh one."""
        fd: int | None = getattr(self._local, "fd", None)
        if fd is not None:
            yield fd
            return
        fd = self._open_dir()
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock: a kernel ``flock`` on the directory itself,
        released if we die. Waits at most ``lock_timeout_s``, then raises LeaseDirError
        naming the process that holds it."""
        if getattr(self._local, "fd", None) is not None:
            raise LeaseDirError(f"lease directory {self.path} is locked by this thread already")
        fd = self._open_dir()
        try:
            self._lock(fd)
            self._local.fd = fd
            try:
                yield
            finally:
                self._local.fd = None
        finally:
            os.close(fd)  # closing releases the lock

    def _lock(self, fd: int) -> None:
        """Take the lock on ``fd``, waiting at most ``lock_timeout_s``. The wait is the
        kernel's own (a blocking ``flock``, which hands the lock over at once), done by a
        helper thread on a duplicate of ``fd``: an ``flock`` belongs to the open file, so the
        helper takes it for ``fd``, and if we have given up by then, closing both releases
        it again."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waiter = os.dup(fd)
        done = threading.Event()
        failed: list[OSError] = []

        def wait() -> None:
            try:
                fcntl.flock(waiter, fcntl.LOCK_EX)
            except OSError as exc:
                failed.append(exc)
            finally:
                os.close(waiter)  # the lock stays with fd, while fd is open
                done.set()

        threading.Thread(target=wait, name="gpuroute-lease-lock", daemon=True).start()
        if done.wait(self.lock_timeout_s):
            if not failed:
                return
            raise LeaseDirError(f"cannot lock lease directory {self.path}: {failed[0].strerror}")
        holder = lock_holder(os.fstat(fd))
        raise LeaseDirError(
            f"lease directory {self.path} stayed locked for {self.lock_timeout_s:g}s by "
            f"{holder}; gpuroute holds this lock for milliseconds, so that process is stuck "
            "or is not gpuroute: ask its user or an administrator to end it, then try again"
        )

    @staticmethod
    def file_name(uuid: str, lease_id: str) -> str:
        """The name of a lease's file for one device."""
        if not lease_id.isalnum():
            raise ValueError(f"lease id {lease_id!r} is not alphanumeric")
        return f"{_PREFIX}{uuid}.{lease_id}{_SUFFIX}"

    def held(self) -> set[str]:
        """The UUIDs that have a lease file. Names only: fast. A file may be stale, forged
        or unreadable: ``read`` tells."""
        with self._dir_fd() as fd:
            names = os.listdir(fd)
        held = set()
        for name in names:
            parsed = _split(name)
            if parsed is not None:
                held.add(parsed[0])
        return held

    def has(self, record: LeaseRecord) -> bool:
        """Whether every device's name of ``record``'s lease is there."""
        with self._dir_fd() as fd:
            for uuid in record.devices:
                try:
                    os.stat(self.file_name(uuid, record.lease_id), dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return False
        return True

    def read_all(self, *, set_aside: bool = True) -> tuple[dict[str, list[LeaseRecord]], list[str]]:
        """Every device's trusted records (call under the lock), and notes on the files that
        do not count: unreadable or malformed ones (moved aside as ``corrupt-…`` when
        ``set_aside`` and this user may), and forged ones, whose record names another user
        than the file's owner. A device normally has one record; it has more when a stale
        lease's file could not be removed (another user's, in a sticky directory)."""
        records: dict[str, list[LeaseRecord]] = {}
        notes: list[str] = []
        with self._dir_fd() as fd:
            for name in os.listdir(fd):
                parsed = _split(name)
                if parsed is None:
                    continue
                uuid, lease_id = parsed
                try:
                    record, owner = self._load(fd, name)
                except FileNotFoundError:
                    continue
                except PermissionError:
                    unreadable = self._unreadable(fd, name, uuid)
                    if unreadable is not None:
                        notes.append(
                            f"cannot read lease file {name} of {unreadable.user}: its device "
                            "counts as held until they or an administrator remove it"
                        )
                        records.setdefault(uuid, []).append(unreadable)
                    continue
                except (OSError, *_BAD_RECORD) as exc:  # a link, a directory, damage
                    notes.append(self._set_aside(fd, name, exc, set_aside))
                    continue
                problem = None
                if uuid not in record.devices:
                    problem = "the record does not hold this device"
                elif lease_id is not None and lease_id != record.lease_id:
                    problem = "the record's lease id is not the one in its name"
                elif owner not in (0, record.uid):
                    problem = (
                        f"forged: it names uid {record.uid} ({record.user}) but belongs to "
                        f"uid {owner} ({_user_name(owner)}); only a file owned by the user "
                        "it names counts"
                    )
                if problem is not None:
                    notes.append(self._set_aside(fd, name, ValueError(problem), set_aside))
                    continue
                records.setdefault(uuid, []).append(record)
        return records, notes

    def read(self, *, set_aside: bool = True) -> tuple[dict[str, LeaseRecord], list[str]]:
        """Every device's record (call under the lock: the newest where a device has several,
        see ``read_all``), and notes on files that do not count."""
        records, notes = self.read_all(set_aside=set_aside)
        return {u: max(rs, key=lambda r: r.created) for u, rs in records.items() if rs}, notes

    @staticmethod
    def _load(fd: int, name: str) -> tuple[LeaseRecord, int]:
        """One record file and its owner's uid. Never follows a link and never blocks: a
        FIFO or a device planted in the directory is refused, not waited on."""
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        try:
            info = os.fstat(f)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            text = os.read(f, _MAX_RECORD + 1)
        finally:
            os.close(f)
        if len(text) > _MAX_RECORD:
            raise ValueError(f"larger than {_MAX_RECORD} bytes")
        try:
            return LeaseRecord.from_json(text.decode()), info.st_uid
        except RecursionError:
            raise ValueError("nested too deeply") from None

    @staticmethod
    def _unreadable(fd: int, name: str, uuid: str) -> LeaseRecord | None:
        """A record standing for a file this user may not read: held by its owner, for as
        long as the file is there."""
        try:
            owner = os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid
        except FileNotFoundError:
            return None
        return LeaseRecord(
            lease_id="unreadable",
            devices=(uuid,),
            spec="?",
            uid=owner,
            user=_user_name(owner),
            holder=Holder("unreadable", name),
            boot_id="",
            created=0.0,
        )

    def _set_aside(self, fd: int, name: str, exc: BaseException, move: bool) -> str:
        if not move:
            return f"ignored the lease file {name} ({exc})"
        aside = f"corrupt-{name}-{int(time.time())}-{os.urandom(3).hex()}"
        try:
            os.rename(name, aside, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError:
            return f"ignored the lease file {name}, which only its owner may move ({exc})"
        return f"set aside the unreadable lease file {name} as {aside} ({exc})"

    def write(self, record: LeaseRecord, *, fresh: bool = False) -> None:
        """Write the record under each of its devices' names (call under the lock).
        The file is readable by everyone whatever the umask: a record others cannot read
        would keep its devices from them, or (in an earlier gpuroute) free them. Each name
        that is there already (``bind`` rewriting its own lease) is replaced atomically;
        ``fresh``: the lease is new, and its names are linked without looking first."""
        with self._dir_fd() as fd:
            self._write(fd, record.devices, record.lease_id, record.to_json().encode(), fresh)

    def _write(
        self, fd: int, devices: tuple[str, ...], lease_id: str, data: bytes, fresh: bool = True
    ) -> None:
        """Write ``data`` under the names of lease ``lease_id`` for ``devices``, in the
        directory ``fd`` (locked): once, to a temporary name renamed onto the first device's
        name, and every other device's name a hard link to that file (one file, one owner,
        one content, however many devices). Where a name is taken (a rewrite), a link under
        a temporary name is renamed onto it; where the file system has no hard links, each
        device gets a copy renamed into place. All or nothing: a failure removes what was
        written."""
        written: list[str] = []
        try:
            first = ""
            for uuid in devices:
                name = self.file_name(uuid, lease_id)
                if not first:
                    self._put(fd, uuid, name, data)
                    first = name
                elif not (fresh and self._link(fd, first, name)):
                    self._replace(fd, first, uuid, name, data)
                written.append(uuid)
        except BaseException:
            self._remove_lease(fd, written, lease_id)  # all or nothing
            raise

    @staticmethod
    def _link(fd: int, src: str, name: str) -> bool:
        """``name``, a new hard link to ``src``; False where it cannot be (taken, or no
        hard links here), for ``_replace`` to decide."""
        try:
            os.link(src, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _replace(self, fd: int, src: str, uuid: str, name: str, data: bytes) -> None:
        """``name`` replaced atomically by a hard link to ``src`` (made under a temporary
        name, then renamed onto it), or by a copy of ``data`` where there are no hard links."""
        tmp = f".tmp-{uuid}-{os.getpid()}-{os.urandom(4).hex()}"
        if not self._link(fd, src, tmp):
            self._put(fd, uuid, name, data)
            return
        try:
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise

    @staticmethod
    def _put(fd: int, uuid: str, name: str, data: bytes) -> None:
        """``data`` written to a new file under a temporary name, made readable by everyone
        whatever the umask, and renamed onto ``name``: a reader never sees half a record."""
        tmp = f".tmp-{uuid}-{os.getpid()}-{os.urandom(4).hex()}"
        f = os.open(tmp, _CREATE, 0o644, dir_fd=fd)
        try:
            try:
                os.fchmod(f, 0o644)
                os.write(f, data)
            finally:
                os.close(f)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise

    def remove(self, uuid: str, lease_id: str | None = None) -> bool:
        """Remove a lease's file for ``uuid`` (every lease's, without ``lease_id``); a file
        of the earlier layout only if it still holds ``lease_id``. False when a file could
        not be removed: another user's, in a sticky directory."""
        with self._dir_fd() as fd:
            if lease_id is None:
                names = [n for n in os.listdir(fd) if (_split(n) or ("", None))[0] == uuid]
                outcomes = [self._unlink(fd, name) for name in names]  # every one, no short cut
                return False not in outcomes
            return self._remove(fd, uuid, lease_id)

    def remove_lease(self, devices: tuple[str, ...], lease_id: str) -> bool:
        """Remove lease ``lease_id``'s files for ``devices`` (each as ``remove`` does, with
        one opening of the directory); False when one could not be removed."""
        with self._dir_fd() as fd:
            return self._remove_lease(fd, devices, lease_id)

    def _remove_lease(self, fd: int, devices: Iterable[str], lease_id: str) -> bool:
        outcomes = [self._remove(fd, uuid, lease_id) for uuid in devices]  # every one
        return False not in outcomes

    def _remove(self, fd: int, uuid: str, lease_id: str) -> bool:
        done = self._unlink(fd, self.file_name(uuid, lease_id))
        if done is not None:
            return done
        legacy = f"{_PREFIX}{uuid}{_SUFFIX}"  # the earlier layout: one file per device
        try:
            current, _ = self._load(fd, legacy)
        except (OSError, *_BAD_RECORD):
            return True
        return current.lease_id != lease_id or self._unlink(fd, legacy) is not False

    @staticmethod
    def _unlink(fd: int, name: str) -> bool | None:
        """True: removed; None: there was none; False: not this user's to remove."""
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return None
        except PermissionError:
            return False
        return True


@dataclass
class Lease(Closing):
    """Devices held for one piece of work. ``plan`` routes exactly them; ``release()`` (or
    leaving the ``with`` block) gives them back."""

    plan: RoutingPlan
    record: LeaseRecord
    directory: LeaseDir
    notes: list[str] = field(default_factory=list)
    released: bool = False
    alive: Alive = local_only

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
            # Still ours: every file is there, and the lease is not stale (a stale lease's
            # file may outlive it, in a sticky directory, while its devices went to another
            # lease; it must never come back to life).
            missing = not self.directory.has(self.record)
            reason = stale_reason(
                self.record, now=time.time(), this_boot=boot_id(), alive=self.alive
            )
            if missing or reason is not None:
                why = "it was reclaimed" if missing else f"it is stale: {reason}"
                raise LeaseError(f"lease {self.id} no longer holds its devices; {why}")
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
        """Give the devices back. Safe to call twice. Needs no lock (each file is the
        lease's own, and removing it is atomic), so a held lock never keeps a lease."""
        if self.released:
            return
        self.directory.remove_lease(self.record.devices, self.id)
        _forget(self.directory, self.record.devices)
        self.released = True

    def close(self) -> None:
        """Release (as leaving a ``with`` block does)."""
        self.release()


_seen: dict[str, frozenset[str]] = {}
"""The devices this process last saw held in each lease directory (by the lease files'
names, under the lock, and its own writes and releases since): the guess an acquisition
chooses from before it takes the lock. Only a guess: the choice is checked under the lock."""


def _forget(directory: LeaseDir, devices: Iterable[str]) -> None:
    seen = _seen.get(directory._dir)
    if seen is not None:
        _seen[directory._dir] = seen.difference(devices)


def caller_identity() -> tuple[int, str]:
    """The caller's OS uid and user name: the only identity leases and limits use."""
    uid = os.getuid()
    return uid, _cached_user_name(uid)


@functools.lru_cache(maxsize=8)
def _cached_user_name(uid: int) -> str:
    return _user_name(uid)


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
    _records: dict[str, list[LeaseRecord]] | None = None
    _named: RoutingPlan | None = None
    _need: Need | None = None

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
        if not self.policy.active:
            lease = self._fast(state, allowed)
            if lease is not None:
                return lease
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
                live = {uuid for uuid, records in current.items() if records}
                if not (self._reclaim(current, now) or live < held):
                    raise
                live = {uuid for uuid, records in current.items() if records}
                plan = self._pick(state, live, allowed, locked=True)
            return self._take(plan, now)

    def _fast(self, state: HostState, allowed: set[str] | None) -> Lease | None:
        """The common path, without limits: None where the slow path must decide.

        Everything that does not depend on the directory's contents is done before the
        lock: the choice from the names this process saw there last (a guess), the plan,
        the record's JSON but for its creation time. Under the lock, one listing: where
        it is not what the guess was made from, ``any:N`` chooses again from it (the same
        choice a fresh ``choose`` makes), and a named device that is taken goes to the slow
        path. Then the files are written. The lock is held for a listing and the writes."""
        directory = self.directory
        view = _seen.get(directory._dir, frozenset())
        need = self._any()
        plan: RoutingPlan | None
        try:
            plan = self._pick(state, set(view), allowed, locked=False)
        except (NoFreeDeviceError, DeviceLeasedError):
            return None
        uuids = plan.uuids
        record = self._record(uuids)
        head, tail = record.json_around_created()
        with directory.locked():
            fd = directory._local.fd
            held = directory.held()
            if held != view:
                _seen[directory._dir] = frozenset(held)
                if need is None:
                    if not held.isdisjoint(uuids):
                        return None  # the slow path names who holds it
                else:
                    try:
                        devices = choose(
                            need, self.inventory, state, held, spec=self.spec.text, allowed=allowed
                        )
                    except NoFreeDeviceError:
                        return None  # the slow path reclaims stale leases
                    chosen = tuple(d.uuid for d in devices)
                    if chosen != uuids:
                        plan, uuids = None, chosen
                        record = replace(record, devices=uuids)
                        head, tail = record.json_around_created()
            now = time.time()
            if uuids:
                data = (head + repr(now) + tail).encode()  # json.dumps(now), faster
                directory._write(fd, uuids, record.lease_id, data)
                _seen[directory._dir] = frozenset(held.union(uuids))
        record = LeaseRecord(
            record.lease_id,
            uuids,
            record.spec,
            record.uid,
            record.user,
            record.holder,
            record.boot_id,
            now,
            record.ttl_s,
        )
        if plan is None:  # chosen again under the lock: its plan, now (nothing waits on it)
            try:
                plan = self._pick(state, held, allowed, locked=False, devices=devices)
            except BaseException:
                directory.remove_lease(uuids, record.lease_id)
                _forget(directory, uuids)
                raise
        return Lease(plan, record, directory, list(self.notes), alive=self.alive)

    def _any(self) -> Need | None:
        """What ``any:N`` asks for; None for a spec that names its devices."""
        token = self.spec.tokens[0] if self.spec.tokens else None
        if token is None or token.kind is not Kind.ANY:
            return None
        if self._need is None:
            n = self.need
            self._need = Need(token.index or 1, n.min_free_mib, n.model, n.mig_profile)
        return self._need

    def _read(self) -> dict[str, list[LeaseRecord]]:
        """The lease files' contents, read on demand (under the lock): the common path needs
        only names."""
        if self._records is None:
            self._records, aside = self.directory.read_all()
            self.notes.extend(aside)
        return self._records

    def _pick(
        self,
        state: HostState,
        held: set[str],
        allowed: set[str] | None,
        *,
        locked: bool,
        devices: tuple[Device, ...] | None = None,
    ) -> RoutingPlan:
        """The plan for the request, given the devices ``held``; ``devices``: those
        ``any:N`` chose already."""
        need = self._any()
        if need is not None:
            if devices is None:
                devices = choose(
                    need, self.inventory, state, held, spec=self.spec.text, allowed=allowed
                )
            plan = self.plan(",".join(d.label for d in devices))
        else:
            if self._named is None:
                self._named = self.plan(self.spec)  # resolved once per request
            plan = self._named
        for device in plan.devices:
            if device.uuid in held:
                # Records are read only under the lock: a read outside it could be stale.
                records = self._read().get(device.uuid) if locked else None
                record = max(records, key=lambda r: r.created) if records else None
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
            records = [r for rs in self._read().values() for r in rs]
            self.policy.check(uid, user, plan.devices, records, self.inventory)
        return plan

    def _record(self, devices: tuple[str, ...], now: float = 0.0) -> LeaseRecord:
        uid, user = caller_identity()
        return LeaseRecord(
            lease_id=os.urandom(6).hex(),
            devices=devices,
            spec=self.spec.text,
            uid=uid,
            user=user,
            holder=self.holder,
            boot_id=boot_id(),
            created=now,
            ttl_s=self.ttl_s,
        )

    def _take(self, plan: RoutingPlan, now: float) -> Lease:
        """Write the lease's files (under the lock) and return it."""
        record = self._record(plan.uuids, now)
        _seen.pop(self.directory._dir, None)  # the slow path: guess afresh next time
        if plan.devices:
            self.directory.write(record, fresh=True)
        return Lease(plan, record, self.directory, list(self.notes), alive=self.alive)

    def _reclaim(self, records: dict[str, list[LeaseRecord]], now: float) -> bool:
        """Drop stale leases (under the lock), removing their files where this user may;
        say whether there were any."""
        notes = _reclaim(self.directory, records, now=now, alive=self.alive)
        self.notes.extend(notes)
        return bool(notes)


def reclaim_stale(
    directory: LeaseDir, records: dict[str, LeaseRecord], *, now: float, alive: Alive = local_only
) -> list[str]:
    """Drop stale leases from ``records`` and remove their files from ``directory`` (call
    under the lock); a note for each device reclaimed. Only the stale lease's own file is
    removed: a newer lease of the same device keeps its file."""
    lists = {uuid: [record] for uuid, record in records.items()}
    notes = _reclaim(directory, lists, now=now, alive=alive)
    for uuid, kept in lists.items():
        if not kept:
            del records[uuid]
    return notes


def _reclaim(
    directory: LeaseDir, records: dict[str, list[LeaseRecord]], *, now: float, alive: Alive
) -> list[str]:
    """Drop the stale records from ``records`` (in place) and remove their files where this
    user may. A stale lease of another user in a sticky directory keeps its file until they
    or an administrator remove it; it no longer counts, and never comes back to life: a
    lease stays stale once stale (its holder does not return, its TTL does not grow back)
    and ``Lease.bind`` refuses a stale lease."""
    verdicts: dict[str, str | None] = {}
    this_boot = boot_id()
    notes: list[str] = []
    for uuid, held in records.items():
        for record in list(held):
            if record.lease_id not in verdicts:
                verdicts[record.lease_id] = stale_reason(
                    record, now=now, this_boot=this_boot, alive=alive
                )
            reason = verdicts[record.lease_id]
            if reason is None:
                continue
            held.remove(record)
            note = f"reclaimed {uuid} from {record.user}'s lease {record.lease_id}: {reason}"
            if not directory.remove(uuid, record.lease_id):
                note += f" (its file stays until {record.user} or an administrator removes it)"
            notes.append(note)
    return notes
