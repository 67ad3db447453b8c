"""Per-user and per-group limits, counted two ways that are never confused:

* **GPU-equivalents**: a whole GPU counts 1; a MIG device counts its compute slices over its
  GPU's total (a ``1g.10gb`` on a 7-slice GPU is 1/7, a ``3g.40gb`` 3/7);
* **physical GPUs**: how many distinct GPUs the leases touch (four ``1g`` slices of one GPU
  are 4/7 GPU-equivalents and 1 physical GPU).

The administrator's policy file (YAML; ``/etc/gpuroute/policy.yaml``, root-owned and writable
by root alone)::

    default:             {gpu_equivalents: 2, physical_gpus: 2}   # every user without an entry
    users:
      alice:             {gpu_equivalents: 4, physical_gpus: 4}
    groups:
      students:          {gpu_equivalents: 2, physical_gpus: 3}   # shared by all members

A user limit (or the default) bounds that user's leases; a group limit bounds the leases of
all the group's members together. Identity is always the caller's OS uid.

The administrator's policy binds every user. A caller may add a policy of their own
(``GPUROUTE_POLICY``, ``policy=``, ``gpuroute limits --policy``) only to tighten it: each limit
in force is the stricter of the two (``binding_policy``).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from gpuroute.core.inventory import Device, Inventory
from gpuroute.errors import LimitExceededError, PolicyError
from gpuroute.records import LeaseRecord

__all__ = [
    "DEFAULT_POLICY",
    "POLICY_ENV",
    "Limit",
    "Policy",
    "Usage",
    "format_equivalents",
    "admin_policy",
    "binding_policy",
    "file_key",
    "policy_path",
    "usage_of",
]

POLICY_ENV = "GPUROUTE_POLICY"
DEFAULT_POLICY = "/etc/gpuroute/policy.yaml"
"""The administrator's policy, which binds every user (read where it is at each call)."""


@dataclass(frozen=True)
class Usage:
    """GPU-equivalents and physical GPUs, side by side."""

    gpu_equivalents: Fraction = Fraction(0)
    physical_gpus: frozenset[str] = frozenset()

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.gpu_equivalents + other.gpu_equivalents, self.physical_gpus | other.physical_gpus
        )

    def describe(self) -> str:
        return (
            f"{format_equivalents(self.gpu_equivalents)} GPU-equivalents on "
            f"{len(self.physical_gpus)} physical GPU(s)"
        )


def format_equivalents(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    whole, rest = divmod(value.numerator, value.denominator)
    frac = f"{rest}/{value.denominator}"
    return f"{whole} {frac}" if whole else frac


def device_usage(device: Device) -> Usage:
    if device.mig is None:
        share = Fraction(1)
    else:
        total = device.gpu.mig_compute_slices_total or device.mig.compute_slices
        share = Fraction(device.mig.compute_slices, total)
    return Usage(share, frozenset({device.gpu.uuid}))


def usage_of(uuids: Iterable[str], inventory: Inventory) -> Usage:
    total = Usage()
    for uuid in uuids:
        device = inventory.by_uuid(uuid)
        if device is not None:
            total += device_usage(device)
    return total


@dataclass(frozen=True)
class Limit:
    gpu_equivalents: Fraction | None = None
    physical_gpus: int | None = None

    def describe(self) -> str:
        eq = (
            "unlimited"
            if self.gpu_equivalents is None
            else format_equivalents(self.gpu_equivalents)
        )
        phys = "unlimited" if self.physical_gpus is None else str(self.physical_gpus)
        return f"{eq} GPU-equivalents, {phys} physical GPU(s)"

    def exceeded_by(self, usage: Usage) -> list[str]:
        out = []
        if self.gpu_equivalents is not None and usage.gpu_equivalents > self.gpu_equivalents:
            out.append(
                f"GPU-equivalents {format_equivalents(usage.gpu_equivalents)} > "
                f"{format_equivalents(self.gpu_equivalents)}"
            )
        if self.physical_gpus is not None and len(usage.physical_gpus) > self.physical_gpus:
            out.append(f"physical GPUs {len(usage.physical_gpus)} > {self.physical_gpus}")
        return out


def _limit(data: Any, where: str) -> Limit:
    if not isinstance(data, Mapping) or set(data) - {"gpu_equivalents", "physical_gpus"}:
        raise PolicyError(
            f"{where}: expected {{gpu_equivalents: N, physical_gpus: N}}, got {data!r}"
        )
    eq = data.get("gpu_equivalents")
    phys = data.get("physical_gpus")
    try:
        return Limit(None if eq is None else Fraction(str(eq)), None if phys is None else int(phys))
    except (ValueError, ZeroDivisionError) as exc:
        raise PolicyError(
            f"{where}: expected numbers, such as {{gpu_equivalents: 3/7, physical_gpus: 1}}, "
            f"got {data!r} ({type(exc).__name__}: {exc})"
        ) from exc


def groups_of(user: str) -> set[str]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return set()
    names = set()
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def policy_path(environ: Mapping[str, str] | None = None) -> str:
    """The caller's own policy file (``GPUROUTE_POLICY``), else the administrator's if it
    exists; empty for none. What binds is ``binding_policy``: the administrator's,
    tightened by the caller's."""
    env = os.environ if environ is None else environ
    return env.get(POLICY_ENV) or (DEFAULT_POLICY if Path(DEFAULT_POLICY).exists() else "")


def _stricter_value(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _stricter(a: Limit | None, b: Limit | None) -> Limit | None:
    """Each limit of ``a`` and ``b`` at its stricter value (None: no limit)."""
    if a is None or b is None:
        return b if a is None else a
    return Limit(
        _stricter_value(a.gpu_equivalents, b.gpu_equivalents),
        _stricter_value(a.physical_gpus, b.physical_gpus),
    )


def file_key(path: str) -> tuple[str, int, int, int] | None:
    """What tells a changed file from the same one: None when there is no file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (path, info.st_mtime_ns, info.st_size, info.st_ino)


def admin_policy() -> Policy:
    """The administrator's policy (``DEFAULT_POLICY``), or no limits where there is none.
    A file that root does not own, or that others may write, could be any user's: it is a
    PolicyError, never silently obeyed or ignored."""
    path = DEFAULT_POLICY
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Policy()
    except OSError as exc:
        raise PolicyError(f"cannot read the limits policy {path}: {exc.strerror}") from exc
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise PolicyError(
            f"the limits policy {path} binds every user, so it must belong to root and be "
            f"writable by root alone (it belongs to uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):04o}); an administrator must run "
            f"`chown root: {path} && chmod 0644 {path}`"
        )
    return Policy.load(path)


def binding_policy(
    caller: Policy | None = None, environ: Mapping[str, str] | None = None
) -> Policy:
    """The policy that binds the caller: the administrator's, tightened by the caller's own
    (``caller``, else ``GPUROUTE_POLICY``'s file) where there is one. A caller's policy
    never lifts a limit: ``GPUROUTE_POLICY=/dev/null`` changes nothing."""
    env = os.environ if environ is None else environ
    if caller is None and env.get(POLICY_ENV):
        caller = Policy.load(env[POLICY_ENV])
    admin = admin_policy()
    return admin if caller is None else admin.tightened_by(caller)


@dataclass(frozen=True)
class Policy:
    """Limits by user name and by group name, and a default for users without an entry."""

    users: Mapping[str, Limit] = field(default_factory=dict)
    groups: Mapping[str, Limit] = field(default_factory=dict)
    default: Limit | None = None
    source: str = "no policy"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"cannot read the limits policy {path}: {exc}") from exc
        if not isinstance(data, dict) or set(data) - {"default", "users", "groups"}:
            raise PolicyError(f"{path}: top-level keys are default, users and groups")
        return cls(
            users={
                str(k): _limit(v, f"{path}: users.{k}")
                for k, v in (data.get("users") or {}).items()
            },
            groups={
                str(k): _limit(v, f"{path}: groups.{k}")
                for k, v in (data.get("groups") or {}).items()
            },
            default=_limit(data["default"], f"{path}: default") if data.get("default") else None,
            source=str(path),
        )

    @classmethod
    def from_default_location(cls, environ: Mapping[str, str] | None = None) -> Policy:
        """The policy that binds the caller (``binding_policy``)."""
        return binding_policy(None, environ)

    def tightened_by(self, other: Policy) -> Policy:
        """This policy with each limit at the stricter of its own and ``other``'s: a user's
        limit is the stricter of what each policy gives that user (their entry, else the
        default), a group's of the two entries for it."""
        if not other.active:
            return self
        if not self.active:
            return other
        users: dict[str, Limit] = {}
        for name in {*self.users, *other.users}:
            limit = _stricter(self.user_limit(name), other.user_limit(name))
            assert limit is not None  # one of the two has an entry
            users[name] = limit
        groups: dict[str, Limit] = {}
        for name in {*self.groups, *other.groups}:
            limit = _stricter(self.groups.get(name), other.groups.get(name))
            assert limit is not None
            groups[name] = limit
        return Policy(
            users=users,
            groups=groups,
            default=_stricter(self.default, other.default),
            source=f"{self.source}, tightened by {other.source}",
        )

    @property
    def active(self) -> bool:
        """Whether the policy limits anyone."""
        return bool(self.users or self.groups or self.default)

    def user_limit(self, user: str) -> Limit | None:
        return self.users.get(user, self.default)

    def budgets(
        self, uid: int, user: str, records: Iterable[LeaseRecord], inventory: Inventory
    ) -> list[tuple[str, Limit | None, Usage, list[LeaseRecord]]]:
        """What counts against ``user``: their own leases under their limit (None: no
        limit), then each limited group they belong to, with the group's leases; each as
        (who, limit, usage, leases)."""
        by_lease = {r.lease_id: r for r in records}  # a lease has one file per device
        mine = [r for r in by_lease.values() if r.uid == uid]
        budgets: list[tuple[str, Limit | None, Usage, list[LeaseRecord]]] = [
            (
                f"user {user}",
                self.user_limit(user),
                usage_of([u for r in mine for u in r.devices], inventory),
                mine,
            )
        ]
        member_of = groups_of(user) if self.groups else set()
        for group, limit in self.groups.items():
            if group in member_of:
                theirs = [r for r in by_lease.values() if group in groups_of(r.user)]
                used = usage_of([u for r in theirs for u in r.devices], inventory)
                budgets.append((f"group {group}", limit, used, theirs))
        return budgets

    def check(
        self,
        uid: int,
        user: str,
        devices: Iterable[Device],
        records: Iterable[LeaseRecord],
        inventory: Inventory,
    ) -> None:
        """Raise LimitExceededError if adding ``devices`` to ``user``'s leases breaks a limit."""
        if not self.active:
            return
        asked = Usage()
        for device in devices:
            asked += device_usage(device)
        for who, lim, used, leases in self.budgets(uid, user, records, inventory):
            if lim is None:
                continue
            broken = lim.exceeded_by(used + asked)
            if broken:
                listing = (
                    "; ".join(
                        f"lease {r.lease_id} of {r.user} "
                        f"({usage_of(r.devices, inventory).describe()})"
                        for r in leases
                    )
                    or "none"
                )
                raise LimitExceededError(
                    f"this acquisition would exceed the limit of {who} ({self.source}): "
                    f"{', '.join(broken)}. Limit: {lim.describe()}. In use now: "
                    f"{used.describe()}; asked for: {asked.describe()}. Release one of: "
                    f"{listing} (or ask for less)."
                )
