"""The stand-in NVIDIA toolkit resolves NVIDIA_VISIBLE_DEVICES as the real legacy hook does."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gpuroute import Inventory
from gpuroute.testing import TOPOLOGIES, topology
from gpuroute.testing.engine import SimulatedGPUHost
from gpuroute.testing.toolkit import (
    INVENTORY_VAR,
    RECORD_DIR,
    ToolkitError,
    load_inventory,
    render,
    save_inventory,
    select,
)


def uuids(selection: object) -> list[str]:
    assert selection is not None
    return [g.uuid for g in selection.gpus]  # type: ignore[attr-defined]


class TestSelect:
    def test_last_value_wins(self, h100: Inventory) -> None:
        env = ["NVIDIA_VISIBLE_DEVICES=all", f"NVIDIA_VISIBLE_DEVICES={h100.gpus[2].uuid}"]
        assert uuids(select(env, h100)) == [h100.gpus[2].uuid]

    @pytest.mark.parametrize("value", ["void", "", " , ,", "0,void"])
    def test_not_a_gpu_container(self, h100: Inventory, value: str) -> None:
        assert select([f"NVIDIA_VISIBLE_DEVICES={value}"], h100) is None

    def test_unset_on_a_modern_image_is_not_a_gpu_container(self, h100: Inventory) -> None:
        assert select(["PATH=/bin"], h100) is None

    def test_unset_on_a_legacy_cuda_image_means_all(self, h100: Inventory) -> None:
        assert len(uuids(select(["CUDA_VERSION=11.0"], h100))) == 8

    def test_none_mounts_nothing_but_is_a_gpu_container(self, h100: Inventory) -> None:
        selection = select(["NVIDIA_VISIBLE_DEVICES=none"], h100)
        assert selection is not None
        assert selection.gpus == ()

    def test_all_and_first_special_word(self, h100: Inventory) -> None:
        assert len(uuids(select(["NVIDIA_VISIBLE_DEVICES=0,all"], h100))) == 8
        assert uuids(select(["NVIDIA_VISIBLE_DEVICES=none,all"], h100)) == []

    def test_forms_order_and_duplicates(self, h100: Inventory) -> None:
        gpu = h100.gpus
        env = [f"NVIDIA_VISIBLE_DEVICES= 3 ,{gpu[1].uuid.lower()},3,0000:9a:00.0"]
        assert uuids(select(env, h100)) == [gpu[1].uuid, gpu[3].uuid, gpu[4].uuid]

    @pytest.mark.parametrize("token", ["8", "GPU-2513ead0", "1:0", "MIG-GPU-x/1/0", "ALLX"])
    def test_unknown_device_fails_with_the_toolkits_text(self, h100: Inventory, token: str) -> None:
        with pytest.raises(ToolkitError) as err:
            select([f"NVIDIA_VISIBLE_DEVICES={token}"], h100)
        assert str(err.value) == f"nvidia-container-cli: device error: {token}: unknown device"

    def test_mig_index_mounts_the_parent_too(self, a100: Inventory) -> None:
        selection = select(["NVIDIA_VISIBLE_DEVICES=2:3"], a100)
        assert selection is not None
        assert uuids(selection) == [a100.gpus[2].uuid]
        assert [d.uuid for d in selection.migs] == [a100.gpus[2].mig_devices[3].uuid]

    def test_privileged_sees_everything(self, h100: Inventory) -> None:
        selection = select(["NVIDIA_VISIBLE_DEVICES=1"], h100, privileged=True)
        assert len(uuids(selection)) == 8

    def test_capabilities(self, h100: Inventory) -> None:
        selection = select(["NVIDIA_VISIBLE_DEVICES=1"], h100)
        assert selection is not None
        assert selection.capabilities == ("utility", "compute")
        with pytest.raises(ToolkitError, match="unsupported capabilities found in 'gpu'"):
            select(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=gpu"], h100)


def test_nvidia_smi_listing_renumbers_in_pci_order(a100: Inventory) -> None:
    selection = select(["NVIDIA_VISIBLE_DEVICES=3,1:2"], a100)
    assert selection is not None
    text = render(selection)["nvidia-smi-L"].splitlines()
    assert text[0] == f"GPU 0: {a100.gpus[1].name} (UUID: {a100.gpus[1].uuid})"
    assert text[1] == f"  MIG 1g.10gb       Device  0: (UUID: {a100.gpus[1].mig_devices[2].uuid})"
    assert text[2] == f"GPU 1: {a100.gpus[3].name} (UUID: {a100.gpus[3].uuid})"


# -- the hook as the engine runs it ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_the_engines_copy_of_the_snapshot_reads_back_the_same(tmp_path: Path, name: str) -> None:
    inventory = topology(name)
    snapshot = tmp_path / "inventory.json"
    save_inventory(inventory, snapshot)
    assert Inventory.load(snapshot) == inventory  # the snapshot itself, as before
    copy = load_inventory(snapshot)
    assert copy == inventory
    assert copy.devices() == inventory.devices()


def test_without_the_copy_the_snapshot_is_read(tmp_path: Path, a100: Inventory) -> None:
    snapshot = tmp_path / "inventory.json"
    a100.save(snapshot)
    assert load_inventory(snapshot) == a100
    (tmp_path / "inventory.json.pickle").write_bytes(b"not a pickle")
    assert load_inventory(snapshot) == a100


def test_the_hook_executable_records_the_routed_gpus(tmp_path: Path, h100: Inventory) -> None:
    """The hook as the engine writes and runs it, in a process of its own with PYTHON*
    variables ignored: it finds this gpuroute by itself."""
    host = SimulatedGPUHost(h100)
    host._write_executables(tmp_path / "bin")
    snapshot = tmp_path / "inventory.json"
    save_inventory(h100, snapshot)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    config = {"root": {"path": "rootfs"}, "process": {"env": ["NVIDIA_VISIBLE_DEVICES=3,1"]}}
    (bundle / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [str(tmp_path / "bin" / "nvidia-container-runtime-hook"), "prestart"],
        input=json.dumps({"bundle": str(bundle)}),
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], INVENTORY_VAR: str(snapshot)},
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listing = (bundle / "rootfs" / RECORD_DIR / "nvidia-smi-L").read_text()
    assert listing.splitlines() == [
        f"GPU 0: {h100.gpus[1].name} (UUID: {h100.gpus[1].uuid})",
        f"GPU 1: {h100.gpus[3].name} (UUID: {h100.gpus[3].uuid})",
    ]
