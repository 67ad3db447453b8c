"""The energy monitor against FakeNVML, whose counters advance with a clock."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gpuroute import Inventory, plan
from gpuroute.bench.energy import EnergyMonitor, EnergyReading
from gpuroute.errors import BenchError
from gpuroute.testing import FakeNVML


class ManualClock:
    """A clock the test moves; shared by FakeNVML and the monitor."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def watch(
    inventory: Inventory, spec: str, fake: FakeNVML, clock: ManualClock, **kwargs: object
) -> EnergyMonitor:
    devices = plan(spec, inventory).devices
    # A long interval: only the samples at start() and stop() are taken, at the clock's time.
    return EnergyMonitor(devices, nvml=fake, interval_s=3600, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_counter_delta_for_exactly_the_routed_gpus(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, power_w={2: 300.0, 5: 500.0}, clock=clock)
    monitor = watch(h100, "5,2", fake, clock).start()
    clock.t += 10
    reading = monitor.stop()
    energy = reading.energy()
    assert [(g.uuid, g.nvml_index) for g in energy.per_gpu] == [
        (h100.gpus[5].uuid, 5),
        (h100.gpus[2].uuid, 2),
    ]
    assert [g.energy_j for g in energy.per_gpu] == pytest.approx([5000.0, 3000.0])
    assert energy.gpu_energy_j == pytest.approx(8000.0)
    assert energy.avg_gpu_power_w == pytest.approx(800.0)
    assert energy.method == "nvml_total_energy_counter"
    assert energy.per_gpu[0].counter_end_mj - energy.per_gpu[0].counter_start_mj == 5_000_000  # type: ignore[operator]
    assert energy.warnings == []
    assert fake.init_count == 0, "NVML is shut down again"


def test_window_is_interpolated_between_samples(h100: Inventory) -> None:
    clock = ManualClock(0.0)
    fake = FakeNVML(h100, power_w=100.0, clock=clock)
    monitor = watch(h100, "0", fake, clock).start()
    clock.t = 20.0
    energy = monitor.stop().energy(5.0, 15.0, includes=["generate"], excludes=["model_load"])
    assert energy.gpu_energy_j == pytest.approx(1000.0)
    assert energy.window is not None
    assert (energy.window.duration_s, energy.window.includes, energy.window.excludes) == (
        10.0,
        ["generate"],
        ["model_load"],
    )


def test_a_counter_reset_makes_the_energy_null_not_partial(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, clock=clock)
    monitor = EnergyMonitor(plan("1,3", h100).devices, nvml=fake, interval_s=0.01, clock=clock)
    monitor.start()
    clock.t += 5
    fake.reset_energy_counter(3)
    clock.t += 5
    energy = monitor.stop().energy()
    by_index = {g.nvml_index: g for g in energy.per_gpu}
    assert by_index[1].energy_j == pytest.approx(750.0)
    assert by_index[3].energy_j is None
    assert energy.gpu_energy_j is None
    assert f"counter_reset:{h100.gpus[3].uuid}" in energy.warnings


def test_without_a_counter_sampled_power_is_integrated(h100: Inventory) -> None:
    fake = FakeNVML(h100, power_w=200.0, clock=time.time)
    fake.drop_energy_counter(4)
    monitor = EnergyMonitor(plan("4", h100).devices, nvml=fake, interval_s=0.02).start()
    time.sleep(0.3)
    fake.set_power(4, 400.0)
    time.sleep(0.3)
    energy = monitor.stop().energy()
    gpu = energy.per_gpu[0]
    assert energy.method == gpu.method == "nvml_power_integration"
    assert gpu.counter_start_mj is None
    assert gpu.power_samples >= 10
    assert energy.window is not None
    # 200 W then 400 W for about equal halves: the mean power lies between them.
    assert gpu.avg_power_w is not None
    assert 230.0 < gpu.avg_power_w < 370.0


def test_a_window_shorter_than_the_counter_update_is_estimated_and_flagged(
    h100: Inventory,
) -> None:
    clock = ManualClock(100.0)
    fake = FakeNVML(h100, power_w=250.0, clock=clock, energy_update_s=0.1)
    monitor = watch(h100, "0", fake, clock).start()
    clock.t += 0.05  # the counter does not move before the next 100 ms boundary
    energy = monitor.stop().energy()
    gpu = energy.per_gpu[0]
    assert gpu.method == "nvml_power_integration"
    assert gpu.energy_j == pytest.approx(250.0 * 0.05)
    assert f"window_shorter_than_counter_update:{h100.gpus[0].uuid}" in energy.warnings
    assert "window_shorter_than_1s" in energy.warnings


def test_idle_baseline_is_subtracted(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, power_w=60.0, clock=clock)
    monitor = watch(h100, "6", fake, clock, idle_baseline_s=0.05).start()
    fake.set_power(6, 360.0)
    clock.t += 10
    energy = monitor.stop().energy()
    assert energy.per_gpu[0].idle_power_w == pytest.approx(60.0)
    assert energy.gpu_energy_j == pytest.approx(3600.0)
    assert energy.idle_adjusted_gpu_energy_j == pytest.approx(3000.0)


def test_processes_the_run_did_not_start_are_reported(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, clock=clock)
    mine = os.getpid()
    fake.start_process(mine, 2, 1000)
    fake.start_process(4242, 2, 3000)
    fake.start_process(5151, 7, 500)  # on a GPU this run does not use
    monitor = watch(h100, "2", fake, clock, own_pids=lambda: {mine}).start()
    clock.t += 2
    reading = monitor.stop()
    isolation = reading.isolation()
    assert isolation.checked
    assert [(p.pid, p.nvml_index, p.used_mib) for p in isolation.foreign_processes] == [
        (4242, 2, 3000.0)
    ]
    assert "foreign_process_on_gpu:pid=4242" in reading.energy().warnings
    assert [(m.nvml_index, m.peak_used_mib) for m in reading.memory().per_gpu] == [(2, 4000.0)]


def test_a_mig_run_reads_the_parent_gpu_and_says_it_is_shared(a100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(a100, power_w=400.0, clock=clock)
    devices = plan("2:1", a100).devices
    fake.start_process(777, 2, 2048, mig=1)
    monitor = EnergyMonitor(devices, nvml=fake, interval_s=3600, clock=clock).start()
    clock.t += 3
    reading = monitor.stop()
    energy = reading.energy()
    gpu = a100.gpus[2]
    assert [(g.uuid, g.mig_devices) for g in energy.per_gpu] == [(gpu.uuid, [devices[0].uuid])]
    assert energy.per_gpu[0].shared_with_other_slices
    assert energy.gpu_energy_j == pytest.approx(1200.0)
    assert f"mig_shared_counter:{gpu.uuid}" in energy.warnings
    # Memory is the MIG device's own.
    assert [(m.uuid, m.peak_used_mib) for m in reading.memory().per_gpu] == [
        (devices[0].uuid, 2048.0)
    ]


def test_without_nvml_energy_is_null_with_a_reason(h100: Inventory) -> None:
    fake = FakeNVML(h100)
    fake.remove_library()
    reading = EnergyMonitor(plan("0", h100).devices, nvml=fake).start().stop()
    energy = reading.energy()
    assert energy.method == "none"
    assert energy.gpu_energy_j is None
    assert energy.per_gpu == []
    assert energy.unavailable_reason is not None
    assert "NVML" in energy.unavailable_reason
    assert "libnvidia-ml" in energy.unavailable_reason
    assert not reading.isolation().checked


def test_no_routed_gpu_means_no_energy(h100: Inventory) -> None:
    reading = EnergyMonitor(plan("none", h100).devices, nvml=FakeNVML(h100)).start().stop()
    assert reading.energy().unavailable_reason == "no GPU was routed to this run (gpus: none)"


def test_background_sampling_follows_real_time(h100: Inventory) -> None:
    fake = FakeNVML(h100, power_w=100.0, clock=time.time, energy_update_s=0.02)
    monitor = EnergyMonitor(plan("0,1", h100).devices, nvml=fake, interval_s=0.02).start()
    time.sleep(0.5)
    reading = monitor.stop()
    energy = reading.energy()
    assert energy.window is not None
    assert all(g.power_samples >= 10 for g in energy.per_gpu)
    assert energy.gpu_energy_j == pytest.approx(2 * 100.0 * energy.window.duration_s, rel=0.1)
    assert energy.sampler_cpu_s is not None
    assert energy.sampler_cpu_s > 0.0, "the sampler's own CPU time is measured"


def test_a_gpu_lost_mid_window_has_null_energy_saying_gpu_lost(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, power_w=75.0, clock=clock)
    monitor = watch(h100, "1,3", fake, clock).start()
    clock.t += 5
    fake.lose_gpu(3)
    clock.t += 5
    energy = monitor.stop().energy()
    by_index = {g.nvml_index: g for g in energy.per_gpu}
    assert by_index[1].energy_j == pytest.approx(750.0)
    lost = by_index[3]
    assert (lost.energy_j, lost.avg_power_w, lost.unavailable_reason) == (None, None, "gpu_lost")
    assert energy.gpu_energy_j is None, "a total without one GPU is not a total"
    uuid = h100.gpus[3].uuid
    assert f"gpu_lost:{uuid}" in energy.warnings
    assert f"window_shorter_than_counter_update:{uuid}" not in energy.warnings


def test_a_gpu_lost_after_its_last_sample_in_the_window_keeps_the_window(
    h100: Inventory,
) -> None:
    clock = ManualClock(0.0)
    fake = FakeNVML(h100, power_w=100.0, clock=clock)
    monitor = EnergyMonitor(plan("2", h100).devices, nvml=fake, interval_s=3600, clock=clock)
    monitor.start()
    clock.t = 10.0
    monitor._sample()  # a sample at t=10, as the sampler thread takes one
    clock.t = 20.0
    fake.lose_gpu(2)
    reading = monitor.stop()
    inside = reading.energy(0.0, 10.0)
    assert inside.per_gpu[0].energy_j == pytest.approx(1000.0)
    after = reading.energy(0.0, 15.0)
    assert after.per_gpu[0].energy_j is None
    assert after.per_gpu[0].unavailable_reason == "gpu_lost"


def _run_two(fakes: list[FakeNVML], inventory: Inventory, seconds: float) -> list[EnergyReading]:
    monitors = [
        EnergyMonitor(plan("0", inventory).devices, nvml=f, interval_s=0.02).start() for f in fakes
    ]
    time.sleep(seconds)
    return [m.stop() for m in monitors]


def test_energy_carries_its_uncertainty_from_the_measured_counter_update(
    h100: Inventory,
) -> None:
    """A coarse counter (updated every 0.5 s) is measured from the samples, and every figure
    comes with an uncertainty that covers its true error; one above 2 % is warned of. A fine
    counter over a long window is within 2 % and says nothing."""
    coarse = FakeNVML(h100, power_w=300.0, clock=time.time, energy_update_s=0.5)
    fine = FakeNVML(h100, power_w=300.0, clock=time.time, energy_update_s=0.005)
    coarse_reading, fine_reading = _run_two([coarse, fine], h100, 2.6)
    uuid = h100.gpus[0].uuid
    first = coarse_reading.first_sample_s
    assert first is not None
    warned = []
    # The 0.3 s windows together span 0.8 s: at least one holds a counter update.
    for start, length in [(0.4, 0.3), (0.65, 0.3), (0.9, 0.3), (0.45, 1.0), (0.7, 1.0)]:
        energy = coarse_reading.energy(first + start, first + start + length)
        gpu = energy.per_gpu[0]
        assert gpu.counter_update_s == pytest.approx(0.5, abs=0.06)
        assert gpu.energy_j is not None
        assert gpu.energy_uncertainty_j is not None
        truth = 300.0 * length
        # (1 mJ: the float rounding of unix times, integrating a steady power)
        assert abs(gpu.energy_j - truth) <= gpu.energy_uncertainty_j + 1e-3, (start, length)
        assert energy.gpu_energy_uncertainty_j == pytest.approx(gpu.energy_uncertainty_j)
        if gpu.method == "nvml_total_energy_counter":
            assert gpu.energy_uncertainty_j > 0.02 * gpu.energy_j
            assert f"energy_uncertainty_above_2pct:{uuid}" in energy.warnings
            warned.append(length)
        else:  # the counter did not move: sampled power, which was steady
            assert f"window_shorter_than_counter_update:{uuid}" in energy.warnings
    assert 0.3 in warned
    assert 1.0 in warned
    energy = fine_reading.energy()
    gpu = energy.per_gpu[0]
    assert gpu.counter_update_s is not None
    assert gpu.counter_update_s < 0.05
    assert gpu.energy_j is not None
    assert gpu.energy_uncertainty_j is not None
    assert 0 < gpu.energy_uncertainty_j <= 0.02 * gpu.energy_j
    assert abs(gpu.energy_j - 300.0 * energy.window.duration_s) <= gpu.energy_uncertainty_j  # type: ignore[union-attr]
    assert not any(w.startswith("energy_uncertainty_above_2pct") for w in energy.warnings)


def test_results_without_uncertainty_fields_are_still_read() -> None:
    from gpuroute.bench.result import Energy

    old = {
        "method": "nvml_total_energy_counter",
        "per_gpu": [
            {
                "uuid": "GPU-0",
                "nvml_index": 0,
                "name": "x",
                "method": "nvml_total_energy_counter",
                "energy_j": 1.0,
                "avg_power_w": 1.0,
            }
        ],
        "gpu_energy_j": 1.0,
    }
    energy = Energy.model_validate(old)
    assert energy.gpu_energy_uncertainty_j is None
    assert energy.per_gpu[0].energy_uncertainty_j is None


# -- named windows -------------------------------------------------------------------------


def windows(inventory: Inventory, spec: str, fake: FakeNVML, clock: ManualClock) -> EnergyMonitor:
    """A started monitor with no sampler thread: windows read the counters themselves."""
    devices = plan(spec, inventory).devices
    return EnergyMonitor(devices, nvml=fake, clock=clock, sampler=False).start()


def test_a_window_is_the_counters_difference_with_no_thread(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, power_w={2: 300.0, 5: 500.0}, clock=clock)
    before = {t.name for t in threading.enumerate()}
    monitor = windows(h100, "5,2", fake, clock)
    monitor.begin_window("generate")
    clock.t += 10
    window = monitor.end_window("generate")
    assert "gpuroute-energy" not in {t.name for t in threading.enumerate()} - before
    assert [(g.uuid, g.nvml_index, g.method) for g in window.per_gpu] == [
        (h100.gpus[5].uuid, 5, "counter"),
        (h100.gpus[2].uuid, 2, "counter"),
    ]
    assert [g.energy_j for g in window.per_gpu] == pytest.approx([5000.0, 3000.0])
    assert window.energy_j == pytest.approx(8000.0)
    assert window.duration_s == pytest.approx(10.0)
    # No sampler has seen the counter change: its update period, so the uncertainty, is unknown.
    assert window.uncertainty_j is None
    assert window.warnings == []
    energy = window.to_energy({h100.gpus[5].uuid: h100.gpus[5].name})
    assert energy.method == "nvml_total_energy_counter"
    assert energy.gpu_energy_j == pytest.approx(8000.0)
    assert energy.avg_gpu_power_w == pytest.approx(800.0)
    assert energy.window is not None
    assert energy.window.includes == ["generate"]
    assert energy.per_gpu[0].name == h100.gpus[5].name
    monitor.stop()
    assert fake.init_count == 0


def test_a_window_carries_the_uncertainty_of_the_measured_update_period(
    h100: Inventory,
) -> None:
    clock = ManualClock(0.0)
    fake = FakeNVML(h100, power_w=100.0, clock=clock, energy_update_s=0.5)
    monitor = windows(h100, "0", fake, clock)
    for _ in range(6):  # the sampler's steps, every 0.25 s: the counter moves every 0.5 s
        clock.t += 0.25
        monitor._sample()
    monitor.begin_window("w")
    clock.t += 20.0
    window = monitor.end_window("w")
    (gpu,) = window.per_gpu
    assert gpu.energy_j == pytest.approx(2000.0)
    assert gpu.uncertainty_j == pytest.approx(0.5 * 100.0)  # period x power
    assert window.warnings == ["energy_uncertainty_above_2pct:" + h100.gpus[0].uuid]
    monitor.begin_window("long")
    clock.t += 100.0
    assert monitor.end_window("long").warnings == []  # 50 J of 10,000 J
    monitor.stop()


def test_a_window_never_hides_a_reset_a_lost_gpu_or_a_still_counter(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(
        h100, power_w=100.0, clock=clock, energy_update_s=1.0, energy_start_mj=5_000_000
    )
    fake.drop_energy_counter(3)
    monitor = windows(h100, "0,1,2,3", fake, clock)
    monitor.begin_window("w")
    clock.t += 10
    fake.reset_energy_counter(0)
    fake.lose_gpu(1)
    window = monitor.end_window("w")
    by_index = {g.nvml_index: g for g in window.per_gpu}
    assert (by_index[0].energy_j, by_index[0].unavailable_reason) == (None, "counter_reset")
    assert (by_index[1].energy_j, by_index[1].unavailable_reason) == (None, "gpu_lost")
    assert by_index[2].energy_j == pytest.approx(1000.0)
    assert by_index[3].method == "power"  # no counter: the power at both ends
    assert by_index[3].energy_j == pytest.approx(1000.0)
    assert window.energy_j is None, "never a partial sum"
    assert window.uncertainty_j is None
    assert f"counter_reset:{h100.gpus[0].uuid}" in window.warnings
    assert f"gpu_lost:{h100.gpus[1].uuid}" in window.warnings
    assert window.to_energy().gpu_energy_j is None
    monitor.begin_window("short")
    clock.t += 0.4  # within one update of the counter
    short = monitor.end_window("short")
    assert short.per_gpu[2].unavailable_reason == "window_shorter_than_counter_update"
    assert "window_shorter_than_1s" in short.warnings
    monitor.stop()


def test_a_mig_window_says_the_counter_is_shared(a100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(a100, clock=clock)
    monitor = windows(a100, "1:0", fake, clock)
    monitor.begin_window("w")
    clock.t += 2
    window = monitor.end_window("w")
    assert window.warnings == [f"mig_shared_counter:{a100.gpus[1].uuid}"]
    assert window.per_gpu[0].uuid == a100.gpus[1].uuid
    monitor.stop()


def test_window_misuse_names_the_window_and_the_fix(h100: Inventory) -> None:
    clock = ManualClock()
    fake = FakeNVML(h100, clock=clock)
    idle = EnergyMonitor(plan("0", h100).devices, nvml=fake, clock=clock, sampler=False)
    with pytest.raises(BenchError, match=r"begin_window\('w'\).*call start\(\) first"):
        idle.begin_window("w")
    monitor = idle.start()
    monitor.begin_window("a")
    with pytest.raises(BenchError, match=r"end_window\('b'\): no window .*open: 'a'.*begin_window"):
        monitor.end_window("b")
    monitor.end_window("a")
    with pytest.raises(BenchError, match=r"end_window\('a'\)"):
        monitor.end_window("a")  # each window ends once
    monitor.stop()
