"""The choice for ``any:N`` against the selection it replaced (tests/selection_oracle.py):
the same devices wherever that selection tried every group, on generated hosts (whole GPUs
and MIG devices, hierarchical and arbitrary topologies, busy and leased devices)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpuroute.core.inventory import GPU, Device, Inventory, MIGDevice
from gpuroute.core.selection import (
    UNKNOWN_DISTANCE,
    DeviceState,
    HostState,
    Need,
    _hierarchy,
    choose,
    offered,
)
from gpuroute.nvml import read_state
from gpuroute.testing import FakeNVML
from tests import selection_oracle as oracle

PROFILES = ("1g.10gb", "2g.20gb")
LEVELS = (0, 10, 20, 30, 40, 50)


def gpu(index: int, migs: tuple[str, ...] | None) -> GPU:
    return GPU(
        index=index,
        uuid=f"GPU-{index:08x}-0000-4000-8000-000000000000",
        pci_bus_id=f"00000000:{0x10 + index:02X}:00.0",
        name="NVIDIA A100-SXM4-80GB",
        memory_total_mib=81920,
        mig_mode=migs is not None,
        mig_compute_slices_total=7,
        mig_devices=tuple(
            MIGDevice(
                index=j,
                uuid=f"MIG-{index:08x}-{j:04x}-4000-8000-000000000000",
                gpu_instance_id=7 + j,
                compute_instance_id=0,
                profile=profile,
                memory_total_mib=9728,
                compute_slices=1,
            )
            for j, profile in enumerate(migs or ())
        ),
    )


@st.composite
def hosts(draw: st.DrawFn, most: int = 9) -> tuple[Inventory, HostState, Need, list[str]]:
    n = draw(st.integers(1, most))
    mig = draw(st.booleans())
    layout = [
        tuple(draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=3)))
        if mig and draw(st.integers(0, 4))
        else None
        for _ in range(n)
    ]
    inventory = Inventory(
        gpus=tuple(gpu(i, m) for i, m in enumerate(layout)), driver_version="580.95.05"
    )
    uuids = [g.uuid for g in inventory.gpus]
    distances: dict[frozenset[str], int] = {}
    if draw(st.booleans()):  # a tree: sockets, then switches, with increasing levels
        levels = sorted(draw(st.lists(st.sampled_from(LEVELS), min_size=3, max_size=3)))
        place = [(draw(st.integers(0, 1)), draw(st.integers(0, 2))) for _ in uuids]
        for (a, pa), (b, pb) in itertools.combinations(zip(uuids, place, strict=True), 2):
            depth = 2 if pa == pb else 1 if pa[0] == pb[0] else 0
            distances[frozenset((a, b))] = levels[2 - depth]
    else:  # anything, some pairs unknown
        for a, b in itertools.combinations(uuids, 2):
            level = draw(st.sampled_from((*LEVELS, None)))
            if level is not None:
                distances[frozenset((a, b))] = level
    devices = [g.uuid for g in inventory.gpus] + [
        m.uuid for g in inventory.gpus for m in g.mig_devices
    ]
    busy = draw(st.lists(st.sampled_from(devices), max_size=4, unique=True))
    taken = draw(st.lists(st.sampled_from(devices), max_size=3, unique=True))
    state = HostState({u: DeviceState(u, pids=(4242,)) for u in busy}, distances)
    profile = draw(st.sampled_from((None, *PROFILES))) if mig else None
    need = Need(count=draw(st.integers(2, 6)), mig_profile=profile)
    return inventory, state, need, taken


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts())
def test_same_choice_as_trying_every_group(
    host: tuple[Inventory, HostState, Need, list[str]],
) -> None:
    inventory, state, need, taken = host
    free, _ = offered(need, inventory, state, taken)
    assume(len(free) >= need.count and oracle.feasible(len(free), need.count))
    chosen = choose(need, inventory, state, taken, spec=f"any:{need.count}")
    assert chosen == oracle.choose(need, inventory, state, taken)


def brute_force(free: list[Device], need: Need, state: HostState) -> tuple[int, list[str]]:
    """The best group by trying every one, whatever their number."""
    best = min(
        itertools.combinations(free, need.count),
        key=lambda g: (oracle.spread(g, state), [oracle._nvml_order(d) for d in g]),
    )
    return oracle.spread(best, state), [d.uuid for d in best]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_exact_on_hierarchies_beyond_where_every_group_was_tried(data: st.DataObject) -> None:
    """Hierarchical hosts with more than 20,000 groups: still the best group (the old
    selection built greedy ones there), and never farther apart than the greedy choice."""
    n = data.draw(st.sampled_from((28, 32)))  # FakeNVML's pairs and halves nest
    inventory = Inventory(gpus=tuple(gpu(i, None) for i in range(n)), driver_version="580.95.05")
    fake = FakeNVML(inventory)
    for pid, index in enumerate(data.draw(st.lists(st.integers(0, n - 1), max_size=3))):
        fake.start_process(5000 + pid, index, 100)
    state = read_state(inventory, fake)
    need = Need(count=4)
    free, _ = offered(need, inventory, state, ())
    assume(not oracle.feasible(len(free), need.count))
    chosen = choose(need, inventory, state, (), spec="any:4")
    assert (oracle.spread(chosen, state), [d.uuid for d in chosen]) == brute_force(
        free, need, state
    )
    assert oracle.spread(chosen, state) <= oracle.spread(
        oracle.choose(need, inventory, state), state
    )


def test_large_hosts_are_hierarchies_and_the_choice_keeps_switch_pairs() -> None:
    inventory = Inventory(gpus=tuple(gpu(i, None) for i in range(64)), driver_version="580.95")
    fake = FakeNVML(inventory)
    fake.start_process(4242, 0, 500)  # the first switch pair is broken
    state = read_state(inventory, fake)
    uuids = [g.uuid for g in inventory.gpus]
    matrix = [
        [0 if a == b else state.distances.get(frozenset((a, b)), UNKNOWN_DISTANCE) for b in uuids]
        for a in uuids
    ]
    assert _hierarchy(matrix) is not None
    chosen = choose(Need(count=8), inventory, state, (), spec="any:8")
    assert [d.gpu.index for d in chosen] == list(range(2, 10))
    # The greedy search found a group as close on the other socket; the lowest indices win.
    greedy = oracle.choose(Need(count=8), inventory, state)
    assert [d.gpu.index for d in greedy] == list(range(32, 40))
    assert oracle.spread(chosen, state) == oracle.spread(greedy, state)


def test_distances_that_form_no_tree_are_searched_as_before() -> None:
    """0 and 1 near, 1 and 2 near, 0 and 2 far: no tree; the old search decides."""
    inventory = Inventory(gpus=tuple(gpu(i, None) for i in range(3)), driver_version="580.95")
    a, b, c = (g.uuid for g in inventory.gpus)
    distances = {frozenset((a, b)): 10, frozenset((b, c)): 10, frozenset((a, c)): 50}
    assert _hierarchy([[0, 10, 50], [10, 0, 10], [50, 10, 0]]) is None
    state = HostState({}, distances)
    chosen = choose(Need(count=2), inventory, state, (), spec="any:2")
    assert [d.gpu.index for d in chosen] == [0, 1]


def test_mig_devices_fill_one_gpu_then_its_switch_partner() -> None:
    inventory = Inventory(
        gpus=tuple(gpu(i, ("1g.10gb",) * 7) for i in range(8)), driver_version="580.95"
    )
    fake = FakeNVML(inventory)
    state = read_state(inventory, fake)
    state = replace(state, devices={})
    need = Need(count=9, mig_profile="1g.10gb")
    chosen = choose(need, inventory, state, [inventory.gpus[0].mig_devices[2].uuid], spec="x")
    labels = [d.label for d in chosen]
    # GPU 1's seven and two of GPU 0's six: 14 pairs across the switch, not 6 * 3 = 18.
    assert labels == ["0:0", "0:1"] + [f"1:{j}" for j in range(7)]
    assert chosen == oracle.choose(need, inventory, state, [inventory.gpus[0].mig_devices[2].uuid])
