"""The inventory value and its snapshot file format (a public contract)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpuroute import GPU, Inventory, InventoryError, MIGDevice, SnapshotError

ISSUE_EXAMPLE: dict[str, Any] = {
    "schema": "gpuroute.inventory/1",
    "driver_version": "580.95.05",
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-11111111-2222-3333-4444-555555555555",
            "pci_bus_id": "00000000:18:00.0",
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559,
            "mig_mode": False,
            "mig_compute_slices_total": 7,
            "mig_devices": [],
        },
        {
            "index": 1,
            "uuid": "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa",
            "pci_bus_id": "00000000:2A:00.0",
            "name": "NVIDIA A100-SXM4-80GB",
            "memory_total_mib": 81920,
            "mig_mode": True,
            "mig_compute_slices_total": 7,
            "mig_devices": [
                {
                    "index": 0,
                    "uuid": "MIG-bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
                    "gpu_instance_id": 2,
                    "compute_instance_id": 0,
                    "profile": "3g.40gb",
                    "memory_total_mib": 40192,
                    "compute_slices": 3,
                }
            ],
        },
    ],
}


def test_the_documented_example_loads_and_saves_byte_for_byte_equal(tmp_path: Path) -> None:
    inv = Inventory.from_dict(ISSUE_EXAMPLE)
    assert inv.gpus[1].mig_devices[0] == MIGDevice(
        0, "MIG-bbbbbbbb-cccc-dddd-eeee-ffffffffffff", 2, 0, "3g.40gb", 40192, 3
    )
    assert inv.to_dict() == ISSUE_EXAMPLE
    inv.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == ISSUE_EXAMPLE


def test_every_topology_round_trips(any_topology: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    any_topology.save(path)
    assert Inventory.load(path) == any_topology
    assert not list(tmp_path.glob(".*tmp")), "the temporary file is renamed away"


def test_null_driver_and_no_mig_support() -> None:
    doc = copy.deepcopy(ISSUE_EXAMPLE)
    doc["driver_version"] = None
    doc["gpus"] = doc["gpus"][:1]
    doc["gpus"][0]["mig_compute_slices_total"] = None
    inv = Inventory.from_dict(doc)
    assert inv.driver_version is None
    assert inv.gpus[0].mig_compute_slices_total is None


def _mutated(path: list[Any], value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(ISSUE_EXAMPLE)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_mutated(["schema"], "gpuroute.inventory/2"), "schema is 'gpuroute.inventory/2'"),
        (_mutated(["schema"], delete=True), "schema is None"),
        (_mutated(["hostname"], "x"), "hostname: Extra inputs are not permitted"),
        (_mutated(["gpus", 0, "serial"], "x"), "gpus.0.serial: Extra inputs are not permitted"),
        (_mutated(["gpus", 1, "mig_devices", 0, "slices"], 3), "gpus.1.mig_devices.0.slices"),
        (_mutated(["gpus", 0, "uuid"], delete=True), "gpus.0.uuid: Field required"),
        (_mutated(["gpus", 0, "index"], "0"), "gpus.0.index"),
        (_mutated(["gpus", 0, "uuid"], "11111111"), "gpus.0.uuid"),
        (_mutated(["gpus", 0, "pci_bus_id"], "bus 18"), "not a PCI bus id"),
        (_mutated(["gpus", 1, "index"], 0), "index 0"),
        (_mutated(["gpus", 1, "mig_mode"], False), "MIG mode is off"),
        (_mutated(["gpus", 1, "uuid"], ISSUE_EXAMPLE["gpus"][0]["uuid"]), "appears twice"),
        (_mutated(["gpus", 1, "pci_bus_id"], "0000:18:00.0"), "share PCI bus id"),
        ([], "document: Input should be"),
    ],
)
def test_bad_snapshots_are_rejected_with_the_field(doc: Any, expected: str) -> None:
    with pytest.raises(SnapshotError) as err:
        Inventory.from_dict(doc, source="host.json")
    assert "host.json" in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["gpus", 0, "uuid"], "GPU-0,all"),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-555555555555,all"),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-555555555555 "),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-5555555555555"),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-55555555555G"),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-AAAAAAAAAAAA"),
        (["gpus", 0, "uuid"], "GPU-11111111-2222-3333-4444-555555555555\n"),
        (["gpus", 1, "mig_devices", 0, "uuid"], "MIG-0,all"),
        (["gpus", 1, "mig_devices", 0, "uuid"], "MIG-bbbbbbbb-cccc-dddd-eeee-ffffffffffff,0"),
        (["gpus", 1, "mig_devices", 0, "uuid"], "MIG-GPU-66666666-7777-8888-9999-aaaaaaaaaaaa/2"),
        (["gpus", 1, "mig_devices", 0, "uuid"], "MIG-GPU-0,all/2/0"),
        (["gpus", 0, "pci_bus_id"], "18:00.0"),
        (["gpus", 0, "pci_bus_id"], "0:18:0.0"),
        (["gpus", 0, "pci_bus_id"], "00000000:18:00.0,all"),
        (["gpus", 0, "pci_bus_id"], "00000000:18:00.0\n"),
    ],
)
def test_identifiers_must_have_the_toolkits_exact_form(
    path: list[Any], value: str, tmp_path: Path
) -> None:
    """A UUID such as "GPU-0,all" would reach NVIDIA_VISIBLE_DEVICES and show every GPU."""
    snapshot = tmp_path / "host.json"
    snapshot.write_text(json.dumps(_mutated(path, value)))
    field = ".".join(str(p) for p in path)
    with pytest.raises(SnapshotError, match=rf"host\.json .*{field}: .*NVML") as err:
        Inventory.load(snapshot)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["gpus", 1, "mig_devices", 0, "uuid"], "MIG-GPU-66666666-7777-8888-9999-aaaaaaaaaaaa/2/0"),
        (["gpus", 0, "pci_bus_id"], "0000:18:00.0"),
        (["gpus", 0, "pci_bus_id"], "00000000:18:00.0"),
        (["gpus", 0, "pci_bus_id"], "0000:18:0a.1"),
    ],
)
def test_every_form_nvml_writes_is_accepted(path: list[Any], value: str) -> None:
    inv = Inventory.from_dict(_mutated(path, value))
    assert value.upper() in {d.uuid.upper() for d in inv.devices()} | {
        g.pci_bus_id[-len(value) :] for g in inv.gpus
    }


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(SnapshotError, match=r"cannot read inventory snapshot .*missing\.json"):
        Inventory.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": ')
    with pytest.raises(SnapshotError, match=r"broken.json is not JSON \(line 1"):
        Inventory.load(broken)


def test_hostile_snapshots_are_a_snapshot_error(tmp_path: Path) -> None:
    """Deeply nested (RecursionError), not UTF-8 (UnicodeDecodeError), /dev/zero (MemoryError),
    a FIFO (waited on for ever), a 5,000-digit number (ValueError): each a SnapshotError that
    names the file."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SnapshotError, match=r"deep\.json is nested too deeply"):
        Inventory.load(deep)
    nested = _mutated(["gpus", 0, "name"], None)
    node: Any = nested["gpus"][0]
    for _ in range(200):
        node["name"] = {"name": None}
        node = node["name"]
    deep.write_text(json.dumps(nested))
    with pytest.raises(SnapshotError, match=r"deep\.json is nested too deeply"):
        Inventory.load(deep)
    latin = tmp_path / "latin.json"
    latin.write_bytes(json.dumps(_mutated(["gpus", 0, "name"], "caf\u00e9")).encode("latin-1"))
    latin.write_bytes(latin.read_bytes().replace(b"\\u00e9", "\u00e9".encode("latin-1")))
    with pytest.raises(SnapshotError, match=r"latin\.json is not UTF-8"):
        Inventory.load(latin)
    with pytest.raises(SnapshotError, match=r"/dev/zero is not a regular file"):
        Inventory.load("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match=r"fifo\.json is not a regular file"):
        Inventory.load(fifo)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(ISSUE_EXAMPLE) + " " * (16 << 20))
    with pytest.raises(SnapshotError, match=r"big\.json is larger than 8 MiB"):
        Inventory.load(big)
    digits = tmp_path / "digits.json"
    digits.write_text(json.dumps(ISSUE_EXAMPLE).replace('"index": 0', '"index": ' + "9" * 5000))
    with pytest.raises(SnapshotError, match=r"digits\.json is not JSON"):
        Inventory.load(digits)


def test_save_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot write"):
        Inventory(gpus=()).save(tmp_path / "no" / "such" / "dir.json")


def test_inventory_is_immutable_and_checked() -> None:
    gpu = GPU(0, "GPU-a", "0000:01:00.0", "X", 1)
    assert gpu.pci_bus_id == "00000000:01:00.0"
    with pytest.raises(InventoryError, match="position 0 has index 1"):
        Inventory(gpus=(GPU(1, "GPU-a", "01:00.0", "X", 1),))
    inv = Inventory(gpus=[gpu])  # type: ignore[arg-type]
    assert inv.gpus == (gpu,)
    with pytest.raises(AttributeError):
        inv.gpus = ()  # type: ignore[misc]
