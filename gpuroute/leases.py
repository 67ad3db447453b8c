"""GPU leases on a shared host: race-free, daemon-free, and self-cleaning.

A lease directory (default ``/run/gpuroute/leases``; ``GPUROUTE_LEASE_DIR`` or ``lease_dir=``)
holds one small JSON file per leased device, ``dev-<UUID>.json``, naming the lease that holds
it. Every change happens under an exclusive ``flock`` on the directory's ``lock`` file, so two
acquisitions never see the same free device, across processes and users. Files are written
to a temporary name and renamed into place, so a reader never sees half a record; a record
that is unreadable anyway (a crash, a disk error, an edit) is moved aside as
``corrupt-…`` and only that device is affected.

A lease records who holds it (uid and user name), the holding process (pid and its start
time, so a reused pid is not mistaken for the holder), the boot id, the container when there
is one, its creation time and an optional TTL. A lease is stale, and reclaimed by the next
acquisition, when its process is gone (a permission error when probing it means it is alive),
its container is gone, the host rebooted, or its TTL passed.

Leases are advisory, like every daemon-free scheme: they keep cooperating users (and their
scripts) from colliding. They do not stop someone who bypasses gpuroute.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import pwd
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.plan import DEFAULT_DRIVER_CAPABILITIES, LocalIds, RoutingPlan
from gpuroute.core.resolve import Target, resolve
from gpuroute.core.selection import HostState, Need, choose
from gpuroute.core.spec import Kind, SpecInput, parse_spec
from gpuroute.errors import (
    DeviceLeasedError,
    LeaseDirError,
    LeaseError,
    LimitExceededError,
    NoFreeDeviceError,
    UnhealthyDeviceError,
)

if TYPE_CHECKING:
    from gpuroute.limits import Policy

__all__ = [
    "DEFAULT_LEASE_DIR",
    "lease_dir_path",
    "LEASE_DIR_ENV",
    "Lease",
    "LeaseDir",
    "LeaseRecord",
    "acquire",
    "boot_id",
    "process_start_time",
]

DEFAULT_LEASE_DIR = "/run/gpuroute/leases"
LEASE_DIR_ENV = "GPUROUTE_LEASE_DIR"
_PREFIX = "dev-"
_SUFFIX = ".json"


@functools.cache
def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); empty where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says. Every device file of one lease holds the same record."""

    lease_id: str
    devices: tuple[str, ...]
    spec: str
    uid: int
    user: str
    pid: int | None
    pid_start: int | None
    boot_id: str
    created: float
    ttl_s: float | None = None
    container_id: str | None = None
    docker_host: str | None = None

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps({"schema": "gpuroute.lease/1", **data}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LeaseRecord:
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("schema", None) != "gpuroute.lease/1":
            raise ValueError("not a gpuroute.lease/1 record")
        if set(data) != {f.name for f in fields(cls)}:
            raise ValueError("unexpected or missing fields in the lease record")
        devices = data["devices"]
        checks = (
            isinstance(data["lease_id"], str),
            isinstance(devices, list) and all(isinstance(d, str) for d in devices),
            isinstance(data["spec"], str),
            _is_int(data["uid"]),
            isinstance(data["user"], str),
            data["pid"] is None or _is_int(data["pid"]),
            data["pid_start"] is None or _is_int(data["pid_start"]),
            isinstance(data["boot_id"], str),
            _is_number(data["created"]),
            data["ttl_s"] is None or _is_number(data["ttl_s"]),
            data["container_id"] is None or isinstance(data["container_id"], str),
            data["docker_host"] is None or isinstance(data["docker_host"], str),
        )
        if not all(checks):
            raise ValueError("malformed lease record")
        return cls(**{**data, "devices": tuple(devices)})

    def expires(self) -> float | None:
        return None if self.ttl_s is None else self.created + self.ttl_s

    def describe(self) -> str:
        holder = f"container {self.container_id[:12]}" if self.container_id else f"pid {self.pid}"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        return f"lease {self.lease_id}, {holder}, since {since}"


def stale_reason(
    record: LeaseRecord, *, now: float, this_boot: str, engine: ContainerProbe | None = None
) -> str | None:
    """Why a lease no longer holds its devices, or None while it does."""
    if record.boot_id and this_boot and record.boot_id != this_boot:
        return "the host rebooted since it was taken"
    expires = record.expires()
    if expires is not None and now >= expires:
        return f"its TTL of {record.ttl_s:g}s passed"
    if record.container_id:
        if engine is not None:
            alive = engine(record.container_id, record.docker_host)
            if alive is False:
                return f"its container {record.container_id[:12]} is gone"
        return None  # a container lease does not depend on the launcher's process
    if record.pid is not None:
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return f"its process {record.pid} has ended"
        except PermissionError:
            pass  # another user's live process
        start = process_start_time(record.pid)
        if record.pid_start is not None and start is not None and start != record.pid_start:
            return f"its process {record.pid} has ended (the pid now belongs to another process)"
    return None


ContainerProbe = Any
"""``(container_id, docker_host) -> bool | None``: running, gone, or unknown."""


UNKNOWN_ENGINE = "unknown"
"""Recorded as a lease's engine when the launcher could not tell which engine it used."""


def docker_container_probe(container_id: str, docker_host: str | None) -> bool | None:
    """Whether a container still exists and runs, through docker-py; None if unknown."""
    if docker_host == UNKNOWN_ENGINE:
        return None
    try:
        import docker
        import docker.errors

        client = (
            docker.DockerClient(base_url=docker_host, timeout=10)
            if docker_host
            else docker.from_env(timeout=10)
        )
    except Exception:
        return None
    try:
        container = client.containers.get(container_id)
        return bool(container.status in ("created", "running", "restarting", "paused"))
    except docker.errors.NotFound:
        return False
    except Exception:
        return None
    finally:
        client.close()


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

    def attach(
        self,
        *,
        pid: int | None = None,
        container_id: str | None = None,
        docker_host: str | None = None,
    ) -> None:
        """Tie the lease to the process or the container doing the work: it then lives as
        long as that process, or that container, does."""
        changes: dict[str, Any] = {}
        if pid is not None:
            changes.update(pid=pid, pid_start=process_start_time(pid))
        if container_id is not None:
            changes.update(container_id=container_id, docker_host=docker_host)
        record = replace(self.record, **changes)
        with self.directory.locked():
            current, _ = self.directory.read()
            if any(
                current.get(u) is None or current[u].lease_id != self.id for u in record.devices
            ):
                raise LeaseError(f"lease {self.id} no longer holds its devices; it was reclaimed")
            self.directory.write(record)
        self.record = record

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


def _reclaim(
    directory: LeaseDir,
    records: dict[str, LeaseRecord],
    now: float,
    this_boot: str,
    probe: ContainerProbe,
    notes: list[str],
) -> bool:
    """Remove the files of stale leases (under the lock); say whether there were any."""
    verdicts: dict[str, str | None] = {}
    found = False
    for uuid, record in list(records.items()):
        if record.lease_id not in verdicts:
            verdicts[record.lease_id] = stale_reason(
                record, now=now, this_boot=this_boot, engine=probe
            )
        reason = verdicts[record.lease_id]
        if reason is not None:
            directory.remove(uuid, record.lease_id)  # only if it is still that lease's file
            del records[uuid]
            notes.append(f"reclaimed {uuid} from {record.user}'s lease {record.lease_id}: {reason}")
            found = True
    return found


@functools.cache
def _own_start_time_of(pid: int) -> int | None:
    return process_start_time(pid)


def _own_start_time() -> int | None:
    """This process's start time (cached: it does not change, and the pid is this one's)."""
    return _own_start_time_of(os.getpid())


def caller_identity() -> tuple[int, str]:
    """The caller's OS uid and user name: the only identity leases and limits use."""
    uid = os.getuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, str(uid)


def acquire(
    request: SpecInput,
    *,
    inventory: Inventory | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    ttl_s: float | None = None,
    state: HostState | None = None,
    nvml: Any = None,
    policy: Any = None,
    context: CallerContext | None = None,
    target: Target | None = None,
    min_free_mib: int | None = None,
    model: str | None = None,
    mig_profile: str | None = None,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] = DEFAULT_DRIVER_CAPABILITIES,
    local_ids: LocalIds = "uuid",
    pid: int | None = None,
    wait_s: float = 0.0,
    container_probe: ContainerProbe = docker_container_probe,
) -> Lease:
    """Lease devices: the ones a spec names, or ``any:N`` free ones chosen for you.

    Args:
        request: a spec (``"3,1"``, ``"1:0"``) or ``"any:N"``.
        inventory: the host's GPUs (default: ``GPUROUTE_INVENTORY``, else NVML).
        lease_dir: the lease directory (default: ``GPUROUTE_LEASE_DIR``, else
            ``/run/gpuroute/leases``).
        ttl_s: the lease ends by itself after this many seconds.
        state / nvml: the live state (processes, memory, health) used to pick and check
            devices; by default read through NVML (``nvml`` may be a ``FakeNVML``), and
            unknown on a host without NVML (then only leases decide what is free).
        policy: a ``gpuroute.limits.Policy`` (default: ``GPUROUTE_POLICY`` or
            ``/etc/gpuroute/policy.yaml`` if present; none means no limits).
        min_free_mib, model, mig_profile: filters for ``any:N``.
        pid: the process the lease lives with (default: this one).
        wait_s: while the devices are taken (NoFreeDeviceError, DeviceLeasedError), try
            again for up to this many seconds before raising.

    Raises:
        NoFreeDeviceError, DeviceLeasedError, UnhealthyDeviceError, LimitExceededError,
        LeaseDirError, and the errors of ``gpuroute.plan``.
    """
    from gpuroute.host import default_inventory, detect_context, reads_live_state
    from gpuroute.limits import Policy as PolicyFile

    if state is None and not reads_live_state(inventory is not None, nvml):
        state = HostState.unknown()  # a snapshot: only leases say what is free
    inventory = inventory if inventory is not None else default_inventory()
    context = context if context is not None else detect_context()
    directory = LeaseDir(lease_dir)
    if policy is None:
        policy = PolicyFile.from_default_location()
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        if state is None:
            from gpuroute.nvml import read_state

            current_state = read_state(inventory, nvml)  # anew each try: processes end
        else:
            current_state = state
        try:
            return _acquire_once(
                request,
                inventory,
                directory,
                current_state,
                policy,
                context,
                target,
                ttl_s,
                Need(0, min_free_mib, model, mig_profile),
                allow_multiple_mig,
                driver_capabilities,
                local_ids,
                pid,
                container_probe,
            )
        except (NoFreeDeviceError, DeviceLeasedError):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)


def _acquire_once(
    request: SpecInput,
    inventory: Inventory,
    directory: LeaseDir,
    state: HostState,
    policy: Policy,
    context: CallerContext,
    target: Target | None,
    ttl_s: float | None,
    filters: Need,
    allow_multiple_mig: bool,
    driver_capabilities: Iterable[str],
    local_ids: LocalIds,
    pid: int | None,
    container_probe: ContainerProbe,
) -> Lease:
    parsed = parse_spec(request)
    uid, user = caller_identity()
    holder = os.getpid() if pid is None else pid
    notes: list[str] = []
    if state.source == "none":
        notes.append("no live GPU state (NVML unavailable): only leases decide what is free")
    this_boot = boot_id()
    pid_start = _own_start_time() if holder == os.getpid() else process_start_time(holder)

    parsed_records: dict[str, LeaseRecord] | None = None
    allowed: set[str] | None = None
    if target == "local":
        visible = context.visible_devices(inventory)  # ContextError for unreadable masks
        if visible is not None:
            allowed = {d.uuid for d in visible}

    def records() -> dict[str, LeaseRecord]:
        """The lease files' contents, read on demand: the common path needs only names."""
        nonlocal parsed_records
        if parsed_records is None:
            parsed_records, aside = directory.read()
            notes.extend(aside)
        return parsed_records

    def pick(held: set[str], *, locked: bool) -> RoutingPlan:
        if parsed.tokens[0].kind is Kind.ANY:
            need = replace(filters, count=parsed.tokens[0].index or 1)
            devices = choose(need, inventory, state, held, spec=parsed.text, allowed=allowed)
            spec_text = ",".join(d.label for d in devices)
        else:
            spec_text = parsed.text
        plan = resolve(
            spec_text,
            inventory,
            context=context,
            target=target,
            allow_multiple_mig=allow_multiple_mig,
            driver_capabilities=driver_capabilities,
            local_ids=local_ids,
        )
        for device in plan.devices:
            if device.uuid in held:
                # Records are read only under the lock: a read outside it could be stale.
                holder_record = records().get(device.uuid) if locked else None
                who = (
                    f"{holder_record.user} ({holder_record.describe()})"
                    if holder_record
                    else "a lease whose file is unreadable"
                )
                raise DeviceLeasedError(
                    f"{device.describe()} is leased to {who}; choose another device, or ask "
                    "for any free one with 'any:N'",
                    spec=parsed.text,
                )
            problems = state.problems_of(device)
            if problems:
                raise UnhealthyDeviceError(
                    f"{device.describe()} is unhealthy and is not given out: {'; '.join(problems)}",
                    spec=parsed.text,
                )
        if policy.active:
            policy.check(uid, user, plan.devices, records().values(), inventory)
        return plan

    def record_for(plan: RoutingPlan, now: float) -> LeaseRecord:
        return LeaseRecord(
            lease_id=os.urandom(6).hex(),
            devices=plan.uuids,
            spec=parsed.text,
            uid=uid,
            user=user,
            pid=holder,
            pid_start=pid_start,
            boot_id=this_boot,
            created=now,
            ttl_s=ttl_s,
        )

    # Fast path: choose from the lease files' names without the lock, then take the lock
    # only to check that nobody took those devices meanwhile and to write the files. The
    # lock is held for a directory listing and a few renames.
    if not policy.active:
        for _ in range(3):
            try:
                plan = pick(directory.held(), locked=False)
            except (NoFreeDeviceError, DeviceLeasedError):
                break
            with directory.locked():
                if directory.held().isdisjoint(plan.uuids):
                    record = record_for(plan, time.time())
                    if plan.devices:
                        directory.write(record)
                    return Lease(plan, record, directory, notes)
    # Slow path, all under the lock: limits, precise errors, and reclaiming stale leases.
    with directory.locked():
        now = time.time()
        held = directory.held()
        try:
            plan = pick(held, locked=True)
        except (NoFreeDeviceError, DeviceLeasedError, LimitExceededError):
            # Only now read every record and look for stale ones: the common path reads
            # file names alone and probes no process. Unreadable files are set aside.
            current = records()
            set_aside = len(current) < len(held)
            reclaimed = _reclaim(directory, current, now, this_boot, container_probe, notes)
            if not (set_aside or reclaimed):
                raise
            plan = pick(set(current), locked=True)
        record = record_for(plan, now)
        if plan.devices:
            directory.write(record)
    return Lease(plan, record, directory, notes)
