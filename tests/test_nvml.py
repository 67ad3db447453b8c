"""read_inventory, driven end to end through FakeNVML; NVML errors become gpuroute errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from gpuroute import GpurouteError, Inventory, NVMLError
from gpuroute.nvml import NVMLApi, read_inventory
from gpuroute.testing import FakeNVML


def test_read_inventory_reads_every_topology_exactly(any_topology: Inventory) -> None:
    fake = FakeNVML(any_topology)
    assert read_inventory(fake) == any_topology
    assert fake.init_count == 0, "NVML is shut down again"


def test_mig_devices_are_read_with_their_slots(a100: Inventory) -> None:
    inv = read_inventory(FakeNVML(a100))
    gpu = inv.gpus[2]
    assert [
        (m.index, m.profile, m.gpu_instance_id, m.compute_instance_id, m.compute_slices)
        for m in gpu.mig_devices
    ] == [
        (0, "4g.40gb", 1, 0, 4),
        (1, "1c.2g.20gb", 5, 0, 1),
        (2, "1c.2g.20gb", 5, 1, 1),
        (3, "1g.10gb", 13, 0, 1),
    ]
    assert gpu.mig_compute_slices_total == 7


@pytest.mark.parametrize(
    ("break_it", "code", "advice"),
    [
        (FakeNVML.remove_library, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "Install the driver"),
        (FakeNVML.unload_driver, pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "modprobe nvidia"),
        (FakeNVML.deny_permission, pynvml.NVML_ERROR_NO_PERMISSION, "/dev/nvidiactl"),
        (FakeNVML.mismatch_versions, pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "Reboot"),
    ],
)
def test_init_failures_are_actionable(
    h100: Inventory, break_it: Callable[[FakeNVML], None], code: int, advice: str
) -> None:
    fake = FakeNVML(h100)
    break_it(fake)
    with pytest.raises(NVMLError) as err:
        read_inventory(fake)
    assert err.value.code == code
    assert advice in str(err.value)
    assert isinstance(err.value.__cause__, pynvml.NVMLError)


def test_a_lost_gpu_is_named(h100: Inventory) -> None:
    fake = FakeNVML(h100)
    fake.lose_gpu(5)
    with pytest.raises(NVMLError, match="GPU 5: the GPU is lost") as err:
        read_inventory(fake)
    assert "Xid 79" in str(err.value)
    assert fake.init_count == 0
    fake.recover_gpu(5)
    assert read_inventory(fake) == h100


def test_the_real_library_is_used_by_default_and_its_absence_explained() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        with pytest.raises(NVMLError, match="GPUROUTE_INVENTORY"):
            read_inventory()
    else:  # a host with a real driver: the default reader agrees with NVML's own count
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        assert len(read_inventory().gpus) == count


class TestFakeNVMLBehavesLikeNVML:
    def test_calls_need_init(self, h100: Inventory) -> None:
        fake = FakeNVML(h100)
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            fake.nvmlDeviceGetCount()

    def test_energy_counters_advance_with_power(self, h100: Inventory) -> None:
        fake = FakeNVML(h100, power_w={0: 500.0})
        fake.nvmlInit()
        handle = fake.nvmlDeviceGetHandleByIndex(0)
        before = fake.nvmlDeviceGetTotalEnergyConsumption(handle)
        fake.advance(2.0)
        assert fake.nvmlDeviceGetTotalEnergyConsumption(handle) - before == 1_000_000
        fake.set_power(0, 100.0)
        assert fake.nvmlDeviceGetPowerUsage(handle) == 100_000

    def test_processes_hold_memory(self, a100: Inventory) -> None:
        fake = FakeNVML(a100)
        fake.nvmlInit()
        fake.start_process(4242, 1, 2048, mig=0)
        gpu = fake.nvmlDeviceGetHandleByIndex(1)
        mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)
        (proc,) = fake.nvmlDeviceGetComputeRunningProcesses(mig)
        assert (proc.pid, proc.usedGpuMemory, proc.gpuInstanceId) == (4242, 2048 << 20, 2)
        assert fake.nvmlDeviceGetMemoryInfo(mig).used == 2048 << 20
        other = fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 1)
        assert fake.nvmlDeviceGetComputeRunningProcesses(other) == []
        fake.end_process(4242)
        assert fake.nvmlDeviceGetComputeRunningProcesses(gpu) == []

    def test_mig_handles_and_uuid_lookup(self, a100: Inventory) -> None:
        fake = FakeNVML(a100)
        fake.nvmlInit()
        mig = a100.gpus[1].mig_devices[1]
        handle = fake.nvmlDeviceGetHandleByUUID(mig.uuid)
        assert fake.nvmlDeviceIsMigDeviceHandle(handle)
        parent = fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        assert fake.nvmlDeviceGetUUID(parent) == a100.gpus[1].uuid
        with pytest.raises(pynvml.NVMLError_NotSupported):
            fake.nvmlDeviceGetTotalEnergyConsumption(handle)
        with pytest.raises(pynvml.NVMLError_NotFound):
            fake.nvmlDeviceGetHandleByUUID(mig.uuid[:12])

    def test_gpus_without_mig_support(self, workstation: Inventory) -> None:
        fake = FakeNVML(workstation)
        fake.nvmlInit()
        with pytest.raises(pynvml.NVMLError_NotSupported):
            fake.nvmlDeviceGetMigMode(fake.nvmlDeviceGetHandleByIndex(0))


def _positional(fn: Any) -> tuple[int, int]:
    """How many positional arguments ``fn`` needs at least and takes at most."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return sum(p.default is p.empty for p in params), len(params)


def test_pynvml_and_the_fake_provide_the_whole_protocol(h100: Inventory) -> None:
    """mypy checks the fake against NVMLApi here (and gpuroute's calls against NVMLApi
    everywhere); pynvml is untyped, so its side is checked at run time: every member the
    protocol lists exists in both and takes the arguments gpuroute passes."""
    fake: NVMLApi = FakeNVML(h100)
    functions = sorted(name for name in vars(NVMLApi) if name.startswith("nvml"))
    assert len(functions) >= 27
    for provider in (pynvml, fake):
        for name in functions:
            _, wanted = _positional(getattr(NVMLApi, name))
            least, most = _positional(getattr(provider, name))
            assert least <= wanted - 1 <= most, (provider, name)  # minus the protocol's self
        assert issubclass(provider.NVMLError, Exception)
    assert fake.NVMLError is pynvml.NVMLError
    assert set(NVMLApi.__annotations__) == {"NVMLError"}


def test_nvml_error_is_a_gpuroute_error() -> None:
    assert issubclass(NVMLError, GpurouteError)
