"""Resolution: every form finds the right device, every error case raises with a clear message,
and the plan's three environments are right."""

from __future__ import annotations

import dataclasses

import pytest

import gpuroute
from gpuroute import (
    AmbiguousDeviceError,
    CallerContext,
    ContextError,
    DuplicateDeviceError,
    GpurouteError,
    Inventory,
    MIGModeError,
    MixedDeviceError,
    MultipleMIGError,
    RoutingPlan,
    SpecError,
    UnknownDeviceError,
)
from gpuroute.core import resolve


def plan(spec: object, inventory: Inventory, **kw: object) -> RoutingPlan:
    return resolve(spec, inventory, context=CallerContext(), **kw)  # type: ignore[arg-type]


class TestDoneWhen:
    def test_3_1_on_the_8_gpu_host(self, h100: Inventory) -> None:
        p = plan("3,1", h100)
        g3, g1 = h100.gpus[3], h100.gpus[1]
        assert p.host_env["NVIDIA_VISIBLE_DEVICES"] == f"{g3.uuid},{g1.uuid}"
        assert p.host_env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        assert dict(p.container_env) == {
            "CUDA_VISIBLE_DEVICES": "1,0",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        assert p.container_map[0] == gpuroute.Device(g3)
        assert p.container_map[1] == gpuroute.Device(g1)
        assert p.container_visible == (gpuroute.Device(g1), gpuroute.Device(g3))

    def test_public_plan_uses_the_snapshot_named_by_the_environment(
        self, h100: Inventory, tmp_path: object, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from pathlib import Path

        path = Path(str(tmp_path)) / "inv.json"
        h100.save(path)
        monkeypatch.setenv("GPUROUTE_INVENTORY", str(path))
        p = gpuroute.plan("3,1")
        assert p.inventory == h100
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == "1,0"


class TestEveryFormNamesTheSameDevice:
    def test_whole_gpu_forms(self, h100: Inventory) -> None:
        gpu = h100.gpus[5]
        short_domain = "0000:" + gpu.pci_bus_id[9:]
        forms = [
            "5",
            5,
            gpu.uuid,
            gpu.uuid.lower(),
            _unique_prefix(h100, gpu.uuid),
            gpu.pci_bus_id,
            short_domain.lower(),
        ]
        for form in forms:
            assert plan([form] if isinstance(form, int) else form, h100).devices[0].gpu == gpu, form

    def test_mig_forms(self, a100: Inventory) -> None:
        gpu = a100.gpus[2]
        mig = gpu.mig_devices[3]
        forms = [
            "2:3",
            mig.uuid,
            _unique_prefix(a100, mig.uuid),
            f"MIG-{gpu.uuid}/{mig.gpu_instance_id}/{mig.compute_instance_id}",
        ]
        for form in forms:
            (device,) = plan(form, a100).devices
            assert (device.gpu, device.mig) == (gpu, mig), form

    def test_requested_order_is_kept(self, h100: Inventory) -> None:
        p = plan(["7", 0, h100.gpus[4].uuid], h100)
        assert [d.gpu.index for d in p.devices] == [7, 0, 4]
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == "2,0,1"


class TestAllAndNone:
    def test_all_whole_gpus(self, h100: Inventory) -> None:
        p = plan("all", h100)
        assert [d.gpu.index for d in p.devices] == list(range(8))
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
        assert "all" not in p.host_env["NVIDIA_VISIBLE_DEVICES"]

    def test_all_leaves_out_mig_gpus_and_says_so(self, a100: Inventory) -> None:
        p = plan("all", a100)
        assert [d.gpu.index for d in p.devices] == [0, 3]
        assert any("leaves out GPU(s) 1, 2" in n for n in p.notes)
        assert "leaves out" in p.explain()

    def test_all_on_a_host_without_whole_gpus(self) -> None:
        with pytest.raises(UnknownDeviceError, match="no GPUs"):
            plan("all", Inventory(gpus=()))

    @pytest.mark.parametrize("spec", ["none", "", None, []])
    def test_no_gpu_is_void_and_empty_never_unset(self, h100: Inventory, spec: object) -> None:
        p = plan(spec, h100)
        assert p.devices == ()
        assert p.host_env["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == ""
        assert p.local_env["CUDA_VISIBLE_DEVICES"] == ""


class TestErrors:
    def test_index_out_of_range_lists_what_is_available(self, h100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError) as err:
            plan("0,8", h100)
        assert err.value.token == "8"
        assert "indices 0-7" in str(err.value)
        assert h100.gpus[7].uuid in str(err.value)

    def test_unknown_uuid(self, h100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError, match="no GPU has a UUID starting with GPU-0000"):
            plan("GPU-0000", h100)

    def test_unknown_pci(self, h100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError, match=r"00000000:19:00\.0"):
            plan("0000:19:00.0", h100)

    def test_ambiguous_prefix_lists_the_candidates(self, h100: Inventory) -> None:
        first, second = _two_sharing_a_prefix(h100)
        prefix = _common_prefix(first, second)
        with pytest.raises(AmbiguousDeviceError) as err:
            plan(prefix, h100)
        assert err.value.token == prefix
        assert first in str(err.value)
        assert second in str(err.value)

    def test_duplicate_same_form(self, h100: Inventory) -> None:
        with pytest.raises(DuplicateDeviceError) as err:
            plan("1,2,1", h100)
        assert err.value.token == "1"

    def test_duplicate_two_forms(self, h100: Inventory) -> None:
        gpu = h100.gpus[2]
        with pytest.raises(DuplicateDeviceError, match=r"already names \(as '2'\)"):
            plan(f"2,{gpu.pci_bus_id}", h100)

    def test_duplicate_mig_two_forms(self, a100: Inventory) -> None:
        mig = a100.gpus[1].mig_devices[0]
        with pytest.raises(DuplicateDeviceError):
            plan(f"1:0,{mig.uuid}", a100, allow_multiple_mig=True)

    def test_whole_gpu_in_mig_mode_lists_its_mig_devices(self, a100: Inventory) -> None:
        with pytest.raises(MIGModeError) as err:
            plan(a100.gpus[1].uuid, a100)
        for mig in a100.gpus[1].mig_devices:
            assert mig.uuid in str(err.value)
        assert "1:0" in str(err.value)

    def test_mig_index_on_a_gpu_without_mig(self, a100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError, match="not in MIG mode"):
            plan("0:0", a100)

    def test_mig_index_out_of_range(self, a100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError, match="no MIG device 6"):
            plan("1:6", a100)

    def test_legacy_mig_with_unknown_instances(self, a100: Inventory) -> None:
        with pytest.raises(UnknownDeviceError, match="GPU instance 4"):
            plan(f"MIG-{a100.gpus[1].uuid}/4/0", a100)

    def test_whole_gpus_mixed_with_mig(self, a100: Inventory) -> None:
        with pytest.raises(MixedDeviceError) as err:
            plan("0,1:0", a100)
        assert "0" in str(err.value)
        assert "1:0" in str(err.value)

    def test_more_than_one_mig_needs_opt_in(self, a100: Inventory) -> None:
        with pytest.raises(MultipleMIGError, match="allow_multiple_mig=True") as err:
            plan("1:0,2:0", a100)
        assert err.value.token == "2:0"
        p = plan("1:0,2:0", a100, allow_multiple_mig=True)
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == ",".join(p.uuids)

    def test_one_compute_instance_per_gpu_instance(self, a100: Inventory) -> None:
        # 2:1 and 2:2 are compute instances 0 and 1 of GPU instance 5.
        with pytest.raises(MultipleMIGError, match="same GPU instance"):
            plan("2:1,2:2", a100, allow_multiple_mig=True)

    def test_several_mig_devices_need_driver_r570(self, a100: Inventory) -> None:
        old = dataclasses.replace(a100, driver_version="535.183.01")
        with pytest.raises(MultipleMIGError, match="R570"):
            plan("1:0,2:0", old, allow_multiple_mig=True)

    def test_unknown_capability(self, h100: Inventory) -> None:
        with pytest.raises(SpecError, match="'gpu' is not an NVIDIA driver capability"):
            plan("0", h100, driver_capabilities=["compute", "gpu"])

    def test_capabilities_are_configurable(self, h100: Inventory) -> None:
        p = plan("0", h100, driver_capabilities="compute,utility,video")
        assert p.host_env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"

    def test_every_error_is_a_gpuroute_error(self) -> None:
        for name in gpuroute.__all__:
            obj = getattr(gpuroute, name)
            if isinstance(obj, type) and name.endswith("Error"):
                assert issubclass(obj, GpurouteError)


class TestLocalEnv:
    def test_uuids_by_default(self, h100: Inventory) -> None:
        p = plan("3,1", h100)
        assert dict(p.local_env) == {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": f"{h100.gpus[3].uuid},{h100.gpus[1].uuid}",
        }

    def test_indices_on_request(self, workstation: Inventory) -> None:
        p = plan("1,0", workstation, local_ids="index")
        assert dict(p.local_env) == {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "1,0",
        }

    def test_index_form_refuses_mig(self, a100: Inventory) -> None:
        p = plan("1:0", a100, local_ids="index")
        with pytest.raises(ContextError, match="MIG device has no integer CUDA id"):
            p.local_env  # noqa: B018
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == "0"

    def test_index_form_refused_on_a_host_with_mig_gpus(self, a100: Inventory) -> None:
        with pytest.raises(ContextError, match="MIG mode"):
            plan("0,3", a100, local_ids="index", target="local")

    def test_plan_is_immutable(self, h100: Inventory) -> None:
        p = plan("0", h100)
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.spec = "1"  # type: ignore[misc]
        with pytest.raises(TypeError):
            p.host_env["NVIDIA_VISIBLE_DEVICES"] = "all"  # type: ignore[index]


def test_explain_shows_every_view(h100: Inventory) -> None:
    text = plan("3,1", h100).explain()
    for expected in [
        "NVIDIA_VISIBLE_DEVICES=" + h100.gpus[3].uuid,
        "CUDA_VISIBLE_DEVICES=1,0",
        "CUDA_DEVICE_ORDER=PCI_BUS_ID",
        f"cuda:0 -> host GPU 3 ({h100.gpus[3].uuid})",
        "Process on this host:",
    ]:
        assert expected in text


def test_to_dict_is_json_ready(h100: Inventory) -> None:
    import json

    data = json.loads(json.dumps(plan("3,1", h100).to_dict()))
    assert data["container_env"]["CUDA_VISIBLE_DEVICES"] == "1,0"
    assert data["container_map"] == {"0": "3", "1": "1"}
    assert [d["label"] for d in data["devices"]] == ["3", "1"]


# -- helpers ----------------------------------------------------------------------------


def _unique_prefix(inventory: Inventory, uuid: str) -> str:
    for n in range(5, len(uuid) + 1):
        if len(inventory.uuids_starting_with(uuid[:n])) == 1:
            return uuid[:n]
    raise AssertionError(uuid)


def _two_sharing_a_prefix(inventory: Inventory) -> tuple[str, str]:
    uuids = [g.uuid for g in inventory.gpus]
    for a in uuids:
        for b in uuids:
            if a != b and a[4] == b[4]:
                return a, b
    raise AssertionError("topology has no two UUIDs sharing a first hex digit")


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while a[n] == b[n]:
        n += 1
    return a[:n]
