"""``gpuroute bench …`` and ``gpuroute campaign …``.

    gpuroute bench transformers [--tiny | --model M] --input-len N --output-len N
                                --num-prompts N [--gpus SPEC] [--output FILE]
    gpuroute bench vllm --model M [--mode throughput|latency|serve] ... [-- EXTRA ARGS]
    gpuroute bench trtllm --model M [--mode throughput|latency] ... [-- EXTRA ARGS]
    gpuroute campaign run FILE [--output-dir DIR] [--retry-failed]
                          [--simulate TOPOLOGY | --ray ADDRESS|auto]
    gpuroute campaign report DIR

A benchmark prints a summary and writes its result (``gpuroute.bench.result/1``) with
``--output``; the native reports are kept beside it. ``--simulate TOPOLOGY`` runs on the
whole built-in simulated host (``gpuroute.bench.simhost``), as on every command. The exit
status is 0 for a run that succeeded, 1 for one that failed (its result is still written), 2
for a request that is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gpuroute.bench.runners.registry import Runner, all_runners, load_runner
from gpuroute.cli_options import (
    BENCH_HELP,
    CAMPAIGN_HELP,
    add_inventory_options,
    add_simulate_option,
    key_values,
)

__all__ = ["add_parsers", "run"]


def _common(p: argparse.ArgumentParser, runner: Runner) -> None:
    p.add_argument("--gpus", default="none", help="the GPUs (any gpuroute spec; default none)")
    p.add_argument(
        "--execution",
        choices=("inprocess", "subprocess", "container"),
        help=f"where the benchmark runs (default: {runner.default_execution})",
    )
    p.add_argument(
        "--image",
        help=f"the container image (default: {runner.default_image})"
        if runner.default_image
        else f"the container image ({runner.tool} has no official image)",
    )
    p.add_argument("--output", metavar="FILE", help="write the result here (JSON)")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep inputs and native reports here (default: FILE.native next to --output)",
    )
    add_inventory_options(p)
    p.add_argument("--lease", action="store_true", default=False, help="lease the GPUs")
    p.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    p.add_argument("--timeout", type=float, metavar="S", help="stop the benchmark after S seconds")
    p.add_argument("--energy-interval", type=float, default=0.1, metavar="S", help="sampling")
    p.add_argument(
        "--idle-baseline", type=float, default=0.0, metavar="S", help="idle power for S seconds"
    )
    p.add_argument("--network", help="the container's network mode (docker run --network)")
    p.add_argument(
        "--verify", action="store_true", default=False, help="check the container's GPUs first"
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")


def _runner_parser(runners: Any, runner: Runner) -> argparse.ArgumentParser:
    """A runner's options are named after its job's parameters (``dest``) and left out when
    not given, so that the job's own defaults apply: one place for each default. The runner
    adds its own to the parser this returns."""
    p: argparse.ArgumentParser = runners.add_parser(
        runner.name, help=runner.help, argument_default=argparse.SUPPRESS
    )
    _common(p, runner)
    p.add_argument("--seed", type=int, help="the prompts' random seed (default 0)")
    p.add_argument("--input-len", type=int, required=True)
    p.add_argument("--output-len", type=int, required=True)
    return p


_WIDE = "every column of the summary, uncut (default: fit the terminal)"


def add_parsers(sub: Any) -> None:
    bench = sub.add_parser("bench", help=BENCH_HELP)
    runners = bench.add_subparsers(dest="runner", required=True, metavar="RUNNER")

    for runner in all_runners():
        runner.add_arguments(_runner_parser(runners, runner))

    campaign = sub.add_parser("campaign", help=CAMPAIGN_HELP)
    csub = campaign.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    crun = csub.add_parser("run", help="run (or resume) the campaign in FILE")
    crun.add_argument("file")
    crun.add_argument("--output-dir", metavar="DIR", help="default: NAME next to FILE")
    crun.add_argument(
        "--retry-failed", action="store_true", help="run experiments out of attempts again"
    )
    on = crun.add_mutually_exclusive_group()
    add_simulate_option(on)  # instead of the file's host
    on.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each experiment as a Ray task on the cluster at ADDRESS (HOST:PORT, or auto)",
    )
    crep = csub.add_parser("report", help="summary table and plots of a campaign directory")
    crep.add_argument("directory")
    for p in (crun, crep):
        p.add_argument("--wide", action="store_true", help=_WIDE)


def _bench(args: argparse.Namespace) -> int:
    from gpuroute.bench.runners.common import Execution, RunOptions, execute
    from gpuroute.core.inventory import Inventory

    runner = load_runner(args.runner)
    if "simulate" in args:
        from gpuroute.bench.simhost import check_topology

        check_topology(args.simulate)  # an unknown name: one error, before any other check
    options_given = vars(args)
    execution: Execution = options_given.get("execution") or runner.default_execution
    params = {name: value for name, value in options_given.items() if name in runner.parameters}
    runner.require(execution)  # before any work: a plain install lacks the tool's modules
    output = Path(args.output) if "output" in args else None
    workdir = options_given.get("workdir") or (str(output) + ".native" if output else None)
    network = options_given.get("network")
    options = RunOptions(
        gpus=args.gpus,
        execution=execution,
        image=options_given.get("image"),
        inventory=Inventory.load(args.inventory) if "inventory" in args else None,
        docker_kwargs={"network_mode": network} if network else {},
        verify=args.verify,
        lease=args.lease,
        lease_dir=options_given.get("lease_dir"),
        timeout_s=options_given.get("timeout"),
        energy_interval_s=args.energy_interval,
        idle_baseline_s=args.idle_baseline,
        workdir=workdir,
        labels=key_values(args.label, "--label"),
        progress=_progress,
    )
    sim = None
    try:
        if "simulate" in args:
            from gpuroute.bench.simhost import SimulatedBenchHost

            sim = SimulatedBenchHost(args.simulate)
            options = sim.apply(options, runner.name)
        result = execute(runner.job(execution=execution, **params), options)
    finally:
        if sim is not None:
            sim.close()
    if output is not None:
        result.write(output)
    print(_summary(result, output))
    return 0 if result.status == "ok" else 1


def _progress(line: str) -> None:
    """A progress line on stderr: stdout carries the summary alone."""
    print(line, file=sys.stderr, flush=True)


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f} {unit}"


def _summary(result: Any, output: Path | None) -> str:
    devices = ", ".join(
        f"{d.nvml_index}" + (f" ({d.mig_profile})" if d.mig_profile else "")
        for d in result.routing.devices
    )
    simulated = result.environment.simulated_host
    lines = [
        f"{result.runner.tool}: {result.status}"
        + (f" on the SIMULATED host {simulated}" if simulated else "")
        + (f" - {result.error}" if result.error else ""),
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
            f"  GPU energy{' (simulated)' if simulated else ''} "
            f"{_fmt(energy.gpu_energy_j, 'J')} over "
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
    from gpuroute.term import colour_enabled, width

    if args.campaign_command == "run":
        if args.simulate is not None:
            from gpuroute.bench.simhost import check_topology

            check_topology(args.simulate)  # an unknown name: one error, before the file's
        if args.ray is not None:
            from gpuroute.bench.ray_campaign import run_on_ray

            directory = run_on_ray(
                args.file, args.output_dir, address=args.ray, retry_failed=args.retry_failed
            )
        else:
            directory = run_campaign(
                args.file, args.output_dir, retry_failed=args.retry_failed, simulate=args.simulate
            )
    else:
        directory = Path(args.directory)
        report_campaign(directory)
    results = read_results(directory)
    table = render_table(summarize(results), wide=args.wide, width=width(), colour=colour_enabled())
    print(table)
    if getattr(args, "ray", None) is not None:
        from gpuroute.bench.ray_campaign import node_table

        print(node_table(results))
    if args.campaign_command == "run":
        print(f"results, summary and plots: {directory}")
        return 0 if all(r.status == "ok" for r in _last_attempts(results)) else 1
    print(f"summary and plots written to {args.directory}")
    return 0
