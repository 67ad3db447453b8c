"""The runners end to end: the transformers runner for real on the CPU (a tiny random model),
and vLLM and TensorRT-LLM through their stand-ins on the simulated GPU host's engine, with
energy read from FakeNVML on the routed GPUs."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest

from gpuroute import Inventory, MultipleMIGError, plan
from gpuroute.bench.result import Result
from gpuroute.bench.runners.common import RunOptions, check_parallelism
from gpuroute.bench.runners.transformers import run_transformers
from gpuroute.bench.runners.trtllm import run_trtllm
from gpuroute.bench.runners.vllm import run_vllm
from gpuroute.errors import BenchConfigError
from gpuroute.leases import LeaseDir
from gpuroute.testing import FakeNVML
from gpuroute.testing.engine import IMAGE, IMAGE_TRTLLM, IMAGE_VLLM, SimulatedGPUHost

STAND_INS = Path(__file__).resolve().parent.parent / "gpuroute" / "testing" / "image"
NO_NET = {"network_mode": "none"}
# The private engine may not lift the memlock limit where it runs unprivileged; the stack
# limit still applies.
TRT_PRIVATE_ENGINE = {
    "network_mode": "none",
    "ulimits": [{"Name": "stack", "Soft": 67108864, "Hard": 67108864}],
}


def simulated(inventory: Inventory, name: str = "h100-sxm-8", **kwargs: object) -> RunOptions:
    # Counters that change continuously: the expected energy is then exactly power x window,
    # whatever the window's length (quantised counters have their own tests).
    fake = FakeNVML(inventory, clock=time.time, power_w=100.0)
    return RunOptions(
        inventory=inventory,
        nvml=fake,
        simulated_host=name,
        energy_interval_s=0.02,
        **kwargs,  # type: ignore[arg-type]
    )


def seen_in_logs(result: Result) -> list[str]:
    """The UUIDs the stand-in tool listed as its CUDA devices, in CUDA order."""
    return re.findall(r"^visible cuda:\d+ (\S+)$", result.native_log_tail or "", re.M)


# -- transformers ------------------------------------------------------------------------


def test_transformers_on_the_simulated_host_measures_exactly_the_routed_gpus(
    h100: Inventory,
) -> None:
    result = run_transformers(
        simulated(h100, gpus="5,2"), input_len=16, output_len=8, num_prompts=4, batch_size=2
    )
    assert result.status == "ok", result.error
    assert result.tokens.output_total == 32
    assert result.tokens.input_total == 64
    assert [g.uuid for g in result.energy.per_gpu] == [h100.gpus[5].uuid, h100.gpus[2].uuid]
    assert result.energy.method == "nvml_total_energy_counter"
    window = result.energy.window
    assert window is not None
    assert window.includes == ["generate"]
    assert window.excludes == ["model_load", "warmup"]
    total = result.energy.gpu_energy_j
    assert total is not None
    assert total == pytest.approx(2 * 100.0 * window.duration_s, rel=0.2)
    assert result.energy.j_per_output_token == pytest.approx(total / 32)
    # The worker ran with exactly the routed GPUs, by UUID, in the requested order.
    assert result.routing.cuda_visible_devices == f"{h100.gpus[5].uuid},{h100.gpus[2].uuid}"
    assert result.environment.simulated_host == "h100-sxm-8"
    latency = result.latency
    assert latency.ttft_ms is not None
    assert latency.ttft_ms.count == 4
    assert latency.itl_ms is not None
    assert latency.itl_ms.count == 4 * 7  # every gap between 8 tokens, per request
    assert latency.batch_latency_s is not None
    assert latency.batch_latency_s.count == 2
    assert result.throughput.output_tok_per_s == pytest.approx(32 / window.duration_s, rel=0.01)
    Result.model_validate_json(result.to_json())  # what is written reads back


def test_transformers_in_process_on_a_cpu_has_null_energy_with_a_reason() -> None:
    result = run_transformers(
        RunOptions(execution="inprocess"), input_len=8, output_len=4, num_prompts=3
    )
    assert result.status == "ok", result.error
    assert result.tokens.output_total == 12
    assert result.environment.device == "cpu"
    energy = result.energy
    assert (energy.gpu_energy_j, energy.j_per_output_token, energy.per_gpu) == (None, None, [])
    assert energy.unavailable_reason == "no GPU was routed to this run (gpus: none)"
    assert result.native_report["format"] == "gpuroute.bench.transformers-worker/1"


def test_a_failing_transformers_run_is_a_failed_result_with_what_was_measured(
    h100: Inventory, tmp_path: Path
) -> None:
    result = run_transformers(
        simulated(h100, gpus="1", workdir=tmp_path),
        model=str(tmp_path / "no-such-model"),
        input_len=8,
        output_len=4,
        num_prompts=2,
    )
    assert result.status == "failed"
    assert result.error is not None
    assert "exited with status 1" in result.error
    assert "no-such-model" in result.error
    assert result.tokens.output_total is None  # null, not zero
    # The energy of the whole (failed) run is still reported, for the routed GPU.
    assert [g.nvml_index for g in result.energy.per_gpu] == [1]
    assert result.energy.window is not None
    assert result.energy.window.includes == ["whole_run"]


def test_bad_workloads_are_refused_with_the_option_named() -> None:
    with pytest.raises(BenchConfigError, match="--output-len must be at least 1, not 0"):
        run_transformers(RunOptions(), input_len=8, output_len=0, num_prompts=1)


# -- parallelism checks ---------------------------------------------------------------------


def test_tensor_parallel_size_must_match_the_routed_gpus(h100: Inventory) -> None:
    with pytest.raises(BenchConfigError, match=r"tensor parallel size 4 .* routed GPUs, 2"):
        run_vllm(
            RunOptions(gpus="0,1", inventory=h100, execution="subprocess"),
            model="m",
            input_len=8,
            output_len=8,
            tensor_parallel_size=4,
        )
    with pytest.raises(BenchConfigError, match="needs at least one GPU"):
        run_trtllm(
            RunOptions(gpus="none", inventory=h100, execution="subprocess"),
            model="m",
            input_len=8,
            output_len=8,
        )


def test_parallelism_across_mig_devices_is_refused(a100: Inventory) -> None:
    with pytest.raises(MultipleMIGError):
        run_vllm(RunOptions(gpus="1:0,2:1", inventory=a100), model="m", input_len=8, output_len=8)
    opted_in = plan("1:0,2:1", a100, allow_multiple_mig=True)
    with pytest.raises(BenchConfigError, match="parallelism across MIG devices"):
        check_parallelism(opted_in, "vLLM", 2)


# -- vLLM and TensorRT-LLM in the simulated images --------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("mode", ["throughput", "latency", "serve"])
def test_vllm_in_its_image_gets_the_routing_and_tp_size(
    engine: SimulatedGPUHost, h100: Inventory, mode: str
) -> None:
    result = run_vllm(
        simulated(
            h100,
            gpus="6,3",
            execution="container",
            image=IMAGE_VLLM,
            docker_kwargs=NO_NET,
            timeout_s=300,
        ),
        mode=mode,
        model="org/model",
        input_len=16,
        output_len=8,
        num_prompts=10,
        batch_size=4,
        num_iters=5,
    )
    assert result.status == "ok", result.error
    # The image's own entrypoint (vllm serve) was replaced: the benchmark ran.
    assert result.runner.entrypoint == ["vllm"]
    assert seen_in_logs(result) == [h100.gpus[6].uuid, h100.gpus[3].uuid]
    assert "tensor_parallel_size=2 pipeline_parallel_size=1 distributed_executor_backend=mp" in (
        result.native_log_tail or ""
    )
    assert result.routing.tensor_parallel_size == 2
    assert result.routing.cuda_visible_devices == "1,0"  # renumbered ordinals, never UUIDs
    assert result.routing.nvidia_visible_devices == f"{h100.gpus[6].uuid},{h100.gpus[3].uuid}"
    assert [g.nvml_index for g in result.energy.per_gpu] == [6, 3]
    assert result.energy.window is not None
    assert result.energy.window.excludes == ["model_load", "warmup"]
    assert result.energy.window.duration_s == pytest.approx(result.timing.duration_s, abs=0.05)
    assert result.energy.gpu_energy_j == pytest.approx(
        2 * 100.0 * result.energy.window.duration_s, rel=0.2
    )
    expected_output = {"throughput": 80, "latency": 5 * 4 * 8, "serve": 80}[mode]
    assert result.tokens.output_total == expected_output
    assert result.throughput.output_tok_per_s is not None
    assert result.throughput.output_tok_per_s > 0
    assert isinstance(result.native_report, dict)


@pytest.mark.engine
@pytest.mark.parametrize("mode", ["throughput", "latency"])
def test_trtllm_in_its_image_gets_the_routing_and_tp_size(
    engine: SimulatedGPUHost, h100: Inventory, mode: str
) -> None:
    result = run_trtllm(
        simulated(
            h100,
            gpus="2,0,7,5",
            execution="container",
            image=IMAGE_TRTLLM,
            docker_kwargs=TRT_PRIVATE_ENGINE,
        ),
        mode=mode,
        model="org/model",
        input_len=16,
        output_len=8,
        num_requests=12,
    )
    assert result.status == "ok", result.error
    assert result.runner.entrypoint == ["trtllm-bench"]
    assert seen_in_logs(result) == [h100.gpus[i].uuid for i in (2, 0, 7, 5)]
    assert "tp_size=4 pp_size=1 world_size=4" in (result.native_log_tail or "")
    assert result.routing.tensor_parallel_size == 4
    assert result.tokens.output_total == 12 * 8
    assert result.tokens.input_total == 12 * 16
    assert result.latency.percentile_method == "nearest_rank"
    assert (result.latency.ttft_ms is not None) == (mode == "latency")
    assert sorted(g.nvml_index for g in result.energy.per_gpu) == [0, 2, 5, 7]
    assert result.native_report["world_info"]["tp_size"] == 4


@pytest.mark.engine
def test_a_kept_work_directory_gets_its_own_mode_back_after_a_container_run(
    engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
) -> None:
    """The container may write into the work directory while it runs (0777, its user may not
    be root); the directory kept for the user was left world-writable."""
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o700)
    result = run_trtllm(
        simulated(
            h100,
            gpus="1",
            execution="container",
            image=IMAGE_TRTLLM,
            docker_kwargs=TRT_PRIVATE_ENGINE,
            workdir=kept,
        ),
        model="org/model",
        input_len=16,
        output_len=8,
        num_requests=4,
    )
    assert result.status == "ok", result.error
    assert result.tokens.output_total == 4 * 8  # read from the report the container wrote
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700


@pytest.mark.engine
def test_a_foreign_process_on_a_routed_gpu_is_reported(
    engine: SimulatedGPUHost, h100: Inventory
) -> None:
    options = simulated(
        h100, gpus="4", execution="container", image=IMAGE_VLLM, docker_kwargs=NO_NET
    )
    assert isinstance(options.nvml, FakeNVML)
    options.nvml.start_process(99999, 4, 2048)
    result = run_vllm(options, model="m", input_len=8, output_len=8, num_prompts=4)
    assert result.status == "ok", result.error
    assert [p.pid for p in result.isolation.foreign_processes] == [99999]
    assert "foreign_process_on_gpu:pid=99999" in result.energy.warnings


def test_vllm_locally_gets_nvml_indices_not_uuids(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    result = run_vllm(
        simulated(h100, gpus="6,3", execution="subprocess", workdir=tmp_path),
        model="m",
        input_len=8,
        output_len=4,
        num_prompts=6,
    )
    assert result.status == "ok", result.error
    assert result.routing.cuda_visible_devices == "6,3"
    assert result.routing.cuda_device_order == "PCI_BUS_ID"
    assert result.runner.argv[:3] == ["vllm", "bench", "throughput"]
    assert result.tokens.output_total == 24
    # The native report is kept, verbatim, where the work directory was.
    kept = json.loads((tmp_path / "vllm-throughput.json").read_text())
    assert kept == result.native_report


def test_a_leased_run_holds_its_gpus_and_gives_them_back(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    leases = tmp_path / "leases"
    leases.mkdir(mode=0o1777)
    held_while_running: list[set[str]] = []

    def clock() -> float:  # read by the energy sampler, while the benchmark runs
        held_while_running.append(LeaseDir(leases).held())
        return time.time()

    options = simulated(h100, gpus="any:2", execution="subprocess", lease=True, lease_dir=leases)
    assert isinstance(options.nvml, FakeNVML)
    options.nvml.clock = clock
    result = run_trtllm(options, model="m", input_len=8, output_len=4, num_requests=3)
    assert result.status == "ok", result.error
    assert result.routing.lease_id is not None
    assert len(result.routing.devices) == 2
    assert result.routing.tensor_parallel_size == 2
    routed = {d.uuid for d in result.routing.devices}
    assert len(held_while_running) > 5
    assert all(held == routed for held in held_while_running), "held for the whole run"
    assert LeaseDir(leases).read()[0] == {}  # released


def python_in_the_test_image(h100: Inventory, **docker_kwargs: object) -> RunOptions:
    """Any image with python, torch and transformers will do: here the test image, with this
    machine's interpreter and libraries mounted read-only (the worker is copied in)."""
    mounts = {
        path: {"bind": path, "mode": "ro"}
        for path in {sys.base_prefix, sys.prefix, "/usr", "/lib", "/lib64"}
        if os.path.exists(path)
    }
    return simulated(
        h100,
        gpus="7,2",
        execution="container",
        image=IMAGE,
        docker_kwargs={**NO_NET, "volumes": mounts, **docker_kwargs},
        env={"HOME": "/tmp"},
    )


@pytest.mark.engine
def test_transformers_in_a_container_sees_its_gpus_renumbered(
    engine: SimulatedGPUHost, h100: Inventory
) -> None:
    result = run_transformers(
        python_in_the_test_image(h100),
        python=sys.executable,
        input_len=8,
        output_len=4,
        num_prompts=2,
    )
    assert result.status == "ok", result.error
    assert result.tokens.output_total == 8
    assert result.routing.cuda_visible_devices == "1,0"  # as the worker saw it, inside
    assert result.routing.nvidia_visible_devices == f"{h100.gpus[7].uuid},{h100.gpus[2].uuid}"
    assert [g.nvml_index for g in result.energy.per_gpu] == [7, 2]
    assert result.runner.argv[1] == "/gpuroute-bench/transformers_worker.py"


def test_a_server_that_dies_fails_the_run_at_once_with_its_output(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    result = run_vllm(
        simulated(h100, gpus="0", execution="subprocess", timeout_s=120),
        mode="serve",
        model="missing/model",
        input_len=8,
        output_len=4,
    )
    assert time.monotonic() - started < 30, "no wait for a server that is gone"
    assert result.status == "failed"
    assert "vllm server exited with status 1 before serving" in (result.error or "")
    assert "missing/model is not a local folder" in (result.error or "")


@pytest.mark.engine
def test_a_run_that_sees_other_gpus_than_planned_fails(
    engine: SimulatedGPUHost, h100: Inventory
) -> None:
    """An entrypoint that rewrites CUDA_VISIBLE_DEVICES, as some images' scripts do."""
    result = run_transformers(
        python_in_the_test_image(h100, entrypoint=["env", "CUDA_VISIBLE_DEVICES=0"]),
        python=sys.executable,
        input_len=8,
        output_len=4,
        num_prompts=2,
    )
    assert result.status == "failed"
    assert "saw CUDA_VISIBLE_DEVICES='0', not the plan's '1,0'" in (result.error or "")


def test_a_stale_report_in_a_reused_directory_is_never_read(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    stale = {"elapsed_time": 2.0, "num_requests": 9, "total_num_tokens": 90,
             "requests_per_second": 4.5, "tokens_per_second": 45.0}  # fmt: skip
    (tmp_path / "vllm-throughput.json").write_text(json.dumps(stale))
    result = run_vllm(
        simulated(h100, gpus="0", execution="subprocess", workdir=tmp_path),
        model="missing/model",
        input_len=8,
        output_len=4,
    )
    assert result.status == "failed"
    assert "is not a local folder" in (result.error or "")
    assert result.native_report is None
    assert (result.tokens.output_total, result.throughput.output_tok_per_s) == (None, None)
    assert result.energy.j_per_output_token is None


def test_gpus_routed_to_a_torch_without_cuda_fail_rather_than_run_on_the_cpu(
    h100: Inventory,
) -> None:
    fake = FakeNVML(h100, clock=time.time)
    result = run_transformers(
        RunOptions(gpus="0", inventory=h100, nvml=fake), input_len=8, output_len=4, num_prompts=1
    )
    assert result.status == "failed"
    assert "sees no CUDA device" in (result.error or "")
    assert "--device cpu" in (result.error or "")
    knowingly = run_transformers(
        RunOptions(gpus="0", inventory=h100, nvml=fake),
        device="cpu",
        input_len=8,
        output_len=4,
        num_prompts=1,
    )
    assert knowingly.status == "ok", knowingly.error
    assert knowingly.environment.device == "cpu"


def test_an_in_process_run_records_a_crash_and_puts_the_environment_back(
    h100: Inventory,
) -> None:
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    result = run_transformers(
        simulated(h100, gpus="4", execution="inprocess"),
        dtype="bfloat17",
        input_len=8,
        output_len=4,
        num_prompts=1,
    )
    assert result.status == "failed"
    assert (result.error or "").startswith("AttributeError: ")
    assert "bfloat17" in (result.error or "")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert os.environ.get("HF_HUB_OFFLINE") == offline_before
    ok = run_transformers(
        simulated(h100, gpus="4", execution="inprocess"), input_len=8, output_len=4, num_prompts=1
    )
    assert ok.status == "ok", ok.error
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
