"""The caller's context: parent masks bind local launches, never container routing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from gpuroute import CallerContext, ContextError, Inventory, detect_context
from gpuroute.core import resolve


def test_detect_context_reads_the_mask_once(tmp_path: Path) -> None:
    ctx = detect_context(
        {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, root=str(tmp_path)
    )
    assert ctx == CallerContext("2,3", "PCI_BUS_ID", in_container=False)


def test_detect_context_unset_stays_none(tmp_path: Path) -> None:
    assert detect_context({}, root=str(tmp_path)) == CallerContext()


@pytest.mark.parametrize("marker", [".dockerenv", "run/.containerenv"])
def test_detect_context_inside_a_container(tmp_path: Path, marker: str) -> None:
    (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / marker).touch()
    assert detect_context({}, root=str(tmp_path)).in_container


def test_inside_a_container_the_plan_says_uuids_are_what_the_host_understands(
    h100: Inventory,
) -> None:
    p = resolve("0", h100, context=CallerContext(in_container=True))
    assert any("inside a container" in n for n in p.notes)
    assert p.host_env["NVIDIA_VISIBLE_DEVICES"] == h100.gpus[0].uuid


class TestParentMask:
    def test_local_launch_inside_the_mask(self, h100: Inventory) -> None:
        ctx = CallerContext("2,3,5", "PCI_BUS_ID")
        p = resolve("5,2", h100, context=ctx, target="local")
        assert p.local_env["CUDA_VISIBLE_DEVICES"] == f"{h100.gpus[5].uuid},{h100.gpus[2].uuid}"

    def test_local_launch_outside_the_mask_is_refused(self, h100: Inventory) -> None:
        ctx = CallerContext("2,3", "PCI_BUS_ID")
        with pytest.raises(ContextError, match=r"GPU 4 .* outside this process's allocation") as e:
            resolve("2,4", h100, context=ctx, target="local")
        assert "allows 2, 3" in str(e.value)

    def test_container_routing_is_not_bound_by_the_mask(self, h100: Inventory) -> None:
        ctx = CallerContext("2,3", "PCI_BUS_ID")
        p = resolve("4", h100, context=ctx, target="container")
        assert p.host_env["NVIDIA_VISIBLE_DEVICES"] == h100.gpus[4].uuid
        assert "refused" in p.explain()
        with pytest.raises(ContextError):
            p.local_env  # noqa: B018

    def test_uuid_mask(self, h100: Inventory) -> None:
        ctx = CallerContext(f"{h100.gpus[6].uuid[:12]},{h100.gpus[1].uuid}")
        assert resolve("1,6", h100, context=ctx, target="local").devices
        with pytest.raises(ContextError):
            resolve("0", h100, context=ctx, target="local")

    def test_mask_stops_at_the_first_invalid_entry_as_cuda_does(self, h100: Inventory) -> None:
        ctx = CallerContext("1,-1,2", "PCI_BUS_ID")
        assert resolve("1", h100, context=ctx, target="local").devices
        with pytest.raises(ContextError, match="allows 1\\)"):
            resolve("2", h100, context=ctx, target="local")

    def test_repeated_mask_entry_selects_nothing_as_cuda_does(self, h100: Inventory) -> None:
        ctx = CallerContext("1,1", "PCI_BUS_ID")
        with pytest.raises(ContextError, match="allows nothing"):
            resolve("1", h100, context=ctx, target="local")

    def test_integer_mask_on_mixed_models_without_pci_order_is_refused(
        self, workstation: Inventory
    ) -> None:
        ctx = CallerContext("0")
        with pytest.raises(ContextError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
            resolve("0", workstation, context=ctx, target="local")
        assert resolve(
            "0", workstation, context=CallerContext("0", "PCI_BUS_ID"), target="local"
        ).devices

    def test_integer_mask_on_identical_gpus_is_read_as_pci_order(self, h100: Inventory) -> None:
        assert resolve("3", h100, context=CallerContext("3"), target="local").devices

    def test_integer_mask_on_a_host_with_mig_gpus_is_refused(self, a100: Inventory) -> None:
        with pytest.raises(ContextError, match="MIG mode"):
            resolve("0", a100, context=CallerContext("0", "PCI_BUS_ID"), target="local")

    def test_mig_uuid_mask(self, a100: Inventory) -> None:
        mig = a100.gpus[1].mig_devices[2]
        p = resolve("1:2", a100, context=CallerContext(mig.uuid), target="local")
        assert p.local_env["CUDA_VISIBLE_DEVICES"] == mig.uuid


class TestEmptyMaskReservesGPUsForContainers:
    def test_local_gpu_request_fails_with_the_container_way(self, h100: Inventory) -> None:
        with pytest.raises(ContextError) as err:
            resolve("3,1", h100, context=CallerContext(""), target="local")
        message = str(err.value)
        assert "reserves its GPUs for containers" in message
        assert "image=IMAGE" in message
        assert "--gpus 3,1 --image IMAGE" in message

    def test_container_request_is_fine(self, h100: Inventory) -> None:
        p = resolve("3,1", h100, context=CallerContext(""), target="container")
        assert p.container_env["CUDA_VISIBLE_DEVICES"] == "1,0"

    def test_no_gpu_locally_is_fine(self, h100: Inventory) -> None:
        p = resolve("none", h100, context=CallerContext(" "), target="local")
        assert p.local_env["CUDA_VISIBLE_DEVICES"] == ""


def test_plan_with_an_inventory_reads_the_context_once_per_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``gpuroute.plan(spec, inventory)`` uses the context its default host read once, not
    the environment and the file system again at each call; a new mask still counts at once."""
    import gpuroute
    import gpuroute.host
    from gpuroute.testing import topology

    reads: list[object] = []
    real = gpuroute.host.detect_context

    def counted(environ: Mapping[str, str] | None = None, *, root: str = "/") -> CallerContext:
        reads.append(environ)
        return real(environ, root=root)

    monkeypatch.setattr(gpuroute.host, "detect_context", counted)
    inventory = topology("h100-sxm-8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    plans = [gpuroute.plan("3", inventory) for _ in range(3)]
    assert len(reads) <= 1
    assert {p.context.cuda_visible_devices for p in plans} == {"2,3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpuroute.plan("3", inventory).context.cuda_visible_devices == "3"
