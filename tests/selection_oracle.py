"""The selection for ``any:N`` as it was before the exact search: every group when there are
at most 20,000, else a greedy group from each start. Kept as the oracle that the package's
selection is checked against (tests/test_selection.py)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.selection import HostState, Need, offered

MAX_COMBINATIONS = 20_000


def feasible(free: int, count: int) -> bool:
    """Whether the old selection tried every group (rather than building them greedily)."""
    return math.comb(free, count) <= MAX_COMBINATIONS


def choose(
    need: Need, inventory: Inventory, state: HostState, taken: Iterable[str] = ()
) -> tuple[Device, ...]:
    free, _ = offered(need, inventory, state, taken)
    assert len(free) >= need.count
    order = sorted(free, key=_nvml_order)
    if need.count == 1:
        return (order[0],)
    combos: Iterable[tuple[Device, ...]]
    if math.comb(len(order), need.count) <= MAX_COMBINATIONS:
        combos = itertools.combinations(order, need.count)
    else:
        combos = (_greedy(order, start, need.count, state) for start in order)

    def cost(group: tuple[Device, ...]) -> tuple[int, list[tuple[int, int]]]:
        spread = sum(state.distance(a, b) for a, b in itertools.combinations(group, 2))
        return spread, [_nvml_order(d) for d in group]

    return min(combos, key=cost)


def spread(group: Iterable[Device], state: HostState) -> int:
    return sum(state.distance(a, b) for a, b in itertools.combinations(list(group), 2))


def _greedy(order: list[Device], start: Device, k: int, state: HostState) -> tuple[Device, ...]:
    group = [start]
    rest = [d for d in order if d is not start]
    while len(group) < k:
        best = min(rest, key=lambda d: (sum(state.distance(d, g) for g in group), d.gpu.index))
        group.append(best)
        rest.remove(best)
    return tuple(sorted(group, key=_nvml_order))


def _nvml_order(device: Device) -> tuple[int, int]:
    return (device.gpu.index, device.mig.index if device.mig else -1)
