"""The Hugging Face transformers runner: a generation benchmark on the routed GPUs.

It runs ``gpuroute.bench.transformers_worker`` in-process, in a process of its own started
by ``gpuroute.launch`` (the default), or in a container (the worker file is copied into the
mounted work directory, so the image needs python, torch and transformers, not gpuroute).
Reported: prefill (time to first token) and decode latency per batch, per-token latency
percentiles (TTFT, TPOT, ITL, end-to-end, per request), tokens per second, and energy over
the timed batches only (model load and warm-up excluded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from gpuroute.bench.result import Latency, Result, Throughput, Tokens, Workload
from gpuroute.bench.runners.common import (
    MOUNT,
    Collected,
    Execution,
    Job,
    RunOptions,
    require_positive,
)
from gpuroute.bench.runners.registry import Runner
from gpuroute.bench.stats import PercentileMethod, summarize
from gpuroute.errors import BenchConfigError, NativeReportError

__all__ = ["RUNNER", "TINY", "collect_worker_report", "run_transformers", "transformers_job"]

TINY = "tiny"
_CONFIG, _REPORT = "transformers-config.json", "transformers-report.json"


def transformers_job(
    *,
    model: str = TINY,
    input_len: int,
    output_len: int,
    num_prompts: int,
    batch_size: int = 1,
    warmup: int = 1,
    seed: int = 0,
    dtype: str = "auto",
    revision: str | None = None,
    device: str = "auto",
    execution: Execution = "subprocess",
    python: str = "python3",
) -> Job:
    """The job for ``execute``; ``python`` is the interpreter inside a container image."""
    require_positive(
        input_len=input_len, output_len=output_len, num_prompts=num_prompts, batch_size=batch_size
    )
    if warmup < 0:
        raise BenchConfigError(f"--warmup must be 0 or more, not {warmup}")
    config = {
        "model": model,
        "revision": revision,
        "input_len": input_len,
        "output_len": output_len,
        "num_prompts": num_prompts,
        "batch_size": batch_size,
        "warmup": warmup,
        "seed": seed,
        "dtype": dtype,
        "device": device,
    }
    worker = Path(__file__).resolve().parent.parent / "transformers_worker.py"

    def prepare(workdir: Path) -> None:
        (workdir / _CONFIG).write_text(json.dumps(config))
        if execution == "container":
            shutil.copyfile(worker, workdir / worker.name)

    def command(where: str) -> list[str]:
        files = ["--config", f"{where}/{_CONFIG}", "--output", f"{where}/{_REPORT}"]
        if execution == "container":
            return [python, f"{MOUNT}/{worker.name}", *files]
        return [sys.executable, "-m", "gpuroute.bench.transformers_worker", *files]

    def inprocess(workdir: Path) -> None:
        from gpuroute.bench import transformers_worker

        transformers_worker.main(
            ["--config", str(workdir / _CONFIG), "--output", str(workdir / _REPORT)]
        )

    return Job(
        runner="transformers",
        mode="generate",
        tool="transformers generate",
        workload=Workload(
            model=model,
            model_revision=revision,
            load_format="random_init" if model == TINY else "auto",
            dtype=dtype,
            dataset="random",
            num_requests=num_prompts,
            input_len=input_len,
            output_len=output_len,
            batch_size=batch_size,
            ignore_eos=True,
            seed=seed,
            warmup_iters=warmup,
        ),
        command=command,
        collect=lambda workdir, _logs: collect_worker_report(workdir / _REPORT),
        prepare=prepare,
        inprocess=inprocess,
        env={"HF_HUB_OFFLINE": "1"} if model == TINY else {},
        outputs=(_REPORT,),
    )


def collect_worker_report(path: Path) -> Collected:
    """Turn the worker's report into the schema's figures."""
    try:
        report: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise NativeReportError(
            f"the transformers worker wrote no report ({path}); its output above says why"
        ) from None
    except (OSError, ValueError) as exc:
        raise NativeReportError(
            f"the transformers worker's report {path} is unreadable: {exc}"
        ) from exc
    try:
        window = (float(report["window"]["start_unix_s"]), float(report["window"]["end_unix_s"]))
        batches = report["batches"]
        ttft, tpot, itl, e2el, prefill, decode, batch_s = [], [], [], [], [], [], []
        for batch in batches:
            size, latency = int(batch["size"]), float(batch["latency_s"])
            times = [float(t) for t in batch["token_times_s"]]
            first = times[0] if times else latency
            prefill.append(first * 1000)
            decode.append((latency - first) * 1000)
            batch_s.append(latency)
            gaps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
            for _ in range(size):
                ttft.append(first * 1000)
                e2el.append(latency * 1000)
                if len(times) > 1:
                    tpot.append((latency - first) * 1000 / (len(times) - 1))
                itl.extend(gaps)
        output_total = int(report["output_tokens_total"])
        input_total = int(report["input_tokens_total"])
        requests = sum(int(b["size"]) for b in batches)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise NativeReportError(
            f"the transformers worker's report {path} lacks {exc}; expected the format "
            "gpuroute.bench.transformers-worker/1"
        ) from exc
    duration = window[1] - window[0]
    method: PercentileMethod = "numpy_linear"
    return Collected(
        tokens=Tokens(
            input_total=input_total,
            output_total=output_total,
            requests_completed=requests,
            requests_failed=0,
        ),
        throughput=Throughput(
            requests_per_s=requests / duration if duration > 0 else None,
            output_tok_per_s=output_total / duration if duration > 0 else None,
            total_tok_per_s=(input_total + output_total) / duration if duration > 0 else None,
        ),
        latency=Latency(
            percentile_method=method,
            ttft_ms=summarize(ttft, method),
            tpot_ms=summarize(tpot, method),
            itl_ms=summarize(itl, method),
            e2el_ms=summarize(e2el, method),
            prefill_ms=summarize(prefill, method),
            decode_ms=summarize(decode, method),
            batch_latency_s=summarize(batch_s, method),
        ),
        duration_s=duration,
        window=window,
        includes=["generate"],
        excludes=["model_load", "warmup"],
        measured_window="generate_only",
        native_report=report,
        native_report_path=str(path),
        tool_version=report.get("versions", {}).get("transformers"),
        cuda_visible_devices=report.get("cuda_visible_devices"),
        cuda_device_order=report.get("cuda_device_order"),
        device=report.get("device"),
        framework_versions={k: str(v) for k, v in report.get("versions", {}).items()},
        peak_process_allocated_mib=report.get("peak_allocated_mib"),
    )


def run_transformers(options: RunOptions | None = None, **workload: Any) -> Result:
    """Run the generation benchmark; ``workload`` takes ``transformers_job``'s arguments
    (``model``, ``input_len``, ``output_len``, ``num_prompts``, ``batch_size``, …)."""
    return RUNNER.run(options, **workload)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--tiny",
        dest="model",
        action="store_const",
        const="tiny",
        help="a tiny random model, no hub access",
    )
    model.add_argument("--model", help="a model name or local directory")
    p.add_argument("--revision")
    p.add_argument("--num-prompts", type=int, required=True)
    p.add_argument("--batch-size", type=int, help="default 1")
    p.add_argument("--warmup", type=int, help="untimed warm-up batches (default 1)")
    p.add_argument("--dtype", help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), help="default auto")
    p.add_argument("--python", help="the interpreter in the image (default python3)")


RUNNER = Runner(
    name="transformers",
    tool="transformers",
    help="Hugging Face transformers generate()",
    job=transformers_job,
    default_execution="subprocess",
    default_mode="generate",
    add_arguments=_add_arguments,
    modules=("torch", "transformers"),
    extra="transformers",
)
