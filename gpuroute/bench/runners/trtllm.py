"""The TensorRT-LLM runner: ``trtllm-bench throughput`` and ``latency`` on the routed GPUs.

In the TensorRT-LLM release image (``execution="container"``, with ``--ipc=host`` and the
memlock and stack limits its documentation asks for) or with a local ``trtllm-bench``. The
runner writes the synthetic dataset itself (JSONL, one request per line: ``task_id``,
``input_ids``, ``output_tokens``, the format of ``prepare_dataset.py``), sets ``--tp`` to the
number of routed GPUs (over ``--pp``), refuses parallelism across MIG devices, always sets
the entrypoint (``trtllm-bench``), and parses the nested ``--report_json`` report.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from gpuroute.bench.parsers import parse_trtllm
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

__all__ = ["DEFAULT_IMAGE", "RUNNER", "run_trtllm", "trtllm_job"]

DEFAULT_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:latest"
Mode = Literal["throughput", "latency"]
_DATASET, _REPORT = "trtllm-dataset.jsonl", "trtllm-report.json"
_TOKEN_RANGE = (1000, 30000)  # ids every usual LLM vocabulary has


def _container_kwargs() -> dict[str, Any]:
    from docker.types import Ulimit

    return {
        "ipc_mode": "host",
        "ulimits": [
            Ulimit(name="memlock", soft=-1, hard=-1),
            Ulimit(name="stack", soft=67108864, hard=67108864),
        ],
    }


def trtllm_job(
    *,
    mode: Mode = "throughput",
    model: str,
    input_len: int,
    output_len: int,
    num_requests: int = 1000,
    model_path: str | None = None,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int = 1,
    backend: str = "pytorch",
    warmup: int = 2,
    concurrency: int | None = None,
    streaming: bool = False,
    seed: int = 0,
    extra_args: Sequence[str] = (),
    execution: Execution = "container",
    executable: str = "trtllm-bench",
) -> Job:
    """The job for ``execute``; ``tensor_parallel_size`` defaults to the number of routed
    GPUs divided by ``pipeline_parallel_size``."""
    if mode not in ("throughput", "latency"):
        raise BenchConfigError(f"trtllm-bench mode {mode!r} is not one of: throughput, latency")
    require_positive(input_len=input_len, output_len=output_len, num_requests=num_requests)
    prefix = [] if execution == "container" else [executable]

    def prepare(workdir: Path) -> None:
        rng = random.Random(seed)  # noqa: S311 - synthetic prompts, not secrets
        with (workdir / _DATASET).open("w") as f:
            for task in range(num_requests):
                ids = [rng.randrange(*_TOKEN_RANGE) for _ in range(input_len)]
                f.write(
                    json.dumps({"task_id": task, "input_ids": ids, "output_tokens": output_len})
                    + "\n"
                )

    def command(where: str) -> list[str]:
        head = [*prefix, "--model", model]
        if model_path is not None:
            head += ["--model_path", model_path]
        args = [
            mode,
            "--dataset",
            f"{where}/{_DATASET}",
            "--backend",
            backend,
            "--tp",
            str(job.tensor_parallel_size),
            "--pp",
            str(pipeline_parallel_size),
            "--num_requests",
            str(num_requests),
            "--warmup",
            str(warmup),
            "--report_json",
            f"{where}/{_REPORT}",
        ]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if streaming and mode == "throughput":
            args.append("--streaming")
        return [*head, *args, *extra_args]

    def collect(workdir: Path, _logs: str) -> Collected:
        return read_report(workdir / _REPORT, f"trtllm-bench {mode}", parse_trtllm)

    job = Job(
        runner="trtllm",
        mode=mode,
        tool=f"trtllm-bench {mode}",
        workload=Workload(
            model=model,
            dataset="synthetic_token_ids",
            num_requests=num_requests,
            input_len=input_len,
            output_len=output_len,
            ignore_eos=None,
            max_concurrency=concurrency,
            seed=seed,
            warmup_iters=warmup,
            extra={"backend": backend, "streaming": streaming or mode == "latency"},
        ),
        command=command,
        collect=collect,
        prepare=prepare,
        entrypoint=["trtllm-bench"],
        container_kwargs=_container_kwargs() if execution == "container" else {},
        default_image=DEFAULT_IMAGE,
        parallel_tool="TensorRT-LLM",
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        distributed_executor_backend="mpi",
        outputs=(_REPORT,),
    )
    return job


def run_trtllm(options: RunOptions | None = None, **workload: Any) -> Result:
    """Run a TensorRT-LLM benchmark; ``workload`` takes ``trtllm_job``'s arguments. In a
    container the image defaults to ``DEFAULT_IMAGE``."""
    return RUNNER.run(options, **workload)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("throughput", "latency"), help="default throughput")
    p.add_argument("--model", required=True)
    p.add_argument("--model-path")
    p.add_argument("--num-requests", type=int, help="default 1000")
    p.add_argument("--backend", help="default pytorch")
    p.add_argument("--warmup", type=int, help="warm-up requests (default 2)")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--streaming", action="store_true")
    add_parallel_options(p, "trtllm-bench")


RUNNER = Runner(
    name="trtllm",
    tool="trtllm-bench",
    help="trtllm-bench throughput | latency",
    job=trtllm_job,
    default_execution="container",
    default_mode="throughput",
    add_arguments=_add_arguments,
    default_image=DEFAULT_IMAGE,
    # Unprivileged, an engine may not lift the memlock limit the job asks for; the stack
    # limit stays.
    unprivileged_docker_kwargs={"ulimits": [{"Name": "stack", "Soft": 67108864, "Hard": 67108864}]},
)
