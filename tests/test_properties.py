"""Properties of resolution, checked over generated specs with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuroute import CallerContext, Device, DuplicateDeviceError, GpurouteError, Inventory
from gpuroute.core import resolve
from gpuroute.testing import TOPOLOGIES, topology

INVENTORIES = {name: topology(name) for name in TOPOLOGIES}
settings.register_profile(
    "gpuroute", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("gpuroute")

_PIECES = [
    "GPU-",
    "MIG-",
    "MIG-GPU-",
    "all",
    "any:",
    "ANY",
    "none",
    "void",
    ",",
    ":",
    ".",
    "/",
    "-",
    " ",
    "\t",
    "0",
    "1",
    "3",
    "7",
    "8",
    "18",
    "00000000:",
    "0000:",
    "2A",
    "ff",
    "a",
    "e",
    "+",
    "\u0663",
    "\x00",
    "ALL",
]


def _uuid_bits(inventory: Inventory) -> list[str]:
    out = []
    for device in inventory.devices():
        out += [device.uuid, device.uuid[:6], device.uuid[:10], device.gpu.pci_bus_id]
    return out


def spec_text(inventory: Inventory) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(_PIECES + _uuid_bits(inventory))
    return st.one_of(
        st.text(max_size=40),
        st.lists(pieces, max_size=8).map("".join),
        st.lists(st.lists(pieces, min_size=1, max_size=3).map("".join), max_size=4).map(",".join),
    )


@st.composite
def inventory_and_text(draw: st.DrawFn) -> tuple[Inventory, str]:
    inventory = INVENTORIES[draw(st.sampled_from(sorted(INVENTORIES)))]
    return inventory, draw(spec_text(inventory))


@given(inventory_and_text(), st.booleans(), st.sampled_from(["uuid", "index"]))
def test_no_other_exception_escapes_for_any_string(
    case: tuple[Inventory, str], allow_multiple_mig: bool, local_ids: str
) -> None:
    inventory, text = case
    try:
        p = resolve(
            text,
            inventory,
            context=CallerContext(),
            allow_multiple_mig=allow_multiple_mig,
            local_ids=local_ids,  # type: ignore[arg-type]
        )
    except GpurouteError as exc:
        message = str(exc)
    else:
        p.explain()
        p.to_dict()
        return
    assert message, "every error has a message"


def _forms(device: Device) -> list[str]:
    forms = [device.uuid, device.uuid.lower()]
    if device.mig is None:
        forms += [str(device.gpu.index), device.gpu.pci_bus_id, "0000:" + device.gpu.pci_bus_id[9:]]
    else:
        forms += [
            device.label,
            f"MIG-{device.gpu.uuid}/{device.mig.gpu_instance_id}/{device.mig.compute_instance_id}",
        ]
    return forms


@st.composite
def whole_gpu_request(draw: st.DrawFn) -> tuple[Inventory, list[Device], str]:
    name = draw(st.sampled_from(sorted(INVENTORIES)))
    inventory = INVENTORIES[name]
    whole = [Device(g) for g in inventory.gpus if not g.mig_mode]
    chosen = draw(
        st.permutations(whole).flatmap(lambda p: st.integers(1, len(p)).map(lambda n: p[:n]))
    )
    tokens = [draw(st.sampled_from(_forms(d))) for d in chosen]
    sep = draw(st.sampled_from([",", ", ", " ,"]))
    return inventory, list(chosen), sep.join(tokens)


@given(whole_gpu_request())
def test_container_numbering_makes_cuda_i_the_i_th_requested_gpu(
    case: tuple[Inventory, list[Device], str],
) -> None:
    """Emulate the runtime and CUDA: the container holds the requested set renumbered from 0
    in PCI order; CUDA_VISIBLE_DEVICES under PCI_BUS_ID then picks ordinals from that list."""
    inventory, chosen, text = case
    p = resolve(text, inventory, context=CallerContext())
    assert p.devices == tuple(chosen)
    mounted = p.host_env["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(mounted) == len(set(mounted)), "deduplicated"
    assert set(mounted) == {d.uuid for d in chosen}
    found = [inventory.by_uuid(u) for u in set(mounted)]
    inside = sorted((d for d in found if d is not None), key=lambda d: d.gpu.pci_bus_id)
    assert inside == list(p.container_visible)
    ordinals = [int(x) for x in p.container_env["CUDA_VISIBLE_DEVICES"].split(",")]
    assert [inside[o] for o in ordinals] == chosen
    assert p.container_env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert [p.container_map[i] for i in range(len(chosen))] == chosen


@given(whole_gpu_request())
def test_local_index_form_names_the_same_gpus(case: tuple[Inventory, list[Device], str]) -> None:
    inventory, chosen, text = case
    p = resolve(text, inventory, context=CallerContext(), local_ids="index")
    if inventory.mig_gpus:
        return  # refused there; covered by test_resolve
    by_pci = sorted(inventory.gpus, key=lambda g: g.pci_bus_id)
    picked = [by_pci[int(x)] for x in p.local_env["CUDA_VISIBLE_DEVICES"].split(",")]
    assert picked == [d.gpu for d in chosen]


@given(whole_gpu_request(), st.data())
def test_naming_a_device_twice_in_any_two_forms_is_refused(
    case: tuple[Inventory, list[Device], str], data: st.DataObject
) -> None:
    inventory, chosen, text = case
    again = data.draw(st.sampled_from(_forms(data.draw(st.sampled_from(chosen)))))
    with pytest.raises(DuplicateDeviceError, match="already names"):
        resolve(f"{text},{again}", inventory, context=CallerContext())
