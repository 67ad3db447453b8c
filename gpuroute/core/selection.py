"""Choosing free devices for a request such as ``any:2``. Pure: the live state is a value.

A device is offered when it is healthy, held by no lease, runs no process (a process that
gpuroute did not start makes a device busy: a leased device is busy anyway), and passes the
request's filters. Among the offered devices the choice is deterministic:

1. for several devices, the set that sits closest together (the smallest sum of pairwise NVML
   topology levels: same PCIe switch before same NUMA node before across the system; two
   MIG devices of one GPU are 0 apart);
2. then the lowest NVML indices (MIG devices: parent index, then MIG index): of two sets
   equally close, the one whose sorted indices come first.

The best set is found exactly when the GPUs' distances form a hierarchy (as NVML's levels
on a PCIe tree do) or when there are at most 20,000 sets to try; otherwise it is the best of
the sets built greedily from each device.
"""

from __future__ import annotations

import itertools
import math
import operator
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
    return tuple(order[i] for i in _closest(order, need.count, state))


def _closest(order: list[Device], k: int, state: HostState) -> tuple[int, ...]:
    """The positions (in ``order``, which is NVML order) of the ``k`` devices to give: the
    smallest sum of pairwise distances, then the lowest NVML indices (the smallest sorted
    list of positions).

    Devices on one GPU (MIG devices) are 0 apart and equally far from every other device, so
    the search runs over GPUs, each holding its offered devices in NVML order ("blocks"),
    with their distances read once into a matrix. When those distances form a hierarchy
    (every pair of GPUs is exactly as far apart as the level at which single-linkage
    clustering joins them, as NVML's common-ancestor levels on a PCIe tree do), an exact
    dynamic programme over that tree finds the best group. Otherwise every group is tried
    when there are at most 20,000, else a greedy group is built from each start."""
    parents: list[str] = []
    starts: list[int] = []
    block: list[int] = []
    for position, device in enumerate(order):
        if not parents or device.gpu.uuid != parents[-1]:
            parents.append(device.gpu.uuid)
            starts.append(position)
        block.append(len(parents) - 1)
    starts.append(len(order))
    size = len(parents)
    where = {uuid: b for b, uuid in enumerate(parents)}
    matrix = [[UNKNOWN_DISTANCE] * size for _ in range(size)]
    for b in range(size):
        matrix[b][b] = 0
    for pair, level in state.distances.items():
        if len(pair) == 2:
            first, second = pair
            a, c = where.get(first), where.get(second)
            if a is not None and c is not None:
                matrix[a][c] = matrix[c][a] = level
    merges = _hierarchy(matrix)
    if merges is not None:
        return _tree_choice(merges, starts, k)
    if math.comb(len(order), k) <= _MAX_COMBINATIONS:
        groups: Iterable[tuple[int, ...]] = itertools.combinations(range(len(order)), k)
    else:
        groups = (_greedy(block, matrix, start, k) for start in range(len(order)))

    def cost(group: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        rows = [matrix[block[i]] for i in group]
        spread = sum(rows[x][block[group[y]]] for x in range(k) for y in range(x + 1, k))
        return spread, group

    return min(groups, key=cost)


_Merge = tuple[int, int, int]
"""Two clusters joined at a distance: (cluster, cluster, distance). Clusters 0..n-1 are the
GPUs; each merge makes the next number, and a cluster is made before it is joined."""


def _hierarchy(matrix: list[list[int]]) -> list[_Merge] | None:
    """The GPUs as a binary tree of clusters whose every pair of GPUs, one on each side of a
    join, is exactly the join's distance apart; None when the distances form no such tree.

    Top-down: in a set, the GPUs nearer to its first GPU than the set's largest distance
    from it form one side, the others the other side, and every pair across must be that
    largest distance apart. Each pair of GPUs is compared once, at the split between them."""
    size = len(matrix)
    merges: list[_Merge] = []
    made: dict[int, int] = {}  # a split's task number -> the cluster number it made
    # Tasks: (members, task number). A split is recorded before its sides are split; the
    # merges are made in the reverse order, so that a cluster is numbered before its parent.
    stack: list[tuple[list[int], int]] = [(list(range(size)), 0)]
    splits: list[tuple[int, int, int]] = []  # (task, task of one side, task of the other)
    levels: dict[int, int] = {}
    leaf: dict[int, int] = {}
    tasks = 1
    while stack:
        members, task = stack.pop()
        if len(members) == 1:
            leaf[task] = members[0]
            continue
        first, others = members[0], members[1:]
        row = matrix[first]
        far = max(row[y] for y in others)
        near = [first] + [y for y in others if row[y] < far]
        rest = [y for y in others if row[y] >= far]
        across = operator.itemgetter(*rest) if len(rest) > 1 else None
        for x in near:
            other = matrix[x]
            if across is None:
                if other[rest[0]] != far:
                    return None
            elif across(other).count(far) != len(rest):
                return None
        levels[task] = far
        splits.append((task, tasks, tasks + 1))
        stack.append((near, tasks))
        stack.append((rest, tasks + 1))
        tasks += 2
    for task, b in leaf.items():
        made[task] = b
    for task, one, two in reversed(splits):
        made[task] = size + len(merges)
        merges.append((made[one], made[two], levels[task]))
    return merges


_Table = tuple[list[int], list[tuple[int, ...]]]
"""For m = 0, 1, ...: the least sum of distances of m devices in a cluster, and the lowest
sorted positions with that sum."""


def _tree_choice(merges: list[_Merge], starts: list[int], k: int) -> tuple[int, ...]:
    """The best ``k`` positions over a hierarchy: for each cluster and each count m up to
    ``k``, the best (sum of distances, sorted positions) of m devices inside it. Joining two
    clusters at level L, i devices from one and j from the other cost theirs plus i*j*L, and
    the merge of two lowest sorted lists is the lowest: the tables compose exactly.

    Clusters alike (the same levels, GPUs of the same sizes at the same places relative to
    the cluster's first position: the two sockets of a host, its switch pairs) have the same
    table up to that shift, which is then computed once."""
    tables: list[_Table] = []
    spans: list[tuple[int, int]] = []  # each cluster's lowest and highest position
    kinds: list[int] = []  # clusters alike share a kind
    kind_of: dict[tuple[int, ...], int] = {}
    made: dict[int, tuple[_Table, int]] = {}  # a kind's table, and the cluster's lowest position
    for b in range(len(starts) - 1):
        first, size = starts[b], starts[b + 1] - starts[b]
        cap = min(k, size)
        tables.append(([0] * (cap + 1), [tuple(range(first, first + m)) for m in range(cap + 1)]))
        spans.append((first, first + size - 1))
        kinds.append(kind_of.setdefault((size,), len(kind_of)))
    last = len(merges) - 1
    for step, (left, right, level) in enumerate(merges):
        if spans[right][0] < spans[left][0]:
            left, right = right, left
        (low_one, high_one), (low_two, high_two) = spans[left], spans[right]
        key = (level, kinds[left], kinds[right], low_two - low_one)
        kind = kind_of.setdefault(key, len(kind_of))
        kinds.append(kind)
        spans.append((low_one, max(high_one, high_two)))
        known = made.get(kind)
        if known is not None and step != last:
            (costs, shown), low = known
            shift = low_one - low
            tables.append((costs, [tuple([x + shift for x in g]) for g in shown]))
            tables[left] = tables[right] = ([], [])
            continue
        (one_cost, one_group), (two_cost, two_group) = tables[left], tables[right]
        # Two clusters side by side in NVML order: their lists join by concatenation.
        apart = high_one < low_two
        top_one, top_two = len(one_cost) - 1, len(two_cost) - 1
        costs = []
        groups: list[tuple[int, ...]] = []
        for m in range(k if step == last else 0, min(k, top_one + top_two) + 1):
            splits = range(max(0, m - top_two), min(m, top_one) + 1)
            each = [one_cost[i] + two_cost[m - i] + i * (m - i) * level for i in splits]
            cost = min(each)
            tied = [
                one_group[i] + two_group[m - i]
                for i, c in zip(splits, each, strict=True)
                if c == cost
            ]
            if not apart:
                tied = [tuple(sorted(g)) for g in tied]
            costs.append(cost)
            groups.append(min(tied) if len(tied) > 1 else tied[0])
        tables.append((costs, groups))
        made[kind] = ((costs, groups), low_one)
        tables[left] = tables[right] = ([], [])  # each cluster joins once
    if not merges:  # one GPU: its lowest k devices
        return tables[0][1][k]
    return tables[-1][1][-1]


def _greedy(block: list[int], matrix: list[list[int]], start: int, k: int) -> tuple[int, ...]:
    """From ``start``, add the device closest to those taken (ties: the lowest position)."""
    row = matrix[block[start]]
    near = [row[b] for b in block]
    taken = {start}
    while len(taken) < k:
        best = min((p for p in range(len(block)) if p not in taken), key=near.__getitem__)
        taken.add(best)
        row = matrix[block[best]]
        near = [near[p] + row[b] for p, b in enumerate(block)]
    return tuple(sorted(taken))


def _nvml_order(device: Device) -> tuple[int, int]:
    """NVML index order: the GPU's index, then the MIG device's."""
    return (device.gpu.index, device.mig.index if device.mig else -1)
