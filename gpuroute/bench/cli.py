"""``gpuroute bench …`` and ``gpuroute campaign …``.

    gpuroute bench transformers [--tiny | --model M] --input-len N --output-len N
                                --num-prompts N [--gpus SPEC] [--output FILE]
    gpuroute bench vllm --model M [--mode throughput|latency|serve] ... [-- EXTRA ARGS]
    gpuroute bench trtllm --model M [--mode throughput|latency] ... [-- EXTRA ARGS]
    gpuroute campaign run FILE [--output-dir DIR] [--retry-failed]
    gpuroute campaign report DIR

A benchmark prints a summary and writes its result (``gpuroute.bench.result/1``) with
``--output``; the native reports are kept beside it. ``--simulate NAME`` runs on a built-in
simulated host. The exit status is 0 for a run that succeeded, 1 for one that failed (its
result is still written), 2 for a request that is wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuroute.errors import GpurouteError

__all__ = ["add_parsers", "run"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", default="none", help="the GPUs (any gpuroute spec; default none)")
    p.add_argument(
        "--execution",
        choices=("inprocess", "subprocess", "container"),
        help="where the benchmark runs (default: subprocess; container for vllm and trtllm)",
    )
    p.add_argument("--image", help="the container image (default: the tool's official image)")
    p.add_argument("--output", metavar="FILE", help="write the result here (JSON)")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep inputs and native reports here (default: FILE.native next to --output)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--inventory", metavar="FILE", help="plan against this snapshot")
    where.add_argument(
        "--simulate", metavar="NAME", help="run on a built-in simulated host (gpuroute topologies)"
    )
    p.add_argument("--lease", action="store_true", help="lease the GPUs for the run")
    p.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    p.add_argument("--timeout", type=float, metavar="S", help="stop the benchmark after S seconds")
    p.add_argument("--energy-interval", type=float, default=0.1, metavar="S", help="sampling")
    p.add_argument(
        "--idle-baseline", type=float, default=0.0, metavar="S", help="idle power for S seconds"
    )
    p.add_argument("--network", help="the container's network mode (docker run --network)")
    p.add_argument("--verify", action="store_true", help="check the container's GPUs first")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)


def add_parsers(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run an LLM benchmark on exactly the routed GPUs")
    runners = bench.add_subparsers(dest="runner", required=True, metavar="RUNNER")

    tf = runners.add_parser("transformers", help="Hugging Face transformers generate()")
    _common(tf)
    model = tf.add_mutually_exclusive_group(required=True)
    model.add_argument("--tiny", action="store_true", help="a tiny random model, no hub access")
    model.add_argument("--model", help="a model name or local directory")
    tf.add_argument("--revision")
    tf.add_argument("--input-len", type=int, required=True)
    tf.add_argument("--output-len", type=int, required=True)
    tf.add_argument("--num-prompts", type=int, required=True)
    tf.add_argument("--batch-size", type=int, default=1)
    tf.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches")
    tf.add_argument("--dtype", default="auto")
    tf.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    tf.add_argument("--python", default="python3", help="the interpreter in the image")

    vl = runners.add_parser("vllm", help="vllm bench throughput | latency | serve")
    _common(vl)
    vl.add_argument("--mode", choices=("throughput", "latency", "serve"), default="throughput")
    vl.add_argument("--model", required=True)
    vl.add_argument("--input-len", type=int, required=True)
    vl.add_argument("--output-len", type=int, required=True)
    vl.add_argument("--num-prompts", type=int, default=1000)
    vl.add_argument("--batch-size", type=int, default=8, help="latency mode")
    vl.add_argument("--num-iters", type=int, default=30, help="latency mode")
    vl.add_argument("--num-iters-warmup", type=int, default=10, help="latency mode")
    vl.add_argument("--tp", type=int, help="tensor parallel size (default: the routed GPUs)")
    vl.add_argument("--pp", type=int, default=1, help="pipeline parallel size")
    vl.add_argument("--load-format")
    vl.add_argument("--dtype")
    vl.add_argument("--max-model-len", type=int)
    vl.add_argument("--gpu-memory-utilization", type=float)
    vl.add_argument("--request-rate", type=float, help="serve mode")
    vl.add_argument("--max-concurrency", type=int, help="serve mode")
    vl.add_argument("--port", type=int, default=8000, help="serve mode")
    vl.add_argument("extra", nargs="*", help="after --: more vLLM arguments")

    tr = runners.add_parser("trtllm", help="trtllm-bench throughput | latency")
    _common(tr)
    tr.add_argument("--mode", choices=("throughput", "latency"), default="throughput")
    tr.add_argument("--model", required=True)
    tr.add_argument("--model-path")
    tr.add_argument("--input-len", type=int, required=True)
    tr.add_argument("--output-len", type=int, required=True)
    tr.add_argument("--num-requests", type=int, default=1000)
    tr.add_argument("--tp", type=int, help="tensor parallel size (default: the routed GPUs)")
    tr.add_argument("--pp", type=int, default=1)
    tr.add_argument("--backend", default="pytorch")
    tr.add_argument("--warmup", type=int, default=2)
    tr.add_argument("--concurrency", type=int)
    tr.add_argument("--streaming", action="store_true")
    tr.add_argument("extra", nargs="*", help="after --: more trtllm-bench arguments")

    campaign = sub.add_parser("campaign", help="run or report a benchmark campaign")
    csub = campaign.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    crun = csub.add_parser("run", help="run (or resume) the campaign in FILE")
    crun.add_argument("file")
    crun.add_argument("--output-dir", metavar="DIR", help="default: NAME next to FILE")
    crun.add_argument(
        "--retry-failed", action="store_true", help="run experiments out of attempts again"
    )
    crep = csub.add_parser("report", help="summary table and plots of a campaign directory")
    crep.add_argument("directory")


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GpurouteError(f"--label {item!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _bench(args: argparse.Namespace) -> int:
    from gpuroute.bench.runners.common import Execution, Job, RunOptions, execute
    from gpuroute.core.inventory import Inventory

    runner: str = args.runner
    execution: Execution = args.execution or (
        "subprocess" if runner == "transformers" else "container"
    )
    build: Callable[..., Job]
    if runner == "transformers":
        from gpuroute.bench.runners.transformers import TINY, transformers_job

        build = transformers_job
        params: dict[str, Any] = {
            "model": TINY if args.tiny else args.model,
            "revision": args.revision,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "num_prompts": args.num_prompts,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "seed": args.seed,
            "dtype": args.dtype,
            "device": args.device,
            "python": args.python,
        }
    elif runner == "vllm":
        from gpuroute.bench.runners import vllm

        build = vllm.vllm_job
        params = {
            "mode": args.mode,
            "model": args.model,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "num_prompts": args.num_prompts,
            "batch_size": args.batch_size,
            "num_iters": args.num_iters,
            "num_iters_warmup": args.num_iters_warmup,
            "tensor_parallel_size": args.tp,
            "pipeline_parallel_size": args.pp,
            "load_format": args.load_format,
            "dtype": args.dtype,
            "max_model_len": args.max_model_len,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "seed": args.seed,
            "request_rate": args.request_rate,
            "max_concurrency": args.max_concurrency,
            "port": args.port,
            "extra_args": args.extra,
        }
    else:
        from gpuroute.bench.runners import trtllm

        build = trtllm.trtllm_job
        params = {
            "mode": args.mode,
            "model": args.model,
            "model_path": args.model_path,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "num_requests": args.num_requests,
            "tensor_parallel_size": args.tp,
            "pipeline_parallel_size": args.pp,
            "backend": args.backend,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "streaming": args.streaming,
            "seed": args.seed,
            "extra_args": args.extra,
        }
    output = Path(args.output) if args.output else None
    workdir = args.workdir or (str(output) + ".native" if output else None)
    sim = None
    docker_kwargs: dict[str, Any] = {}
    if args.network:
        docker_kwargs["network_mode"] = args.network
    options = RunOptions(
        gpus=args.gpus,
        execution=execution,
        image=args.image,
        inventory=Inventory.load(args.inventory) if args.inventory else None,
        docker_kwargs=docker_kwargs,
        verify=args.verify,
        lease=args.lease,
        lease_dir=args.lease_dir,
        timeout_s=args.timeout,
        energy_interval_s=args.energy_interval,
        idle_baseline_s=args.idle_baseline,
        workdir=workdir,
        labels=_labels(args.label),
    )
    try:
        if args.simulate:
            from dataclasses import replace

            from gpuroute.bench.simhost import SimulatedBenchHost

            sim = SimulatedBenchHost(args.simulate)
            if execution == "container":
                sim.start_engine()
            options = replace(
                options,
                inventory=sim.inventory,
                nvml=sim.nvml,
                simulated_host=args.simulate,
                docker_host=sim.docker_host,
                docker_kwargs={**sim.docker_kwargs(runner), **docker_kwargs},
                image=args.image or sim.images.get(runner),
                lease_dir=args.lease_dir or sim.lease_dir,
            )
        if execution == "container" and options.image is None:
            from dataclasses import replace

            from gpuroute.bench.runners import trtllm, vllm

            default = {"vllm": vllm.DEFAULT_IMAGE, "trtllm": trtllm.DEFAULT_IMAGE}.get(runner)
            if default is None:
                raise GpurouteError(
                    "--execution container needs --image for the transformers runner: an "
                    "image with python3, torch and transformers"
                )
            options = replace(options, image=default)
        result = execute(build(execution=execution, **params), options)
    finally:
        if sim is not None:
            sim.close()
    if output is not None:
        result.write(output)
    print(_summary(result, output))
    return 0 if result.status == "ok" else 1


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f} {unit}"


def _summary(result: Any, output: Path | None) -> str:
    devices = ", ".join(
        f"{d.nvml_index}" + (f" ({d.mig_profile})" if d.mig_profile else "")
        for d in result.routing.devices
    )
    lines = [
        f"{result.runner.tool}: {result.status}" + (f" - {result.error}" if result.error else ""),
        f"  GPUs (host NVML index): {devices or 'none'}"
        + (
            f", tensor parallel {result.routing.tensor_parallel_size}"
            if result.routing.tensor_parallel_size
            else ""
        ),
        f"  tokens: {result.tokens.input_total} in, {result.tokens.output_total} out; "
        f"{_fmt(result.throughput.output_tok_per_s, 'output tok/s')}",
    ]
    ttft = result.latency.ttft_ms
    if ttft is not None:
        lines.append(f"  TTFT p50 {_fmt(ttft.p50, 'ms')}, p99 {_fmt(ttft.p99, 'ms')}")
    energy = result.energy
    if energy.gpu_energy_j is not None:
        lines.append(
            f"  GPU energy {_fmt(energy.gpu_energy_j, 'J')} over "
            f"{_fmt(energy.window.duration_s if energy.window else None, 's', 3)}; "
            f"{_fmt(energy.j_per_output_token, 'J per output token', 4)}"
        )
    else:
        lines.append(f"  GPU energy: not measured ({energy.unavailable_reason or 'see warnings'})")
    if energy.warnings:
        lines.append(f"  warnings: {', '.join(energy.warnings)}")
    if output is not None:
        lines.append(f"  result: {output}")
    return "\n".join(lines)


def _last_attempts(results: list[Any]) -> list[Any]:
    last: dict[str, Any] = {}
    for result in results:
        last[result.labels.get("experiment", result.run_id)] = result
    return list(last.values())


def run(args: argparse.Namespace) -> int:
    if args.command == "bench":
        return _bench(args)
    from gpuroute.bench.campaign import read_results, report_campaign, run_campaign
    from gpuroute.bench.report import render_table, summarize

    if args.campaign_command == "run":
        directory = run_campaign(args.file, args.output_dir, retry_failed=args.retry_failed)
        results = read_results(directory)
        print(render_table(summarize(results)))
        print(f"results, summary and plots: {directory}")
        return 0 if all(r.status == "ok" for r in _last_attempts(results)) else 1
    print(report_campaign(args.directory))
    print(f"summary and plots written to {args.directory}")
    return 0
