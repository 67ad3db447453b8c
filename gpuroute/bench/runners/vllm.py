"""The vLLM runner: ``vllm bench throughput``, ``latency`` and ``serve`` on the routed GPUs.

In the vLLM image (``execution="container"``) or with a local ``vllm``. The tensor-parallel
size is the number of routed GPUs (over the pipeline-parallel size), checked against the
plan: parallelism across MIG devices is refused. The executor is always ``mp`` (Ray
rewrites ``CUDA_VISIBLE_DEVICES`` on one node), and the container's entrypoint is always set
(``vllm``), because the image's own changed between versions. Inside a container vLLM gets
the renumbered integer ordinals; a local vLLM gets NVML indices with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, since vLLM releases before 0.24 cannot parse UUIDs.

``serve`` starts ``vllm serve`` and runs ``vllm bench serve`` next to it (in the same
container, so it reaches the server on the loopback), then stops the server; the energy
window is the client's timed run, excluding the server's start-up.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from gpuroute.bench.parsers import parse_vllm_latency, parse_vllm_serve, parse_vllm_throughput
from gpuroute.bench.result import Result, Workload
from gpuroute.bench.runners.common import (
    Collected,
    Execution,
    Job,
    RunOptions,
    read_report,
    require_positive,
)
from gpuroute.bench.runners.registry import Runner, add_parallel_options
from gpuroute.errors import BenchConfigError

__all__ = ["DEFAULT_IMAGE", "RUNNER", "run_vllm", "vllm_job"]

DEFAULT_IMAGE = "vllm/vllm-openai:latest"
Mode = Literal["throughput", "latency", "serve"]
_REPORT = {"throughput": "vllm-throughput.json", "latency": "vllm-latency.json"}
_SERVE_REPORT = "vllm-serve.json"


def vllm_job(
    *,
    mode: Mode = "throughput",
    model: str,
    input_len: int,
    output_len: int,
    num_prompts: int = 1000,
    batch_size: int = 8,
    num_iters: int = 30,
    num_iters_warmup: int = 10,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int = 1,
    load_format: str | None = None,
    dtype: str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    seed: int = 0,
    request_rate: float | None = None,
    max_concurrency: int | None = None,
    port: int = 8000,
    extra_args: Sequence[str] = (),
    execution: Execution = "container",
    executable: str = "vllm",
) -> Job:
    """The job for ``execute``. ``tensor_parallel_size`` defaults to the number of routed
    GPUs divided by ``pipeline_parallel_size``."""
    if mode not in ("throughput", "latency", "serve"):
        raise BenchConfigError(f"vLLM mode {mode!r} is not one of: throughput, latency, serve")
    require_positive(
        input_len=input_len,
        output_len=output_len,
        num_prompts=num_prompts,
        batch_size=batch_size,
        num_iters=num_iters,
    )
    if "--distributed-executor-backend" in extra_args:
        raise BenchConfigError(
            "the vLLM runner always uses --distributed-executor-backend mp (Ray renumbers "
            "GPUs on one node); remove it from the extra arguments"
        )
    prefix = [] if execution == "container" else [executable]

    def engine_args() -> list[str]:
        args = [
            "--tensor-parallel-size",
            str(job.tensor_parallel_size),
            "--distributed-executor-backend",
            "mp",
            "--seed",
            str(seed),
        ]
        if pipeline_parallel_size != 1:
            args += ["--pipeline-parallel-size", str(pipeline_parallel_size)]
        for flag, value in (
            ("--load-format", load_format),
            ("--dtype", dtype),
            ("--max-model-len", max_model_len),
            ("--gpu-memory-utilization", gpu_memory_utilization),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args + list(extra_args)

    def command(where: str) -> list[str]:
        if mode == "serve":
            return [*prefix, "serve", model, "--port", str(port), *engine_args()]
        out = ["--output-json", f"{where}/{_REPORT[mode]}"]
        if mode == "throughput":
            workload = [
                "--dataset-name",
                "random",
                "--input-len",
                str(input_len),
                "--output-len",
                str(output_len),
                "--num-prompts",
                str(num_prompts),
            ]
        else:
            workload = [
                "--input-len",
                str(input_len),
                "--output-len",
                str(output_len),
                "--batch-size",
                str(batch_size),
                "--num-iters-warmup",
                str(num_iters_warmup),
                "--num-iters",
                str(num_iters),
            ]
        return [*prefix, "bench", mode, "--model", model, *workload, *engine_args(), *out]

    def client_command(where: str) -> list[str]:
        argv = [
            executable,
            "bench",
            "serve",
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--model",
            model,
            "--dataset-name",
            "random",
            "--random-input-len",
            str(input_len),
            "--random-output-len",
            str(output_len),
            "--num-prompts",
            str(num_prompts),
            "--ignore-eos",
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--metric-percentiles",
            "50,90,95,99",
            "--ready-check-timeout-sec",
            "1200",
            "--save-result",
            "--result-dir",
            where,
            "--result-filename",
            _SERVE_REPORT,
        ]
        if request_rate is not None:
            argv += ["--request-rate", str(request_rate)]
        if max_concurrency is not None:
            argv += ["--max-concurrency", str(max_concurrency)]
        return argv

    def collect(workdir: Path, logs: str) -> Collected:
        tool = f"vllm bench {mode}"
        if mode == "serve":
            return read_report(workdir / _SERVE_REPORT, tool, parse_vllm_serve)
        lengths = {"input_len": input_len, "output_len": output_len}
        if mode == "throughput":
            return read_report(
                workdir / _REPORT[mode], tool, parse_vllm_throughput, stdout=logs, **lengths
            )
        return read_report(
            workdir / _REPORT[mode], tool, parse_vllm_latency, batch_size=batch_size, **lengths
        )

    job = Job(
        runner="vllm",
        mode=mode,
        tool=f"vllm bench {mode}",
        workload=Workload(
            model=model,
            load_format=load_format,
            dtype=dtype,
            dataset="random",
            num_requests=num_prompts if mode != "latency" else None,
            input_len=input_len,
            output_len=output_len,
            batch_size=batch_size if mode == "latency" else None,
            ignore_eos=True,
            request_rate=request_rate,
            max_concurrency=max_concurrency,
            seed=seed,
            warmup_iters=num_iters_warmup if mode == "latency" else None,
            extra={"num_iters": num_iters} if mode == "latency" else {},
        ),
        command=command,
        collect=collect,
        entrypoint=["vllm"],
        container_kwargs={"ipc_mode": "host"},
        client_command=client_command if mode == "serve" else None,
        default_image=DEFAULT_IMAGE,
        parallel_tool="vLLM",
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        distributed_executor_backend="mp",
        local_ids="index",
        outputs=(*_REPORT.values(), _SERVE_REPORT),
    )
    return job


def run_vllm(options: RunOptions | None = None, **workload: Any) -> Result:
    """Run a vLLM benchmark; ``workload`` takes ``vllm_job``'s arguments. In a container
    the image defaults to ``DEFAULT_IMAGE``."""
    return RUNNER.run(options, **workload)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("throughput", "latency", "serve"), help="default throughput")
    p.add_argument("--model", required=True)
    p.add_argument("--num-prompts", type=int, help="default 1000")
    p.add_argument("--batch-size", type=int, help="latency mode (default 8)")
    p.add_argument("--num-iters", type=int, help="latency mode (default 30)")
    p.add_argument("--num-iters-warmup", type=int, help="latency mode (default 10)")
    p.add_argument("--load-format")
    p.add_argument("--dtype")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--request-rate", type=float, help="serve mode")
    p.add_argument("--max-concurrency", type=int, help="serve mode")
    p.add_argument("--port", type=int, help="serve mode (default 8000)")
    add_parallel_options(p, "vLLM")


RUNNER = Runner(
    name="vllm",
    tool="vLLM",
    help="vllm bench throughput | latency | serve",
    job=vllm_job,
    default_execution="container",
    default_mode="throughput",
    add_arguments=_add_arguments,
    default_image=DEFAULT_IMAGE,
)
