"""Lease records: what a lease file says, as plain values.

Leases (``gpuroute.leases``), limits (``gpuroute.limits``) and the command line read and
write these; nothing here does I/O, so every module that needs a record imports this one and
none of them imports another for it.

A record names its **holder**, the work that keeps the lease alive, the same way for every
backend: ``Holder(backend, id, where, pid, started)``. ``backend`` names the backend whose
probe decides whether the holder still lives (``local``: a process; ``docker``: a
container; ``compose``: a compose service's container, by name), ``id`` is that backend's
own id (a pid, a container id or name), ``where`` is where it runs (an engine address; None
for this host). ``pid`` and ``started`` name a process of this host that stands for the
holder (the process itself; a container's init process; the compose client) with its start
time in clock ticks since boot, which tells a reused pid from the original: it lets the
probe decide when the backend itself cannot answer (an engine that is gone).

Schema ``gpuroute.lease/2`` (one JSON object per device file; every device file of one lease
holds the same record)::

    {"schema": "gpuroute.lease/2", "lease_id": "9f2c1a0b7e3d", "devices": ["GPU-…"],
     "spec": "any:1", "uid": 1000, "user": "alice", "boot_id": "…", "created": 1764633600.5,
     "ttl_s": null, "holder": {"backend": "local", "id": "4242", "where": null,
     "pid": 4242, "started": 123456}}

Records of the earlier schema ``gpuroute.lease/1`` (``pid``, ``pid_start``, ``container_id``,
``docker_host`` at the top level) are still read; they are written as ``gpuroute.lease/2``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA", "Holder", "LeaseRecord"]

SCHEMA = "gpuroute.lease/2"
_SCHEMA_V1 = "gpuroute.lease/1"
_V1_FIELDS = frozenset(
    {
        "lease_id",
        "devices",
        "spec",
        "uid",
        "user",
        "pid",
        "pid_start",
        "boot_id",
        "created",
        "ttl_s",
        "container_id",
        "docker_host",
    }
)
_V2_FIELDS = frozenset(
    {"lease_id", "devices", "spec", "uid", "user", "boot_id", "created", "ttl_s", "holder"}
)
_HOLDER_FIELDS = frozenset({"backend", "id", "where", "pid", "started"})
_DECIMAL = re.compile(r"[0-9]{1,12}")


# The ranges a record's numbers can have on a real host; anything outside them (a pid of
# 10**30, a creation time of 1e300, NaN) is a malformed record, never an OverflowError later.
_PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT
_UID_MAX = (1 << 32) - 2  # (uid_t)-1 is no user
_TICKS_MAX = (1 << 63) - 1
_TIME_MAX = 253402300799.0  # the last second of year 9999: what time.localtime can show


def _is_int(value: object, low: int = 0, high: int = _TICKS_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: object) -> bool:
    """A finite number of seconds from 0 to the year 9999 (math.isfinite is implied)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _TIME_MAX
    )


def _is_pid(value: object) -> bool:
    return _is_int(value, 1, _PID_MAX)


def _is_pid_text(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None and _is_pid(int(text))


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a lease record can hold")


def _load(text: str) -> object:
    """JSON with only finite numbers; a document nested past the interpreter's limit is
    malformed, not a RecursionError."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the lease record is nested too deeply") from None


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _optional(value: object, check: Any) -> bool:
    return value is None or bool(check(value))


@dataclass(frozen=True)
class Holder:
    """The work that keeps a lease alive, as its backend names it, and the process of this
    host that stands for it (if any)."""

    backend: str
    id: str
    where: str | None = None
    pid: int | None = None
    started: int | None = None

    @classmethod
    def process(cls, pid: int, started: int | None) -> Holder:
        """A process of this host (``started``: its start time, to tell a reused pid)."""
        return cls("local", str(pid), None, pid, started)

    def describe(self) -> str:
        if self.backend == "local":
            return f"pid {self.id}"
        if self.backend == "docker":
            return f"container {self.id[:12]}"
        return f"{self.backend} {self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "id": self.id,
            "where": self.where,
            "pid": self.pid,
            "started": self.started,
        }

    @classmethod
    def from_dict(cls, data: object) -> Holder:
        if not isinstance(data, dict) or set(data) != _HOLDER_FIELDS:
            raise ValueError("malformed lease holder")
        backend, ident, where = data["backend"], data["id"], data["where"]
        pid, started = data["pid"], data["started"]
        checks = (
            isinstance(backend, str) and backend.isidentifier(),
            isinstance(ident, str) and ident != "",
            _optional(where, lambda v: isinstance(v, str)),
            _optional(pid, _is_pid),
            _optional(started, _is_int),
            # A process holder's id is its pid, in decimal digits.
            backend != "local" or (isinstance(ident, str) and _is_pid_text(ident)),
        )
        if not all(checks):
            raise ValueError("malformed lease holder")
        return cls(backend, ident, where, pid, started)


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says. Every device file of one lease holds the same record."""

    lease_id: str
    devices: tuple[str, ...]
    spec: str
    uid: int
    user: str
    holder: Holder
    boot_id: str
    created: float
    ttl_s: float | None = None

    # Read-only views of the holder, as the earlier schema named them.
    @property
    def pid(self) -> int | None:
        return self.holder.pid if self.holder.backend == "local" else None

    @property
    def pid_start(self) -> int | None:
        return self.holder.started if self.holder.backend == "local" else None

    @property
    def container_id(self) -> str | None:
        return self.holder.id if self.holder.backend != "local" else None

    @property
    def docker_host(self) -> str | None:
        return self.holder.where

    def to_json(self) -> str:
        head, tail = self.json_around_created()
        return head + _dumps(self.created) + tail

    def json_around_created(self) -> tuple[str, str]:
        """The record's JSON before and after its creation time: ``to_json()`` is
        ``head + json.dumps(created) + tail``. An acquisition encodes everything else before
        it takes the directory's lock, and only the time under it."""
        head = {
            "schema": SCHEMA,
            "lease_id": self.lease_id,
            "devices": list(self.devices),
            "spec": self.spec,
            "uid": self.uid,
            "user": self.user,
            "boot_id": self.boot_id,
        }
        tail = {"ttl_s": self.ttl_s, "holder": self.holder.to_dict()}
        return _dumps(head)[:-1] + ',"created":', "," + _dumps(tail)[1:]

    @classmethod
    def from_json(cls, text: str) -> LeaseRecord:
        """Read a record of either schema; ValueError for anything else, including numbers
        no host has (a pid of 10**30, a time of 1e300 or NaN) and documents nested too
        deeply."""
        data = _load(text)
        if not isinstance(data, dict):
            raise ValueError("not a gpuroute lease record")
        schema = data.pop("schema", None)
        if schema == SCHEMA:
            if set(data) != _V2_FIELDS:
                raise ValueError("unexpected or missing fields in the lease record")
            holder = Holder.from_dict(data.pop("holder"))
        elif schema == _SCHEMA_V1:
            if set(data) != _V1_FIELDS:
                raise ValueError("unexpected or missing fields in the lease record")
            holder = _v1_holder(data)
        else:
            raise ValueError(f"not a {SCHEMA} record")
        devices = data["devices"]
        checks = (
            isinstance(data["lease_id"], str),
            isinstance(devices, list) and all(isinstance(d, str) for d in devices),
            isinstance(data["spec"], str),
            _is_int(data["uid"], 0, _UID_MAX),
            isinstance(data["user"], str),
            isinstance(data["boot_id"], str),
            _is_number(data["created"]),
            _optional(data["ttl_s"], _is_number),
        )
        if not all(checks):
            raise ValueError("malformed lease record")
        return cls(
            lease_id=data["lease_id"],
            devices=tuple(devices),
            spec=data["spec"],
            uid=data["uid"],
            user=data["user"],
            holder=holder,
            boot_id=data["boot_id"],
            created=data["created"],
            ttl_s=data["ttl_s"],
        )

    def expires(self) -> float | None:
        return None if self.ttl_s is None else self.created + self.ttl_s

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))
        return f"lease {self.lease_id}, {self.holder.describe()}, since {since}"


def _v1_holder(data: dict[str, Any]) -> Holder:
    """The holder of a ``gpuroute.lease/1`` record: its container if it names one, else its
    process."""
    pid, pid_start = data.pop("pid"), data.pop("pid_start")
    container_id, docker_host = data.pop("container_id"), data.pop("docker_host")
    checks = (
        _optional(pid, _is_pid),
        _optional(pid_start, _is_int),
        _optional(container_id, lambda v: isinstance(v, str)),
        _optional(docker_host, lambda v: isinstance(v, str)),
    )
    if not all(checks):
        raise ValueError("malformed lease record")
    if container_id:
        return Holder("docker", container_id, docker_host)
    if pid is None:
        raise ValueError("a gpuroute.lease/1 record with neither a process nor a container")
    return Holder.process(pid, pid_start)
