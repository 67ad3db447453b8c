"""Campaigns: a grid of benchmark runs, run with leases, stored as they finish, resumable.

A campaign file (YAML) names a grid over runners x models x GPU sets x workload
parameters, and a number of repeats::

    name: tiny-sweep
    host: {simulate: h100-sxm-8}     # optional: the built-in simulated host
    execution: subprocess            # or inprocess, container (per runner: images)
    images: {vllm: vllm/vllm-openai:v0.11.0}
    repeats: 2
    max_parallel: 2                  # experiments at once, on disjoint GPU sets
    retry: {attempts: 2, backoff_s: 5}
    grid:
      runner: [transformers]
      model: [tiny]
      gpus: ["0", "1", "2,3"]
      input_len: [16, 32]
    fixed: {output_len: 8, num_prompts: 4}

Each experiment (one point of the grid, one repeat) has a stable id. Every attempt's result
(``gpuroute.bench.result/1``, a failure included) is appended to ``results.jsonl`` in the
campaign directory as soon as it ends, with the campaign, experiment, configuration,
repeat and attempt in its labels. Run the campaign again and it resumes: experiments with a
result ``ok`` are skipped, the rest run (a failed one again only while it has attempts
left, or with ``retry_failed``). Experiments whose GPU sets do not overlap run at the same
time, each measuring the energy of its own GPUs, as many as the host's GPUs hold (largest
first); leases keep them, and anyone else's work, apart. A lock on the directory keeps two
runs of one campaign from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuroute.bench.result import (
    Energy,
    Isolation,
    Result,
    Routing,
    RunnerInfo,
    Timing,
    Workload,
)
from gpuroute.bench.runners import RunnerName
from gpuroute.bench.runners.common import Execution, RunOptions, execute, now
from gpuroute.bench.runners.registry import PLOT_MODULES, load_runner, require_modules
from gpuroute.errors import BenchConfigError, BenchError, GpurouteError

if TYPE_CHECKING:
    from gpuroute.bench.simhost import SimulatedBenchHost

__all__ = [
    "CAMPAIGN_LABEL",
    "Campaign",
    "Experiment",
    "Scheduler",
    "Store",
    "expand",
    "load_campaign",
    "not_started",
    "read_results",
    "report_campaign",
    "run_campaign",
    "start_order",
]

RESULTS = "results.jsonl"
CAMPAIGN_LABEL = "gpuroute.campaign.dir"
"""Every container of a campaign carries its directory, so that a resumed run can find the
containers a killed one left behind."""


_T = TypeVar("_T")

MAX_FILE_BYTES = 1 << 20
"""A campaign file is read only up to this size (1 MiB); a larger one is refused."""
MAX_DEPTH = 32
"""How deeply a campaign file may nest mappings and lists."""
MAX_REPEATS = 1000
MAX_EXPERIMENTS = 100_000
"""The most experiments (grid points times repeats) one campaign file may name."""


class _Strict(BaseModel):
    # Strict: a string is never taken for a number ("16" is refused, not read as 16), and
    # only finite numbers are accepted.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Retry(_Strict):
    attempts: int = Field(default=1, ge=1, le=MAX_REPEATS)
    backoff_s: float = Field(default=5.0, ge=0)


class Host(_Strict):
    simulate: str | None = None
    """A built-in simulated topology (``gpuroute topologies``): FakeNVML energy, and a
    private engine with stand-in images for containers."""


class EnergySettings(_Strict):
    interval_s: float = Field(default=0.1, gt=0)
    idle_baseline_s: float = Field(default=0.0, ge=0)


class Campaign(_Strict):
    """A campaign file."""

    name: str = Field(min_length=1)
    host: Host = Field(default_factory=Host)
    execution: Execution = "subprocess"
    images: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    """The containers' network mode (``docker run --network``)."""
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)
    max_parallel: int = Field(default=1, ge=1)
    retry: Retry = Field(default_factory=Retry)
    timeout_s: float | None = Field(default=None, gt=0)
    lease: bool = True
    lease_dir: str | None = None
    lease_wait_s: float = Field(default=3600.0, ge=0)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    grid: dict[str, Any]
    fixed: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One point of the grid, one repeat."""

    id: str
    runner: RunnerName
    gpus: str
    params: Mapping[str, Any]
    repeat: int

    @property
    def config(self) -> str:
        """The configuration's readable key (the same for every repeat)."""
        rest = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()) if k != "model")
        return f"{self.runner} {self.params.get('model', '?')} gpus={self.gpus} {rest}".strip()


def _as_list(key: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BenchConfigError(f"grid.{key} is an empty list; give at least one value")
    return values


def _read_text(source: Path) -> str:
    """The file's text, read without blocking (a FIFO is refused, not waited on) and only up
    to ``MAX_FILE_BYTES``."""
    from gpuroute.core.inventory import read_regular_file

    try:
        raw = read_regular_file(source, MAX_FILE_BYTES)
    except OSError as exc:
        raise BenchConfigError(f"cannot read the campaign file {source}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BenchConfigError(
            f"the campaign file {source} is {exc}; name a YAML file of a grid, not data"
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchConfigError(
            f"the campaign file {source} is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None


def _parse_yaml(text: str, source: Path) -> object:
    """YAML without aliases (a billion-laughs file expands ``*a`` into gigabytes) and
    nested at most ``MAX_DEPTH`` deep."""
    import yaml

    class Loader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            line = f"line {event.start_mark.line + 1}" if event.start_mark else "a line"
            if isinstance(event, yaml.AliasEvent):
                raise BenchConfigError(
                    f"the campaign file {source} uses the YAML alias *{event.anchor} ({line}); "
                    "campaign files allow no aliases: write the values out"
                )
            if self._depth >= MAX_DEPTH:
                raise BenchConfigError(
                    f"the campaign file {source} is nested more than {MAX_DEPTH} levels deep "
                    f"({line})"
                )
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    loader = Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise BenchConfigError(f"the campaign file {source} is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()


def load_campaign(path: str | os.PathLike[str]) -> Campaign:
    """Read and check a campaign file; every problem names the key and says what works.
    Everything is checked here, before any experiment runs: the values' types (strictly:
    ``"16"`` is no number), each grid point against its runner, and the sizes (the file,
    its nesting, repeats and the number of experiments)."""
    source = Path(path)
    data = _parse_yaml(_read_text(source), source)
    if not isinstance(data, dict):
        raise BenchConfigError(f"the campaign file {source} must be a mapping (name:, grid:, …)")
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise BenchConfigError(f"the campaign file {source} is invalid: {problems}") from None
    if campaign.execution == "inprocess" and campaign.max_parallel > 1:
        raise BenchConfigError(
            f"the campaign file {source}: execution 'inprocess' runs one experiment at a time "
            "(the process has one set of GPUs); set max_parallel: 1, or use 'subprocess'"
        )
    try:
        _check_points(campaign)
    except BenchConfigError as exc:
        raise BenchConfigError(f"the campaign file {source}: {exc.message}") from exc.__cause__
    return campaign


def _axes(campaign: Campaign) -> dict[str, list[Any]]:
    """The grid's axes, each a list of values, after the checks every expansion needs."""
    grid = dict(campaign.grid)
    for key in ("runner", "model", "gpus"):
        if key not in grid and key not in campaign.fixed:
            raise BenchConfigError(f"the grid needs {key!r} (a value or a list of values)")
    axes = {k: _as_list(k, v) for k, v in grid.items()}
    fixed_overlap = set(axes) & set(campaign.fixed)
    if fixed_overlap:
        raise BenchConfigError(
            f"{', '.join(sorted(fixed_overlap))} is both in grid and in fixed; keep it in one"
        )
    points = math.prod(len(values) for values in axes.values())
    if points * campaign.repeats > MAX_EXPERIMENTS:
        raise BenchConfigError(
            f"the grid ({points} points) times repeats ({campaign.repeats}) makes "
            f"{points * campaign.repeats} experiments; a campaign may have at most "
            f"{MAX_EXPERIMENTS}: split it, or narrow the grid"
        )
    return axes


def _points(campaign: Campaign) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each point of the grid: its runner, its GPU spec and its parameters."""
    axes = _axes(campaign)
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        point = {**campaign.fixed, **dict(zip(keys, values, strict=True))}
        runner = str(point.pop("runner"))
        gpus = point.pop("gpus")
        if isinstance(gpus, bool) or not isinstance(gpus, int | str):
            raise BenchConfigError(
                f"gpus: {gpus!r} is not a GPU spec; write a string ('0,1', 'any:2') or an index"
            )
        known = load_runner(runner).parameters
        unknown = sorted(set(point) - known)
        if unknown:
            raise BenchConfigError(
                f"{', '.join(unknown)} is not a parameter of the {runner} runner; it takes: "
                f"{', '.join(sorted(known))}"
            )
        yield runner, str(gpus), point


def _check_points(campaign: Campaign) -> None:
    """Each grid point's GPU spec parses and its parameters have the types its runner's job
    takes and pass the job's own checks, so that no experiment fails for its configuration
    halfway through a campaign."""
    from pydantic import validate_call

    from gpuroute.core.spec import parse_spec

    strict = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    checked: dict[str, Callable[..., Any]] = {}
    for runner, gpus, params in _points(campaign):
        name = f"{runner} gpus={gpus} " + " ".join(f"{k}={v}" for k, v in sorted(params.items()))
        if runner not in checked:
            checked[runner] = validate_call(config=strict)(load_runner(runner).job)
        try:
            parse_spec(gpus)
            checked[runner](execution=campaign.execution, **params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise BenchConfigError(f"the configuration `{name.strip()}`: {problems}") from None
        except GpurouteError as exc:
            raise BenchConfigError(f"the configuration `{name.strip()}`: {exc.message}") from exc


def expand(campaign: Campaign) -> list[Experiment]:
    """The experiments of a campaign, in grid order, repeats last."""
    experiments = []
    for runner, gpus, point in _points(campaign):
        for repeat in range(campaign.repeats):
            identity = json.dumps(
                {"runner": runner, "gpus": gpus, "params": point, "repeat": repeat},
                sort_keys=True,
                default=str,
            )
            digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
            experiments.append(Experiment(digest, runner, gpus, point, repeat))  # type: ignore[arg-type]
    return experiments


# -- the store -----------------------------------------------------------------------------


def read_results(directory: str | os.PathLike[str]) -> list[Result]:
    """Every result recorded in a campaign directory, in the order they were written. A
    line cut short by a kill is skipped (the run it belonged to is run again)."""
    path = Path(directory) / RESULTS
    if not path.exists():
        return []
    results = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        with contextlib.suppress(ValueError, ValidationError):
            results.append(Result.model_validate_json(line))
    return results


class _Store:
    """Appends one JSON line per result; each is written with a single write and synced."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RESULTS
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        """A kill during a write can leave a last line without its newline: end it, so that
        the next result starts on a line of its own (the partial line is then skipped)."""
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def append(self, result: Result) -> None:
        line = (result.to_json(indent=None) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    f: IO[str] = (directory / ".campaign.lock").open("a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(
                f"another run of this campaign is using {directory}; wait for it to end "
                "(or give this run another --output-dir)"
            ) from None
        yield
    finally:
        f.close()


# -- running -------------------------------------------------------------------------------


def _not_started(
    experiment: Experiment, execution: Execution, error: str, labels: dict[str, str]
) -> Result:
    """The record of an attempt that failed before it ran (a bad parameter, a lease that
    could not be had): nothing was measured, and the result says why."""
    params = dict(experiment.params)
    model = str(params.pop("model", "?"))
    known = set(Workload.model_fields) - {"model", "extra"}
    workload = Workload(
        model=model,
        **{k: v for k, v in params.items() if k in known and not isinstance(v, (list, dict))},
        extra={k: v for k, v in params.items() if k not in known},
    )
    return Result(
        run_id=str(uuid.uuid4()),
        status="failed",
        error=error,
        started_at=now(),
        ended_at=now(),
        runner=RunnerInfo(
            name=experiment.runner,
            mode=str(params.get("mode", load_runner(experiment.runner).default_mode)),
            execution=execution,
            tool=experiment.runner,
            argv=[],
        ),
        routing=Routing(
            spec=experiment.gpus,
            devices=[],
            cuda_visible_devices=None,
            cuda_device_order=None,
            nvidia_visible_devices=None,
            plan={},
        ),
        workload=workload,
        timing=Timing(measured_window="not_started", duration_s=None),
        energy=Energy(method="none", unavailable_reason="the run did not start"),
        isolation=Isolation(checked=False, reason="the run did not start"),
        labels=labels,
    )


def _remove_orphans(directory: Path) -> None:
    """Remove the containers a killed run of this campaign left behind (the directory lock
    says no other run of it is alive): their results can never be collected, and they would
    hold their GPUs and leases."""
    from gpuroute.backends.docker import connect

    try:
        client = connect()
    except GpurouteError:
        return  # no engine: nothing can have been left on it
    try:
        label = f"{CAMPAIGN_LABEL}={directory.resolve()}"
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                container.remove(force=True)
    finally:
        client.close()


def _busy(experiment: Experiment, sim: SimulatedBenchHost | None) -> set[str] | None:
    """The devices an experiment names (None for ``any:N``: leases pick them)."""
    if experiment.gpus.strip().lower().startswith("any"):
        return None
    from gpuroute.api import plan
    from gpuroute.core.context import CallerContext

    inventory, context = (sim.inventory, CallerContext()) if sim is not None else (None, None)
    try:
        return {d.gpu.uuid for d in plan(experiment.gpus, inventory, context=context).devices}
    except GpurouteError:
        return set()


# What a campaign run elsewhere (gpuroute.bench.ray_campaign) shares with one on this host.
Store = _Store
not_started = _not_started
Scheduler = Callable[
    [Campaign, Path, _Store, list[tuple[Experiment, int]], Any, Callable[[Result], None] | None],
    None,
]
"""Runs a campaign's experiments left (each with its attempts so far) and stores each
attempt's result as it ends: ``(campaign, directory, store, todo, progress, on_result)``."""


def run_campaign(
    path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    retry_failed: bool = False,
    progress: Any = None,
    on_result: Callable[[Result], None] | None = None,
    simulate: str | None = None,
    scheduler: Scheduler | None = None,
) -> Path:
    """Run (or resume) a campaign; returns its directory, which holds ``results.jsonl``,
    the native reports of every attempt, ``summary.md``/``summary.json`` and the plots.

    ``simulate`` names a built-in simulated host to run on, whatever the file's ``host``.
    ``scheduler``: runs the experiments left somewhere else than on this host (a Ray
    cluster: ``gpuroute.bench.ray_campaign.run_on_ray``)."""
    from gpuroute.bench.progress import Progress

    campaign = load_campaign(path)
    if simulate is not None:
        campaign = campaign.model_copy(
            update={"host": campaign.host.model_copy(update={"simulate": simulate})}
        )
    if campaign.host.simulate is not None:
        from gpuroute.bench.simhost import check_topology

        check_topology(campaign.host.simulate)  # an unknown name: one error, before any work
    experiments = expand(campaign)
    needs: dict[str, str] = {}
    for runner in sorted({e.runner for e in experiments}):
        needs.update(load_runner(runner).needs(campaign.execution))
    needs.update(PLOT_MODULES)
    require_modules(needs, f"the campaign {campaign.name!r} (its runs and plots)")
    directory = Path(output_dir) if output_dir else Path(path).resolve().parent / campaign.name
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_lock(directory):
        store = _Store(directory)
        done: dict[str, list[Result]] = {}
        for result in read_results(directory):
            done.setdefault(result.labels.get("experiment", ""), []).append(result)
        todo: list[tuple[Experiment, int]] = []
        skipped = 0
        for experiment in experiments:
            previous = done.get(experiment.id, [])
            if any(r.status == "ok" for r in previous):
                skipped += 1
                continue
            attempts = len(previous)
            if attempts >= campaign.retry.attempts and not retry_failed:
                skipped += 1
                continue
            todo.append((experiment, attempts))
        bar = progress if progress is not None else Progress(len(experiments), label=campaign.name)
        if skipped:
            bar.skipped(skipped)
        sim = None
        if campaign.host.simulate is not None:
            from gpuroute.bench.simhost import SimulatedBenchHost

            sim = SimulatedBenchHost(campaign.host.simulate, lease_root=directory)
        try:
            if scheduler is not None:
                scheduler(campaign, directory, store, todo, bar, on_result)
            else:
                if sim is None and todo and campaign.execution == "container":
                    _remove_orphans(directory)  # a simulated host's engine is new each run
                _schedule(campaign, sim, directory, store, todo, bar, on_result)
        finally:
            if sim is not None:
                sim.close()
            bar.close()
        report_campaign(directory)
    return directory


def _gpus_needed(experiment: Experiment, devices: set[str] | None) -> int:
    """How many GPUs an experiment holds while it runs: N for ``any:N``, else its GPUs."""
    if devices is not None:
        return len(devices)
    from gpuroute.core.spec import parse_spec

    try:
        token = parse_spec(experiment.gpus).tokens[0]
    except (GpurouteError, IndexError):
        return 0
    return token.index or 1


def _host_gpus(sim: SimulatedBenchHost | None) -> int | None:
    """How many GPUs the campaign's host has (None when it cannot be read)."""
    if sim is not None:
        return len(sim.inventory.gpus)
    from gpuroute.host import default_inventory

    try:
        return len(default_inventory().gpus)
    except GpurouteError:
        return None


def start_order(
    items: Iterable[_T], gpus: Callable[[_T], int], seconds: Callable[[_T], float] | None = None
) -> list[_T]:
    """The order a campaign starts experiments in, on one host and on a Ray cluster alike:
    those needing the most GPUs first (the others fill the GPUs left over, and no wide one is
    left to the end, waiting for a whole host or node while narrow ones keep taking GPUs),
    then, where durations are known (``seconds``), the longest first; among equals, as
    listed."""
    if seconds is None:
        return sorted(items, key=lambda item: -gpus(item))
    known = seconds
    return sorted(items, key=lambda item: (-gpus(item), -known(item)))


def _schedule(
    campaign: Campaign,
    sim: SimulatedBenchHost | None,
    directory: Path,
    store: _Store,
    todo: list[tuple[Experiment, int]],
    bar: Any,
    on_result: Callable[[Result], None] | None,
) -> None:
    """Run the experiments, up to ``max_parallel`` at once on disjoint GPUs.

    With several at once, an experiment starts only when the host has GPUs enough for it
    besides those the running experiments hold (an ``any:N`` experiment started early would
    wait on its lease, polling, and hold a worker), and those needing the most GPUs are taken
    first (``start_order``), the others filling the GPUs left over."""
    pending = list(todo)
    devices_of = {item[0].id: _busy(item[0], sim) for item in pending}
    needed = {item[0].id: _gpus_needed(item[0], devices_of[item[0].id]) for item in pending}
    capacity = _host_gpus(sim) if campaign.max_parallel > 1 and pending else None
    if capacity is not None:
        pending = start_order(pending, lambda item: needed[item[0].id])
    running: dict[Future[None], tuple[set[str] | None, int]] = {}
    with ThreadPoolExecutor(max_workers=campaign.max_parallel) as pool:
        while pending or running:
            in_use = set().union(*(s for s, _ in running.values() if s))
            held = sum(n for _, n in running.values())
            for item in list(pending):
                if len(running) >= campaign.max_parallel:
                    break
                devices = devices_of[item[0].id]
                if devices is not None and devices & in_use:
                    continue  # it waits for the GPUs it shares with a running experiment
                need = needed[item[0].id]
                if capacity is not None and running and held + need > capacity:
                    continue  # it waits until enough GPUs are free
                pending.remove(item)
                in_use |= devices or set()
                held += need
                future = pool.submit(
                    _attempts, campaign, sim, directory, store, *item, bar, on_result
                )
                running[future] = (devices, need)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                future.result()


def _attempts(
    campaign: Campaign,
    sim: SimulatedBenchHost | None,
    directory: Path,
    store: _Store,
    experiment: Experiment,
    previous: int,
    bar: Any,
    on_result: Callable[[Result], None] | None,
) -> None:
    import tenacity

    attempts_left = max(campaign.retry.attempts - previous, 1)
    numbers = itertools.count(previous)

    def once() -> Result:
        result = _attempt(campaign, sim, directory, experiment, next(numbers))
        store.append(result)
        if on_result is not None:
            on_result(result)
        return result

    def last(state: tenacity.RetryCallState) -> Result:
        assert state.outcome is not None
        result: Result = state.outcome.result()
        return result

    # A failed result is retried after the backoff; an exception is raised, never retried.
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts_left),
        wait=tenacity.wait_fixed(campaign.retry.backoff_s),
        retry=tenacity.retry_if_result(lambda result: result.status != "ok"),
        retry_error_callback=last,
    )
    bar.started(experiment.config)
    started = time.monotonic()
    result = retrying(once)
    bar.finished(experiment.config, result.status == "ok", time.monotonic() - started)


def _attempt(
    campaign: Campaign,
    sim: SimulatedBenchHost | None,
    directory: Path,
    experiment: Experiment,
    attempt: int,
) -> Result:
    labels = {
        "campaign": campaign.name,
        "experiment": experiment.id,
        "config": experiment.config,
        "repeat": str(experiment.repeat),
        "attempt": str(attempt),
    }
    execution = campaign.execution
    try:
        job = load_runner(experiment.runner).job(execution=execution, **experiment.params)
        options = RunOptions(
            gpus=experiment.gpus,
            execution=execution,
            image=campaign.images.get(experiment.runner),
            docker_kwargs={
                **({"network_mode": campaign.network} if campaign.network else {}),
                "labels": {
                    "gpuroute.campaign": campaign.name,
                    CAMPAIGN_LABEL: str(directory.resolve()),
                },
            },
            lease=campaign.lease,
            lease_dir=campaign.lease_dir,
            lease_wait_s=campaign.lease_wait_s,
            timeout_s=campaign.timeout_s,
            energy_interval_s=campaign.energy.interval_s,
            idle_baseline_s=campaign.energy.idle_baseline_s,
            workdir=directory / "native" / f"{experiment.id}-{attempt}",
            labels=labels,
        )
        if sim is not None:
            options = sim.apply(options, experiment.runner)
        return execute(job, options)
    except Exception as exc:  # refused before it ran (a parameter, a spec, a lease): recorded
        text = str(exc) if isinstance(exc, GpurouteError) else f"{type(exc).__name__}: {exc}"
        return _not_started(experiment, execution, text, labels)


def report_campaign(directory: str | os.PathLike[str]) -> str:
    """Write ``summary.md``, ``summary.json`` and the plots into a campaign directory and
    return the summary table."""
    from gpuroute.bench.report import render_table, summarize, write_plots, write_summary

    results = read_results(directory)
    if not results:
        raise BenchError(
            f"no results in {directory} (no {RESULTS}); run the campaign first: "
            "gpuroute campaign run FILE"
        )
    write_summary(results, directory)
    write_plots(results, directory)
    return render_table(summarize(results))
