"""Campaigns on a Ray cluster: each experiment a Ray task on whichever node has its GPUs.

``gpuroute campaign run FILE --ray ADDRESS`` (or ``auto``) runs the experiments that are
left, as ``run_campaign`` chose them, as Ray tasks: an experiment of ``gpus: any:N`` asks
Ray for ``num_gpus=N`` and runs on whichever node Ray gives it. On that node the task routes
and leases what Ray gave it (``gpuroute.ray.here``), runs the benchmark there through the
runner (energy read on that node, by UUID) and returns its result. Results are written by
the driver alone, into the campaign's one ``results.jsonl``, when a task returns: each with
the labels of a result on one host plus ``node`` (the Ray node id) and ``node_ip``.

A task whose node is lost (its raylet killed, the machine gone) never returned, so it never
wrote: the driver submits it again, with the same attempt number, and Ray places it on a node
that is alive. Ray's own task retries are off (``max_retries=0``): one place decides what
runs again, and a result is written at most once per experiment and attempt. An experiment
lost ``MAX_LOSSES`` times in a row is recorded as failed, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuroute.bench.campaign import (
    CAMPAIGN_LABEL,
    Campaign,
    Experiment,
    Store,
    expand,
    load_campaign,
    not_started,
    run_campaign,
    start_order,
)
from gpuroute.bench.result import Result
from gpuroute.bench.runners.common import RunOptions, execute
from gpuroute.bench.runners.registry import load_runner
from gpuroute.errors import BenchConfigError, GpurouteError

__all__ = [
    "MAX_LOSSES",
    "check_campaign",
    "cluster_gpus",
    "NODE_LABEL",
    "gpus_needed",
    "node_table",
    "run_on_node",
    "run_on_ray",
    "schedule",
    "task_options",
]

NODE_LABEL = "node"
"""The label that names the Ray node a result ran on (its node id)."""
NODE_IP_LABEL = "node_ip"
MAX_LOSSES = 3
"""How many times in a row an experiment's node may be lost before it is recorded failed."""


def gpus_needed(experiment: Experiment) -> int:
    """How many GPUs an experiment asks Ray for: ``any:N`` is N, ``none`` is 0. GPUs named
    by index, UUID or bus id belong to one host and are refused on a cluster."""
    from gpuroute.core.spec import Kind, parse_spec

    tokens = parse_spec(experiment.gpus).tokens
    if not tokens or (len(tokens) == 1 and tokens[0].kind is Kind.NONE):
        return 0
    if len(tokens) == 1 and tokens[0].kind is Kind.ANY and tokens[0].index is not None:
        return tokens[0].index
    raise BenchConfigError(
        f"gpus: {experiment.gpus!r} names GPUs of one host; on a Ray cluster an experiment "
        "runs on whichever node has free GPUs: write how many it needs, as any:N (any:1, "
        "any:2, ...)"
    )


def check_campaign(campaign: Campaign) -> None:
    """Refuse, before anything runs, what a campaign on a cluster cannot do."""
    if campaign.host.simulate is not None:
        raise BenchConfigError(
            f"host.simulate ({campaign.host.simulate!r}) simulates one host; on a Ray cluster "
            "each node is its own host (gpuroute.testing.ray_cluster starts simulated ones): "
            "remove host.simulate, or run without --ray"
        )
    if campaign.execution == "inprocess":
        raise BenchConfigError(
            "execution 'inprocess' runs in the driver's own process; on a Ray cluster use "
            "'subprocess' or 'container'"
        )
    for experiment in expand(campaign):
        gpus_needed(experiment)


def _labels(experiment: Experiment, campaign: Campaign, attempt: int) -> dict[str, str]:
    return {
        "campaign": campaign.name,
        "experiment": experiment.id,
        "config": experiment.config,
        "repeat": str(experiment.repeat),
        "attempt": str(attempt),
    }


def _workdir(directory: str, experiment: Experiment, attempt: int) -> Path | None:
    """The native reports' directory on this node: the campaign's own path where this node
    can write it (a shared file system, or the driver's machine), else a temporary one."""
    path = Path(directory) / "native" / f"{experiment.id}-{attempt}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def run_on_node(campaign_json: str, experiment: Experiment, attempt: int, directory: str) -> str:
    """The Ray task of one attempt: route and lease what Ray gave it on this node, run the
    benchmark there, and return its result as JSON (a failure is a result too, with the
    reason, never an exception: a node that cannot read its inventory fails its tasks with
    the reason in the result)."""
    from gpuroute.bench.simhost import SIMULATED_NODE_ENV, simulated_node
    from gpuroute.ray import here, load_ray

    campaign = Campaign.model_validate_json(campaign_json)
    ray = load_ray()
    node = str(ray.get_runtime_context().get_node_id())
    labels = {
        **_labels(experiment, campaign, attempt),
        NODE_LABEL: node,
        NODE_IP_LABEL: str(ray.util.get_node_ip_address()),
    }
    where = f"on Ray node {node[:12]} ({socket.gethostname()})"
    placement = None
    try:
        if gpus_needed(experiment):
            placement = here(wait_s=campaign.lease_wait_s)
            gpus = ",".join(d.uuid for d in placement.devices)
        else:
            gpus = "none"
        options = RunOptions(
            gpus=gpus,
            execution=campaign.execution,
            image=campaign.images.get(experiment.runner),
            docker_kwargs={
                **({"network_mode": campaign.network} if campaign.network else {}),
                "labels": {
                    "gpuroute.campaign": campaign.name,
                    CAMPAIGN_LABEL: str(Path(directory)),
                },
            },
            lease=False,  # held by the placement, for the whole run
            timeout_s=campaign.timeout_s,
            energy_interval_s=campaign.energy.interval_s,
            idle_baseline_s=campaign.energy.idle_baseline_s,
            workdir=_workdir(directory, experiment, attempt),
            labels=labels,
        )
        simulated = os.environ.get(SIMULATED_NODE_ENV)
        if simulated:
            options = simulated_node(options, experiment.runner, simulated)
        job = load_runner(experiment.runner).job(execution=campaign.execution, **experiment.params)
        result = execute(job, options)
        if placement is not None:
            result.routing.lease_id = placement.lease.id
        return result.to_json(indent=None)
    except Exception as exc:
        text = str(exc) if isinstance(exc, GpurouteError) else f"{type(exc).__name__}: {exc}"
        failed = not_started(experiment, campaign.execution, f"{where}: {text}", labels)
        return failed.to_json(indent=None)
    finally:
        if placement is not None:
            placement.release()


def task_options(gpus: int, name: str) -> dict[str, Any]:
    """The Ray options of an experiment's task: its GPUs, no CPU of the node's count (the
    work is the GPUs'; a node's CPUs would cap how many run at once), and no retry by Ray
    (the driver runs a lost task again itself)."""
    return {
        "num_gpus": gpus,
        "num_cpus": 0,
        "max_retries": 0,
        "retry_exceptions": False,
        "name": f"gpuroute-campaign {name}",
    }


@dataclass
class _Attempt:
    experiment: Experiment
    attempt: int
    last: int
    """The last attempt number this run may make."""
    started: float = field(default_factory=time.monotonic)
    losses: int = 0
    not_before: float = 0.0


def _lost(ray: Any, exc: BaseException) -> bool:
    """Whether a task's error means its node or worker was lost (run it again elsewhere)
    rather than the task's own failure."""
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError):
        return False
    return isinstance(exc, errors.RayError)


def cluster_gpus(ray: Any) -> int:
    """How many GPUs the cluster's live nodes have in all (Ray's count)."""
    return int(ray.cluster_resources().get("GPU", 0))


def schedule(
    campaign: Campaign,
    directory: Path,
    store: Store,
    todo: Sequence[tuple[Experiment, int]],
    bar: Any,
    on_result: Callable[[Result], None] | None,
    *,
    address: str,
    max_losses: int = MAX_LOSSES,
) -> None:
    """Run ``todo`` (experiments and their attempts so far) on the Ray cluster at
    ``address``; results go into ``store`` as tasks return. Checked before anything is
    submitted: every experiment names a count of GPUs, and some node can hold it.

    Experiments are submitted in ``start_order`` (the most GPUs first, as on one host), and
    only as many as the cluster's GPUs can run at once: Ray queues what it cannot place yet
    and starts, of what it queued, whatever fits as GPUs free, so that narrow experiments
    submitted early would keep taking the GPUs a wide one waits for. An experiment is
    submitted when the GPUs of those in flight and its own fit in the cluster's (counted
    again at each submission: a lost node counts no more), or when nothing is in flight."""
    from gpuroute.ray import check_fits, connect

    needs = {experiment.id: gpus_needed(experiment) for experiment, _ in todo}
    if not todo:
        return
    ray = connect(address)
    for gpus in sorted(set(needs.values()) - {0}):
        check_fits(ray, gpus=gpus)
    remote = ray.remote(run_on_node)
    payload = campaign.model_dump_json()
    where = str(directory.resolve())
    inflight: dict[Any, _Attempt] = {}
    pending: list[_Attempt] = []
    waiting: list[_Attempt] = []
    written: set[tuple[str, int]] = set()
    rank: dict[str, int] = {}
    announced: set[str] = set()

    def need(item: _Attempt) -> int:
        return needs[item.experiment.id]

    def queue(item: _Attempt) -> None:
        pending.append(item)
        pending.sort(key=lambda i: rank[i.experiment.id])

    def submit_what_fits() -> None:
        capacity = cluster_gpus(ray) if pending else 0
        held = sum(need(i) for i in inflight.values())
        for item in list(pending):
            if inflight and held + need(item) > capacity:
                continue  # it waits until the cluster has GPUs enough for it
            pending.remove(item)
            held += need(item)
            if item.experiment.id not in announced:
                announced.add(item.experiment.id)  # handed to the cluster: "running"
                bar.started(item.experiment.config)
            options = task_options(need(item), item.experiment.config)
            ref = remote.options(**options).remote(payload, item.experiment, item.attempt, where)
            inflight[ref] = item

    def record(item: _Attempt, result: Result) -> None:
        key = (item.experiment.id, item.attempt)
        if key in written:
            return  # written once already: never counted twice
        written.add(key)
        store.append(result)
        if on_result is not None:
            on_result(result)
        if result.status != "ok" and item.attempt < item.last:
            item.attempt += 1
            item.losses = 0
            item.not_before = time.monotonic() + campaign.retry.backoff_s
            waiting.append(item)
            return
        bar.finished(item.experiment.config, result.status == "ok", time.monotonic() - item.started)

    for experiment, previous in todo:
        last = previous + max(campaign.retry.attempts - previous, 1) - 1
        pending.append(_Attempt(experiment, previous, last))
    ordered = start_order(pending, need)
    rank.update((item.experiment.id, n) for n, item in enumerate(ordered))
    pending[:] = ordered
    try:
        while inflight or waiting or pending:
            now = time.monotonic()
            for item in [w for w in waiting if w.not_before <= now]:
                waiting.remove(item)
                queue(item)
            submit_what_fits()
            if not inflight:
                time.sleep(max(0.0, min(w.not_before for w in waiting) - time.monotonic()))
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                item = inflight.pop(ref)
                try:
                    result = Result.model_validate_json(ray.get(ref))
                except Exception as exc:  # the task did not return
                    if _lost(ray, exc) and item.losses < max_losses:
                        item.losses += 1
                        queue(item)  # lost with its node: it wrote nothing, run it again
                        continue
                    why = "lost with its node" if _lost(ray, exc) else "failed on its node"
                    labels = _labels(item.experiment, campaign, item.attempt)
                    result = not_started(
                        item.experiment,
                        campaign.execution,
                        f"the Ray task {why} ({item.losses + 1} time(s)): {_first_line(exc)}",
                        labels,
                    )
                record(item, result)
    finally:
        for ref in inflight:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def run_on_ray(
    path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    address: str = "auto",
    retry_failed: bool = False,
    progress: Any = None,
    on_result: Callable[[Result], None] | None = None,
) -> Path:
    """``run_campaign`` on the Ray cluster at ``address`` (``auto``: the one started on this
    machine; ``HOST:PORT``: its head node): what cannot run on a cluster is refused before
    anything runs."""
    from functools import partial

    check_campaign(load_campaign(path))
    return run_campaign(
        path,
        output_dir,
        retry_failed=retry_failed,
        progress=progress,
        on_result=on_result,
        scheduler=partial(schedule, address=address),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def node_table(results: Iterable[Result]) -> str:
    """Per node: the results that ran there (ok and failed) and the GPU-seconds they held."""
    rows: dict[str, list[float]] = {}
    for result in results:
        node = result.labels.get(NODE_LABEL)
        if node is None:
            continue
        row = rows.setdefault(node, [0, 0, 0.0])
        row[0 if result.status == "ok" else 1] += 1
        row[2] += len(result.routing.devices) * _seconds(result)
    lines = ["node          ok  failed  GPU-seconds"]
    for node, (ok, failed, gpu_s) in sorted(rows.items()):
        lines.append(f"{node[:12]:<12} {int(ok):>3} {int(failed):>7} {gpu_s:>12.1f}")
    return "\n".join(lines)


def _seconds(result: Result) -> float:
    from gpuroute.bench.occupancy import span_of

    span = span_of(result)
    return 0.0 if span is None else span.end - span.start
