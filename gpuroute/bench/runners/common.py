"""What every runner shares: route, lease, watch energy, launch, collect, build the result.

A runner describes its benchmark as a ``Job`` (the command, how to read its native report,
whether it is split over GPUs) and ``execute(job, options)`` does the rest, the same way for
every runner:

1. resolve the GPUs (or lease them) into a routing plan; for a tool that splits a model
   over GPUs, derive the tensor-parallel size from the plan and check it against the number
   and kind of devices;
2. start the energy monitor on the plan's physical GPUs, on the host, by UUID;
3. run the command through ``gpuroute.launch``: a local process, or a container with a work
   directory mounted at ``/gpuroute-bench`` (the benchmark's inputs and native reports);
   for a server benchmark, start the server, run the client next to it, stop the server;
4. read the native report, compute energy over the benchmark's own window, and return a
   ``Result``. A failure at any step still gives a result (``status: failed`` and the
   error), with everything that was measured; containers are removed and leases released.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gpuroute.backends.local import process_tree
from gpuroute.bench.energy import EnergyMonitor, EnergyReading
from gpuroute.bench.parsers import Parsed, load_native_report
from gpuroute.bench.result import (
    Environment,
    Latency,
    Memory,
    Result,
    RoutedDevice,
    Routing,
    RunnerInfo,
    Throughput,
    Timing,
    Tokens,
    Workload,
    derive_energy,
)
from gpuroute.bench.runners import RunnerName
from gpuroute.errors import (
    BenchConfigError,
    BenchError,
    BenchTimeout,
    GpurouteError,
    LaunchTimeout,
)

if TYPE_CHECKING:
    from gpuroute.backends import Launch
    from gpuroute.core.context import CallerContext
    from gpuroute.core.inventory import Inventory
    from gpuroute.core.plan import RoutingPlan
    from gpuroute.host import Host
    from gpuroute.leases import Lease
    from gpuroute.nvml import NVMLApi

__all__ = [
    "MOUNT",
    "Collected",
    "Execution",
    "Job",
    "RunOptions",
    "check_parallelism",
    "execute",
    "now",
    "process_tree",
    "read_report",
    "require_positive",
]

MOUNT = "/gpuroute-bench"
SIMULATED_ENV = "GPUROUTE_SIMULATED_HOST"
"""Set for a run on the simulated host: its GPUs are not real, so a framework may run on the
CPU instead (the transformers worker does)."""
SERVING = "Application startup complete"  # what vLLM's server (uvicorn) logs once it serves
Execution = Literal["inprocess", "subprocess", "container"]
_TAIL = 4000


@dataclass(frozen=True)
class RunOptions:
    """Where and how a benchmark runs; the same for every runner.

    ``gpus`` is any gpuroute spec (``"0,1"``, ``"GPU-…"``, ``"2:1"``, ``"any:2"`` with
    ``lease=True``, or ``"none"``). ``nvml`` may be a ``gpuroute.testing.FakeNVML``;
    ``simulated_host`` names the simulated topology, recorded in the result.
    """

    gpus: str = "none"
    execution: Execution = "subprocess"
    image: str | None = None
    inventory: Inventory | None = None
    nvml: NVMLApi | None = None
    simulated_host: str | None = None
    context: CallerContext | None = None
    docker_host: str | None = None
    docker_kwargs: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    verify: bool = False
    lease: bool = False
    lease_dir: str | os.PathLike[str] | None = None
    lease_wait_s: float = 0.0
    timeout_s: float | None = None
    energy_interval_s: float = 0.1
    idle_baseline_s: float = 0.0
    workdir: str | os.PathLike[str] | None = None
    """Where inputs and native reports are written (and kept); default: a new temporary
    directory, removed afterwards."""
    labels: Mapping[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    """Told, in one line, what the run is about to do once its GPUs are routed (the command
    line prints it on stderr), before the wait for the tool."""


@dataclass
class Collected:
    """What a job read back from its run."""

    tokens: Tokens
    throughput: Throughput
    latency: Latency
    duration_s: float | None
    window: tuple[float, float] | None
    """The benchmark's timed region in unix seconds, for the energy window."""
    includes: list[str]
    excludes: list[str]
    measured_window: str
    native_report: Any = None
    native_report_path: str | None = None
    tool_version: str | None = None
    cuda_visible_devices: str | None = None
    cuda_device_order: str | None = None
    device: str | None = None
    framework_versions: dict[str, str] = field(default_factory=dict)
    peak_process_allocated_mib: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Job:
    """One benchmark, as a runner describes it."""

    runner: RunnerName
    mode: str
    tool: str
    workload: Workload
    command: Callable[[str], list[str]]
    """The argv, given the work directory as the benchmark sees it."""
    collect: Callable[[Path, str], Collected]
    """Reads the results from the work directory (host path) and the logs."""
    prepare: Callable[[Path], None] = lambda _workdir: None
    entrypoint: list[str] | None = None
    """Always set for containers: an image's own entrypoint differs between versions."""
    container_kwargs: Mapping[str, Any] = field(default_factory=dict)
    client_command: Callable[[str], list[str]] | None = None
    """For a server benchmark: ``command`` starts the server, this runs the client."""
    inprocess: Callable[[Path], None] | None = None
    default_image: str | None = None
    """The image for ``execution="container"`` when the options name none."""
    parallel_tool: str | None = None
    """For a tool that splits the model over the routed GPUs: its name, for messages.
    ``execute`` then sets ``tensor_parallel_size`` (when not asked for: the routed GPUs over
    ``pipeline_parallel_size``) and checks both against the plan."""
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    distributed_executor_backend: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    local_ids: Literal["uuid", "index"] = "uuid"
    """How a local process names its GPUs: ``index`` for tools that cannot parse UUIDs."""
    outputs: tuple[str, ...] = ()
    """The files the run writes in the work directory; removed before it starts, so that a
    reused directory never yields an earlier run's report."""


@dataclass
class _RunState:
    host: Host
    handle: Launch | None = None
    stopped: bool = False
    """The work is known to have ended and been cleaned up (its lease may go)."""
    argv: list[str] = field(default_factory=list)


def require_positive(**values: int) -> None:
    """Workload sizes must be at least 1; the error names the option as the CLI spells it."""
    for name, value in values.items():
        if value < 1:
            raise BenchConfigError(f"--{name.replace('_', '-')} must be at least 1, not {value}")


def check_parallelism(plan: RoutingPlan, tool: str, tp: int | None, pp: int = 1) -> int:
    """Tensor x pipeline parallelism must use exactly the routed devices, never MIG ones.
    Returns the tensor-parallel size: ``tp``, or by default the routed GPUs over ``pp``."""
    n = len(plan.devices)
    if tp is None:
        tp = max(n // max(pp, 1), 1)
    if n == 0:
        raise BenchConfigError(
            f"{tool} needs at least one GPU, and --gpus {plan.spec!r} routes none; name GPUs "
            "(for example --gpus 0,1) or use any:N with a lease"
        )
    if tp < 1 or pp < 1:
        raise BenchConfigError(f"parallel sizes must be at least 1 (tensor {tp}, pipeline {pp})")
    if tp * pp != n:
        raise BenchConfigError(
            f"{tool}: tensor parallel size {tp} x pipeline parallel size {pp} = {tp * pp} "
            f"must equal the number of routed GPUs, {n} ({plan.spec!r}); route {tp * pp} "
            f"GPUs or set the sizes so that their product is {n}"
        )
    migs = [d for d in plan.devices if d.is_mig]
    if migs and n > 1:
        raise BenchConfigError(
            f"{tool}: parallelism across MIG devices is not possible "
            f"({', '.join(d.label for d in migs)}): a CUDA process can use only one MIG "
            "device, and MIG devices have no peer-to-peer links; run on one MIG device, or "
            "on whole GPUs"
        )
    return tp


def now() -> str:
    """The time now, as results write it (UTC, ISO 8601, milliseconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _inventory(options: RunOptions) -> Inventory:
    if options.inventory is not None:
        return options.inventory
    from gpuroute.core.inventory import Inventory
    from gpuroute.host import default_inventory

    try:
        return default_inventory()
    except GpurouteError:
        if options.gpus.strip().lower() in ("none", ""):
            return Inventory(gpus=())  # a CPU-only machine: no GPU asked for, none needed
        raise


def _routing(job: Job, plan: RoutingPlan, options: RunOptions, lease: Lease | None) -> Routing:
    container = options.execution == "container"
    env: Mapping[str, str] = {}
    if container:
        env = plan.container_env
    elif plan.local_refusal is None:
        env = plan.local_env
    return Routing(
        spec=plan.spec,
        devices=[
            RoutedDevice(
                cuda_ordinal=i,
                uuid=d.uuid,
                gpu_uuid=d.gpu.uuid,
                nvml_index=d.gpu.index,
                pci_bus_id=d.gpu.pci_bus_id,
                name=d.gpu.name,
                mig_profile=d.mig.profile if d.mig else None,
            )
            for i, d in enumerate(plan.devices)
        ],
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        cuda_device_order=env.get("CUDA_DEVICE_ORDER"),
        nvidia_visible_devices=plan.host_env["NVIDIA_VISIBLE_DEVICES"] if container else None,
        tensor_parallel_size=job.tensor_parallel_size,
        pipeline_parallel_size=job.pipeline_parallel_size,
        distributed_executor_backend=job.distributed_executor_backend,
        lease_id=lease.id if lease is not None else None,
        plan=plan.to_dict(),
    )


def _tail(text: str) -> str | None:
    return text[-_TAIL:] if text else None


def execute(job: Job, options: RunOptions) -> Result:
    """Run ``job`` as ``options`` say and return its result (never raises for a failure of
    the benchmark itself: that is a result with ``status: failed``). Errors in the request
    (a bad spec, an impossible parallel size, a device leased by someone else) raise."""
    from gpuroute.core.context import CallerContext
    from gpuroute.host import LeaseTerms, PlanOptions, host_for

    if options.execution == "container" and not (options.image or job.default_image):
        raise BenchConfigError(
            f"execution 'container' needs an image for the {job.runner} runner ({job.tool} "
            f"has no official image): name one with what it runs (--image NAME, or "
            f"images: {{{job.runner}: NAME}} in a campaign)"
        )
    if options.execution == "inprocess" and job.inprocess is None:
        raise BenchConfigError(
            f"{job.tool} cannot run in-process; use execution 'subprocess' or 'container'"
        )
    inventory = _inventory(options)
    context = options.context
    if context is None and options.simulated_host is not None:
        context = CallerContext()  # this machine's own CUDA variables say nothing there
    target: Literal["container", "local"] = (
        "container" if options.execution == "container" else "local"
    )
    host = host_for(
        inventory,
        nvml=options.nvml,
        lease_dir=options.lease_dir,
        docker_host=options.docker_host,
    )
    routed = host.route(
        options.gpus,
        options=PlanOptions(target=target, local_ids=job.local_ids),
        lease=options.lease,
        terms=LeaseTerms(wait_s=options.lease_wait_s),
        context=context,
    )
    plan, lease = routed.plan, routed.lease
    state = _RunState(host)
    try:
        if job.parallel_tool is not None:
            job.tensor_parallel_size = check_parallelism(
                plan, job.parallel_tool, job.tensor_parallel_size, job.pipeline_parallel_size or 1
            )
        if target == "local" and plan.devices:
            plan.local_env  # noqa: B018 - raises ContextError if a parent mask forbids it
        return _run(job, options, plan, lease, inventory, state)
    finally:
        # A lease goes only once its work has surely ended: if stopping it failed, the lease
        # stays with the work (launch bound it to the work) and ends when the work does.
        if state.handle is None or state.stopped:
            routed.release()


def _run(
    job: Job,
    options: RunOptions,
    plan: RoutingPlan,
    lease: Lease | None,
    inventory: Inventory,
    state: _RunState,
) -> Result:
    started_at = now()
    own_workdir = options.workdir is None
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="gpuroute-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(workdir.stat().st_mode)  # as the umask made it, or as it was
    if options.execution == "container":
        # The container's user may not be root: it may write here while the run lasts. The
        # directory gets its own mode back when the run ends; it is never left world-writable.
        os.chmod(workdir, 0o777)  # noqa: S103
    owned: set[int] = {os.getpid()}

    def own_pids() -> Iterable[int]:
        # A running union: workers that have exited (or were re-parented) stay the run's own.
        if state.handle is not None:
            owned.update(state.handle.pids())
        return set(owned)

    monitor = EnergyMonitor(
        plan.devices,
        nvml=options.nvml,
        interval_s=options.energy_interval_s,
        idle_baseline_s=options.idle_baseline_s,
        own_pids=own_pids,
    )
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    logs = ""
    collected: Collected | None = None
    wall_start = time.time()
    try:
        for name in job.outputs:
            (workdir / name).unlink(missing_ok=True)
        job.prepare(workdir)
        if options.progress is not None:
            options.progress(_starting(job, options.execution, plan))
        monitor.start()
        try:
            logs, code = _launch(job, options, plan, lease, workdir, state)
        finally:
            monitor.stop()
        if code != 0:
            status, error = "failed", f"{job.tool} exited with status {code}" + _last_lines(logs)
        try:
            collected = job.collect(workdir, logs)
        except GpurouteError as exc:
            if status == "ok":
                status, error = "failed", str(exc)
    except BenchConfigError:
        raise
    except Exception as exc:  # a failure of the benchmark is a result, never a crash
        status = "failed"
        error = str(exc) if isinstance(exc, GpurouteError) else f"{type(exc).__name__}: {exc}"
    finally:
        reading = monitor.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif options.execution == "container":
            with contextlib.suppress(OSError):
                os.chmod(workdir, mode)
    return _result(
        job,
        options,
        plan,
        lease,
        inventory,
        collected,
        reading,
        status,
        error,
        logs,
        started_at,
        (wall_start, time.time()),
        state.argv,
    )


def _last_lines(logs: str, n: int = 15) -> str:
    lines = [line for line in logs.strip().splitlines() if line.strip()]
    if not lines:
        return " (it printed nothing)"
    return "; its last lines:\n" + "\n".join(lines[-n:])


def _launch(
    job: Job,
    options: RunOptions,
    plan: RoutingPlan,
    lease: Lease | None,
    workdir: Path,
    state: _RunState,
) -> tuple[str, int]:
    """Run the job; return its logs and exit status."""
    env = {**job.env, **options.env}
    if options.simulated_host is not None:
        env[SIMULATED_ENV] = options.simulated_host
    if options.execution == "inprocess":
        assert job.inprocess is not None
        restore = _route_this_process(plan, env)
        try:
            job.inprocess(workdir)
        finally:
            restore()
        state.stopped = True
        return "", 0
    from gpuroute.backends import Work
    from gpuroute.backends.docker import DockerWork
    from gpuroute.backends.local import LocalWork

    container = options.execution == "container"
    where = MOUNT if container else str(workdir)
    state.argv = job.command(where)
    work: Work
    if container:
        docker_kwargs = {
            **job.container_kwargs,
            **options.docker_kwargs,
            "volumes": {
                **dict(options.docker_kwargs.get("volumes") or {}),
                str(workdir): {"bind": MOUNT, "mode": "rw"},
            },
        }
        if job.entrypoint is not None:
            docker_kwargs["entrypoint"] = job.entrypoint
        work = DockerWork(
            command=tuple(state.argv),
            env=env,
            verify=options.verify,
            image=options.image or job.default_image or "",
            docker_kwargs=docker_kwargs,
        )
    else:
        work = LocalWork(command=tuple(state.argv), env=env)
    handle = state.host.launch(work, gpus=plan, lease=lease if lease is not None else False)
    state.handle = handle
    try:
        if job.client_command is None:
            code = handle.wait(options.timeout_s)
            return handle.logs(), code
        _wait_until_serving(job, handle, options.timeout_s)
        client_logs, code = _client(job, handle, where, env, options.timeout_s)
        handle.stop()
        return handle.logs() + client_logs, code
    except LaunchTimeout:
        handle.stop()
        raise BenchTimeout(
            f"{job.tool} was still running after {options.timeout_s} s and was stopped; raise "
            "the time limit (--timeout) or shrink the workload"
        ) from None
    finally:
        handle.close()  # raises if the work cannot be stopped and removed
        state.stopped = True


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.cuda.is_initialized())


def _starting(job: Job, execution: str, plan: RoutingPlan) -> str:
    """One line: what a run is about to do (the tool's start and its run take a while)."""
    workload = job.workload
    model = "a tiny random model" if workload.load_format == "random_init" else workload.model
    requests = f"{workload.num_requests} prompts" if workload.num_requests else "its workload"
    gpus = ", ".join(d.label for d in plan.devices) or "none"
    return (
        f"{job.tool}: loading {model} and running {requests} ({execution}, GPUs: {gpus}); "
        "the summary follows when it ends ..."
    )


def _route_this_process(plan: RoutingPlan, env: Mapping[str, str]) -> Callable[[], None]:
    """Give this process the plan's GPUs, before CUDA starts: once it has, the devices a
    process sees cannot change, and a run would silently use the old ones. Returns what puts
    the environment back (the CUDA variables stay if CUDA started with them)."""
    wanted = dict(plan.local_env) if plan.devices else {"CUDA_VISIBLE_DEVICES": ""}
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    if _cuda_started() and current != wanted["CUDA_VISIBLE_DEVICES"]:
        raise BenchConfigError(
            "CUDA is already initialised in this process with CUDA_VISIBLE_DEVICES="
            f"{current!r}, and an in-process run cannot switch to {plan.spec!r}; use "
            "execution='subprocess' (the default) or 'container'"
        )
    changes = {**env, **wanted}
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)

    def restore() -> None:
        keep = set(wanted) if _cuda_started() else set()
        for key, value in saved.items():
            if key in keep:
                continue
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    return restore


def _wait_until_serving(job: Job, handle: Launch, timeout_s: float | None) -> None:
    """Wait for the server to say it serves; fail at once, with its output, if it exits."""
    deadline = time.monotonic() + (timeout_s or 1800.0)
    while time.monotonic() < deadline:
        logs = handle.logs()
        if SERVING in logs:
            return
        try:
            code = handle.wait(timeout=0.5)
        except LaunchTimeout:
            continue
        raise BenchError(
            f"the {job.runner} server exited with status {code} before serving"
            + _last_lines(handle.logs())
        )
    raise BenchTimeout(
        f"the {job.runner} server did not start serving within {timeout_s or 1800.0:.0f} s; "
        "raise the time limit (--timeout) if loading the model takes longer"
    )


def _client(
    job: Job, handle: Launch, where: str, env: Mapping[str, str], timeout_s: float | None
) -> tuple[str, int]:
    """Run a server benchmark's client next to the running server (in its container, so
    that it reaches the server on the loopback even without a network)."""
    import subprocess

    assert job.client_command is not None
    argv = job.client_command(where)
    from gpuroute.backends.docker import ContainerLaunch

    if isinstance(handle, ContainerLaunch):
        if timeout_s is not None:  # an exec has no time limit of its own
            argv = ["timeout", str(max(int(timeout_s), 1)), *argv]
        code, output = handle.exec(argv, env)
        return output, code
    completed = subprocess.run(
        argv,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return completed.stdout + completed.stderr, completed.returncode


def _result(
    job: Job,
    options: RunOptions,
    plan: RoutingPlan,
    lease: Lease | None,
    inventory: Inventory,
    collected: Collected | None,
    reading: EnergyReading,
    status: Literal["ok", "failed"],
    error: str | None,
    logs: str,
    started_at: str,
    wall: tuple[float, float],
    argv: list[str],
) -> Result:
    from gpuroute.version import __version__

    wall_start, wall_end = wall
    routing = _routing(job, plan, options, lease)
    notes: list[str] = []
    if collected is not None:
        seen, planned = collected.cuda_visible_devices, routing.cuda_visible_devices
        if seen is not None and planned is not None and seen != planned and status == "ok":
            status, error = (
                "failed",
                (
                    f"the benchmark saw CUDA_VISIBLE_DEVICES={seen!r}, not the plan's {planned!r}: "
                    "something between gpuroute and the program changed it (an entrypoint "
                    "script, or the image's environment); its figures are not those GPUs'"
                ),
            )
        if seen is not None:
            routing.cuda_visible_devices = seen
        if collected.cuda_device_order is not None:
            routing.cuda_device_order = collected.cuda_device_order
        tokens, throughput, latency = collected.tokens, collected.throughput, collected.latency
        window = collected.window
        if window is not None and (window[0] < wall_start - 1.0 or window[1] > wall_end + 1.0):
            # A report's time from another clock (a network file system, a remote engine).
            notes.append("window_outside_the_run:clamped")
            window = (max(window[0], wall_start), min(window[1], wall_end))
        energy = reading.energy(
            *(window or (None, None)), includes=collected.includes, excludes=collected.excludes
        )
        timing = Timing(
            measured_window=collected.measured_window,
            duration_s=collected.duration_s,
            start_unix_s=window[0] if window else None,
            end_unix_s=window[1] if window else None,
        )
    else:
        tokens, throughput, latency = Tokens(), Throughput(), Latency()
        energy = reading.energy(includes=["whole_run"])
        timing = Timing(measured_window="whole_run", duration_s=wall_end - wall_start)
    if energy.method != "none":
        energy = derive_energy(energy, tokens)
    if notes:
        energy = energy.model_copy(update={"warnings": [*energy.warnings, *notes]})
    memory = reading.memory()
    if collected is not None and collected.peak_process_allocated_mib is not None:
        memory = Memory(
            per_gpu=memory.per_gpu,
            peak_process_allocated_mib=collected.peak_process_allocated_mib,
        )
    isolation = reading.isolation()
    environment = Environment(
        driver_version=inventory.driver_version,
        gpu_names=[d.gpu.name + (f" MIG {d.mig.profile}" if d.mig else "") for d in plan.devices],
        hostname=socket.gethostname(),
        python_version=platform.python_version(),
        gpuroute_version=__version__,
        framework_versions=dict(collected.framework_versions) if collected else {},
        device=collected.device if collected else None,
        simulated_host=options.simulated_host,
    )
    native_path = collected.native_report_path if collected and options.workdir else None
    return Result(
        run_id=str(uuid.uuid4()),
        status=status,
        error=error,
        started_at=started_at,
        ended_at=now(),
        runner=RunnerInfo(
            name=job.runner,
            mode=job.mode,
            execution=options.execution,
            tool=job.tool,
            tool_version=collected.tool_version if collected else None,
            image=(options.image or job.default_image)
            if options.execution == "container"
            else None,
            entrypoint=job.entrypoint if options.execution == "container" else None,
            argv=argv or [sys.executable, "-c", "<in-process>"],
            native_report_path=native_path,
        ),
        routing=routing,
        workload=job.workload,
        timing=timing,
        tokens=tokens,
        throughput=throughput,
        latency=latency,
        energy=energy,
        memory=memory,
        environment=environment,
        isolation=isolation,
        labels=dict(options.labels),
        native_report=collected.native_report if collected else None,
        native_log_tail=_tail(logs),
        notes=collected.notes if collected else [],
    )


def read_report(path: Path, tool: str, parse: Callable[..., Parsed], **context: Any) -> Collected:
    """A tool's native report, read and parsed (``parse(report, source=path, **context)``).

    The tool reports only how long its timed region lasted, and writes its report right
    after it: the window ends at the report file's modification time and lasts the reported
    duration, so model loading and warm-up before it are left out of the energy."""
    report = load_native_report(path, tool)
    parsed = parse(report, source=path, **context)
    end = path.stat().st_mtime
    duration = parsed.duration_s
    window = (end - duration, end) if duration is not None else None
    return Collected(
        tokens=parsed.tokens,
        throughput=parsed.throughput,
        latency=parsed.latency,
        duration_s=duration,
        window=window,
        includes=["benchmark"],
        excludes=["model_load", "warmup"] if window else [],
        measured_window="benchmark" if window else "whole_run",
        native_report=report,
        native_report_path=str(path),
        tool_version=parsed.tool_version,
        notes=list(parsed.notes),
    )
