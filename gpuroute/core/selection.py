"""Choosing free devices for a request such as ``any:2``. Pure: the live state is a value.

A device is offered when it is healthy, held by no lease, runs no process (a process that
gpuroute did not start makes a device busy: a leased device is busy anyway), and passes the
request's filters. Among the offered devices the choice is deterministic:

1. for several devices, the set that sits closest together (the smallest sum of pairwise NVML
   topology levels: same PCIe switch before same NUMA node before across the system);
2. then the lowest NVML indices (MIG devices: parent index, then MIG index).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpuroute.core.inventory import Device, Inventory
from gpuroute.errors import NoFreeDeviceError

__all__ = ["DeviceState", "HostState", "Need", "choose", "offered"]

UNKNOWN_DISTANCE = 60
"""Distance assumed between GPUs whose topology is unknown (worse than NVML's worst, 50)."""
_MAX_COMBINATIONS = 20_000


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Live facts about one device (a GPU or a MIG device)."""

    uuid: str
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    pids: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()
    """Health problems; a device with any is never offered."""
    xids: tuple[int, ...] = ()
    """Critical Xids NVML delivered at this reading (already among ``problems``): NVML
    delivers each to one reader only, so the reader records them (``gpuroute.health``)."""

    @property
    def memory_free_mib(self) -> int | None:
        if self.memory_used_mib is None or self.memory_total_mib is None:
            return None
        return self.memory_total_mib - self.memory_used_mib


_NOTHING_KNOWN = DeviceState("")
"""What is known of a device the state does not list: nothing (idle, healthy)."""


@dataclass(frozen=True)
class HostState:
    """Live state of a host's devices, keyed by UUID, with GPU-to-GPU topology distances.

    ``source`` says where it came from; ``HostState.unknown()`` is the state of a host that
    could not be asked (every device then counts as idle and healthy, and the plan says so).
    """

    devices: Mapping[str, DeviceState] = field(default_factory=dict)
    distances: Mapping[frozenset[str], int] = field(default_factory=dict)
    source: str = "nvml"

    @classmethod
    def unknown(cls) -> HostState:
        return cls(source="none")

    def of(self, uuid: str) -> DeviceState:
        found = self.devices.get(uuid)
        return found if found is not None else _NOTHING_KNOWN

    def problems_of(self, device: Device) -> tuple[str, ...]:
        """A device's health problems: its own, or else its GPU's (a MIG device is as sick
        as the GPU it is part of)."""
        return self.of(device.uuid).problems or self.of(device.gpu.uuid).problems

    def distance(self, a: Device, b: Device) -> int:
        if a.gpu.uuid == b.gpu.uuid:
            return 0
        return self.distances.get(frozenset((a.gpu.uuid, b.gpu.uuid)), UNKNOWN_DISTANCE)


@dataclass(frozen=True)
class Need:
    """What a request for free devices asks for.

    ``mig_profile`` asks for MIG devices of that profile (``1g.10gb``) instead of whole GPUs;
    ``model`` matches GPU names case-insensitively (``"H100"``); ``min_free_mib`` is the least
    free memory a device must have now.
    """

    count: int
    min_free_mib: int | None = None
    model: str | None = None
    mig_profile: str | None = None


def offered(
    need: Need,
    inventory: Inventory,
    state: HostState,
    taken: Iterable[str],
    allowed: Iterable[str] | None = None,
) -> tuple[list[Device], dict[str, str]]:
    """The devices that may be given for ``need``, and why each other candidate is not.
    ``allowed``, when given, is the set of UUIDs the caller may use at all (a parent
    ``CUDA_VISIBLE_DEVICES`` mask, for a local process)."""
    held = set(taken)
    permitted = None if allowed is None else set(allowed)
    if need.mig_profile is not None:
        candidates = [
            Device(g, m)
            for g in inventory.gpus
            for m in g.mig_devices
            if m.profile == need.mig_profile
        ]
    else:
        candidates = [Device(g) for g in inventory.gpus if not g.mig_mode]
    free: list[Device] = []
    why: dict[str, str] = {}
    for device in candidates:
        live = state.of(device.uuid)
        problems = state.problems_of(device)
        if permitted is not None and not {device.uuid, device.gpu.uuid} & permitted:
            why[device.label] = "outside this process's CUDA_VISIBLE_DEVICES"
        elif problems:
            why[device.label] = "unhealthy: " + "; ".join(problems)
        elif device.uuid in held or device.gpu.uuid in held:
            why[device.label] = "leased"
        elif live.pids:
            why[device.label] = (
                f"busy: process(es) {', '.join(map(str, live.pids))} not started by gpuroute"
            )
        elif need.model and need.model.lower() not in device.gpu.name.lower():
            why[device.label] = f"model is {device.gpu.name}"
        elif (
            need.min_free_mib is not None
            and live.memory_free_mib is not None
            and live.memory_free_mib < need.min_free_mib
        ):
            why[device.label] = f"{live.memory_free_mib} MiB free < {need.min_free_mib} MiB"
        else:
            free.append(device)
    return free, why


def choose(
    need: Need,
    inventory: Inventory,
    state: HostState,
    taken: Iterable[str],
    *,
    spec: str,
    allowed: Iterable[str] | None = None,
) -> tuple[Device, ...]:
    """Pick ``need.count`` devices (see the module's rules), or raise NoFreeDeviceError
    saying why each candidate was passed over."""
    free, why = offered(need, inventory, state, taken, allowed)
    if len(free) < need.count:
        kind = f"MIG devices of profile {need.mig_profile}" if need.mig_profile else "whole GPUs"
        reasons = "\n".join(f"  {label:<5} {reason}" for label, reason in why.items())
        raise NoFreeDeviceError(
            f"{spec!r} needs {need.count} free {kind}; {len(free)} available"
            + (f" ({', '.join(d.label for d in free)})" if free else "")
            + (f". Not offered:\n{reasons}" if reasons else f"; this host has no more {kind}."),
            spec=spec,
            token=spec,
        )
    order = sorted(free, key=_nvml_order)
    if need.count == 1:
        return (order[0],)
    combos: Iterable[tuple[Device, ...]]
    if math.comb(len(order), need.count) <= _MAX_COMBINATIONS:
        combos = itertools.combinations(order, need.count)
    else:
        combos = (_greedy(order, start, need.count, state) for start in order)

    def cost(group: tuple[Device, ...]) -> tuple[int, list[tuple[int, int]]]:
        spread = sum(state.distance(a, b) for a, b in itertools.combinations(group, 2))
        return spread, [_nvml_order(d) for d in group]

    return min(combos, key=cost)


def _greedy(order: list[Device], start: Device, k: int, state: HostState) -> tuple[Device, ...]:
    group = [start]
    rest = [d for d in order if d is not start]
    while len(group) < k:
        best = min(rest, key=lambda d: (sum(state.distance(d, g) for g in group), d.gpu.index))
        group.append(best)
        rest.remove(best)
    return tuple(sorted(group, key=_nvml_order))


def _nvml_order(device: Device) -> tuple[int, int]:
    """NVML index order: the GPU's index, then the MIG device's."""
    return (device.gpu.index, device.mig.index if device.mig else -1)
