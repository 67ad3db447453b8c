"""The compose backend: ``compose run --rm`` of one service on a generated configuration,
its handle, its verification, and whether a compose service's container still exists.

Why a whole generated file and not a small override: Compose merges list settings across
files by appending, so an override cannot take away a ``count: all`` reservation that the
user's file makes; the container would get two device requests and, depending on the
engine's path, every GPU. gpuroute therefore reads the service's effective configuration
(``compose config``, which merges the user's files and interpolates variables), replaces the
GPU settings of the one service it runs, and hands Compose that configuration alone, with
the project name and directory of the user's files. Settings it cannot override safely
(``privileged: true``, GPU device nodes in ``devices:``) are refused, naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from gpuroute.backends.base import Bind, Launch, Work, unbound
from gpuroute.backends.docker import (
    Engine,
    EngineBackend,
    check_seen,
    init_process,
    nvidia_smi_evidence,
    request_capabilities,
)
from gpuroute.backends.env import (
    OWNED,
    gpu_majors,
    gpu_node_at,
    is_gpu_device_node,
    merge_env,
    opens_gpu_devices,
    strip_gpu_vars,
)
from gpuroute.backends.local import ProcessLaunch, process_alive, process_start_time
from gpuroute.core.plan import RoutingPlan
from gpuroute.errors import ComposeConflictError, EngineError, LaunchError
from gpuroute.records import Holder

__all__ = [
    "COMPOSE_V1",
    "COMPOSE_V2",
    "ComposeBackend",
    "ComposeLaunch",
    "ComposeRun",
    "ComposeWork",
    "WORKDIR_PREFIX",
    "dependencies",
    "find_compose",
    "prepare",
    "remove_stale_workdirs",
    "resolve_files",
]

COMPOSE_V2 = ("docker", "compose")
COMPOSE_V1 = ("docker-compose",)
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


def find_compose(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Compose v2 (``docker compose``) if the docker CLI has it, else ``docker-compose``: the
    first on PATH, Compose v1 or a standalone Compose v2+ binary of that name."""
    env = dict(os.environ if environ is None else environ)
    if shutil.which("docker", path=env.get("PATH")):
        probe = subprocess.run([*COMPOSE_V2, "version"], capture_output=True, env=env, check=False)
        if probe.returncode == 0:
            return COMPOSE_V2
    if shutil.which("docker-compose", path=env.get("PATH")):
        return COMPOSE_V1
    raise LaunchError(
        "neither Compose v2 (`docker compose`) nor Compose v1 (`docker-compose`) is installed"
    )


@dataclass
class ComposeRun:
    """A prepared ``compose run``: its argv, the generated file, and what was replaced."""

    argv: list[str]
    base: list[str]
    """The compose command with the project and the generated file, before ``run``."""
    service: str
    env: dict[str, str]
    file: Path
    container_name: str
    notes: list[str] = field(default_factory=list)
    project: str = ""
    dependencies: tuple[str, ...] = ()
    """The services this run starts with its own (none was running before): no GPU each,
    stopped and removed when the launch ends."""

    def twin_argv(self, entrypoint: str, *args: str) -> list[str]:
        """``compose run`` of the same service and configuration with another command, without
        starting the services it depends on."""
        return [
            *self.base,
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "--entrypoint",
            entrypoint,
            self.service,
            *args,
        ]

    def cleanup(self) -> None:
        shutil.rmtree(self.file.parent, ignore_errors=True)


def _is_gpu_request(device: Mapping[str, Any]) -> bool:
    caps = device.get("capabilities") or []
    flat = [c for group in caps for c in (group if isinstance(group, list) else [group])]
    ids = [str(i) for i in device.get("device_ids") or []]
    return (
        device.get("driver") in ("nvidia", "cdi")
        or "gpu" in flat
        or any(i.startswith("nvidia.com/") for i in ids)
    )


def _origins(files: Sequence[Path], service: str) -> Callable[[Sequence[str]], str]:
    """Names the last of the user's files that sets a key of the service (the one that
    wins). The files are read once, when a first conflict is reported."""
    import yaml

    services: list[tuple[Path, Any]] = []

    def origin(path: Sequence[str]) -> str:
        if not services:
            for file in files:
                try:
                    data = yaml.safe_load(file.read_text()) or {}
                except (OSError, yaml.YAMLError):
                    continue
                services.append((file, (data.get("services") or {}).get(service)))
        found = None
        for file, node in services:
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node not in (None, [], {}):
                found = file
        return (
            str(found) if found else f"the effective configuration of {', '.join(map(str, files))}"
        )

    return origin


def _project_name(config: Mapping[str, Any], files: Sequence[Path], env: Mapping[str, str]) -> str:
    name = env.get("COMPOSE_PROJECT_NAME") or config.get("name") or files[0].resolve().parent.name
    return re.sub(r"[^a-z0-9_-]", "", str(name).lower()) or "default"


def _run_compose(argv: list[str], env: Mapping[str, str], cwd: Path) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, env=dict(env), cwd=cwd, check=False
    )
    if result.returncode != 0:
        raise LaunchError(
            f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def _effective(
    compose: Sequence[str], files: Sequence[Path], env: Mapping[str, str], cwd: Path
) -> dict[str, Any]:
    import yaml

    argv = [*compose]
    for file in files:
        argv += ["-f", str(file)]
    try:
        out = _run_compose([*argv, "config"], env, cwd)
    except LaunchError as exc:
        raise (_v1_refusal(str(exc), files) or exc) from None
    data = yaml.safe_load(out)
    if not isinstance(data, dict):
        raise LaunchError(f"compose printed no configuration for {', '.join(map(str, files))}")
    return data


# Compose v1 (docker-compose 1.x) validates files against its own, older schema: it rejects
# keys that came with Compose v2 and the compose specification, which v2 reads.
_V1_NO_GPUS = re.compile(r"Unsupported config option for services\.([^\s:]+): 'gpus'")
_V1_NO_NAME = re.compile(r"'name' does not match any of the regexes: '\^x-'")


def _v1_refusal(message: str, files: Sequence[Path]) -> LaunchError | None:
    """A clear error for a file Compose v1 cannot read because it uses a key of Compose v2
    (a service's ``gpus:``, a top-level ``name:``); None for any other failure."""
    shown = ", ".join(map(str, files))
    if m := _V1_NO_GPUS.search(message):
        return LaunchError(
            f"Compose v1 (`docker-compose` 1.x) cannot read the `gpus:` key of service "
            f"{m[1]!r} in {shown}: that key came with Compose v2. Run gpuroute with "
            "Compose v2 (`docker compose`, compose=('docker', 'compose')), or write the GPUs as "
            "`deploy.resources.reservations.devices`; gpuroute replaces either with the "
            "planned GPUs."
        )
    if _V1_NO_NAME.search(message):
        return LaunchError(
            f"Compose v1 (`docker-compose` 1.x) cannot read the top-level `name:` in {shown}: "
            "that key came with Compose v2. Run gpuroute with Compose v2 (`docker compose`, "
            "compose=('docker', 'compose')), or remove `name:` and set the project name "
            "with COMPOSE_PROJECT_NAME."
        )
    return None


def resolve_files(files: Sequence[str | os.PathLike[str]] | None, cwd: Path) -> list[Path]:
    if files:
        paths = [Path(f) if Path(f).is_absolute() else cwd / f for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise LaunchError(f"compose file not found: {', '.join(missing)}")
        return paths
    for name in DEFAULT_FILES:
        if (cwd / name).is_file():
            return [cwd / name]
    raise LaunchError(
        f"no compose file given and none of {', '.join(DEFAULT_FILES)} in {cwd}; pass "
        "compose_files=[...] (CLI: -f FILE)"
    )


def _shown(device: Mapping[str, Any]) -> dict[str, Any]:
    """A GPU request as a note shows it. Compose v2 prints `count: all` as -1, v1 as 'all'."""
    return {
        k: "all" if k == "count" and v == -1 else v
        for k, v in device.items()
        if k in ("count", "device_ids", "driver")
    }


def _shown_gpus(value: Any) -> Any:
    """A service's ``gpus:`` as a note shows it: Compose v2 prints ``gpus: all`` as
    ``[{count: -1}]``."""
    if not isinstance(value, list):
        return value
    shown = [_shown(d) if isinstance(d, Mapping) else d for d in value]
    return "all" if shown == [{"count": "all"}] else shown


def _bind_sources(svc: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The host paths a service bind-mounts: ``volumes`` of type bind (``SRC:DST[:MODE]``
    as Compose v1 prints them, mappings as v2 does), and named volumes that the local
    driver binds (``driver_opts: {o: bind, device: PATH}``)."""
    named = config.get("volumes") or {}
    sources: list[str] = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, Mapping):
            kind, source = str(volume.get("type", "")), str(volume.get("source") or "")
        else:
            source = str(volume).split(":", 1)[0]
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        if kind == "bind":
            sources.append(source)
        elif kind == "volume" and isinstance(named.get(source), Mapping):
            opts = named[source].get("driver_opts") or {}
            if "bind" in str(opts.get("o", "")).split(",") and opts.get("device"):
                sources.append(str(opts["device"]))
    return sources


def _refuse_device_access(
    svc: Mapping[str, Any],
    service: str,
    config: Mapping[str, Any],
    origin: Callable[[Sequence[str]], str],
    who: str | None = None,
) -> None:
    """Refuse what reaches GPUs past any device request: ``privileged``, GPU device nodes in
    ``devices`` or bind-mounted through ``volumes`` (judged by what they are, see
    ``gpuroute.backends.env``), and ``device_cgroup_rules`` that open NVIDIA's majors.
    ``who`` names the service in messages (default: ``service 'NAME'``)."""
    who = who or f"service {service!r}"
    if svc.get("privileged"):
        raise ComposeConflictError(
            f"{who} sets `privileged: true` in "
            f"{origin(['privileged'])}: a privileged container sees every "
            "GPU on the host whatever is requested, so gpuroute cannot pin it. Remove "
            "`privileged`, or grant the capabilities the service needs with `cap_add`."
        )
    majors = gpu_majors()
    gpu_nodes = [d for d in svc.get("devices") or [] if is_gpu_device_node(d, majors)]
    if gpu_nodes:
        raise ComposeConflictError(
            f"{who} maps GPU devices directly ({gpu_nodes}) in "
            f"{origin(['devices'])}: those reach the container whatever the "
            "plan says. Remove them and let gpuroute request the GPUs."
        )
    for source in _bind_sources(svc, config):
        node = gpu_node_at(source, majors)
        if node is not None:
            shown = "" if node == source else f", which holds the GPU device node {node}"
            raise ComposeConflictError(
                f"{who} bind-mounts {source!r}{shown} (`volumes` in "
                f"{origin(['volumes'])}): a GPU device node bound into a container can "
                "reach a GPU past the plan. Bind a directory that holds no device nodes, and "
                "let gpuroute request the GPUs."
            )
    for rule in svc.get("device_cgroup_rules") or []:
        if opens_gpu_devices(str(rule), majors):
            raise ComposeConflictError(
                f"{who} sets the device cgroup rule {rule!r} "
                f"(`device_cgroup_rules` in {origin(['device_cgroup_rules'])}), which opens "
                "NVIDIA's device nodes to the container past the plan. Remove it (or narrow "
                "it to other majors) and let gpuroute request the GPUs."
            )


def _environment(svc: Mapping[str, Any]) -> dict[str, Any]:
    """A service's ``environment`` as a mapping (Compose v1 may print a list)."""
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        return {
            str(e).partition("=")[0]: (str(e).partition("=")[2] if "=" in str(e) else None)
            for e in environment
        }
    return dict(environment)


def _direct_dependencies(svc: Mapping[str, Any]) -> dict[str, str]:
    """The services ``compose run`` starts because this one needs them, each with the
    setting that pulls it in: ``depends_on``, ``links``, ``volumes_from`` and the
    ``service:NAME`` forms of ``network_mode``, ``ipc`` and ``pid``."""
    found: dict[str, str] = {}
    depends = svc.get("depends_on") or []
    for name in depends.keys() if isinstance(depends, Mapping) else depends:
        found.setdefault(str(name), "depends_on")
    for link in svc.get("links") or []:
        found.setdefault(str(link).split(":", 1)[0], "links")
    for source in svc.get("volumes_from") or []:
        text = str(source.get("source", "")) if isinstance(source, Mapping) else str(source)
        if text.startswith("container:"):
            continue
        found.setdefault(text.removeprefix("service:").split(":", 1)[0], "volumes_from")
    for key in ("network_mode", "ipc", "pid"):
        value = str(svc.get(key) or "")
        if value.startswith("service:"):
            found.setdefault(value.removeprefix("service:"), f"{key}: {value}")
    return found


def dependencies(services: Mapping[str, Any], service: str) -> dict[str, str]:
    """Every service that ``compose run SERVICE`` starts with it, directly or through
    another, each with how it is pulled in (``depends_on``, ``network_mode: service:db``,
    ``volumes_from`` of ``'cache'``, ...)."""
    found: dict[str, str] = {}
    pending = [service]
    while pending:
        current = pending.pop(0)
        for name, how in _direct_dependencies(services.get(current) or {}).items():
            if name == service or name in found or name not in services:
                continue
            found[name] = how if current == service else f"{how} of {current!r}"
            pending.append(name)
    return found


_NO_GPU_VALUES = (None, "", "void", "none")


def _gpu_asks(svc: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """How a service asks for GPUs: (the setting as shown, its key path)."""
    asks: list[tuple[str, list[str]]] = []
    if "gpus" in svc:
        asks.append((f"`gpus: {_shown_gpus(svc['gpus'])}`", ["gpus"]))
    path = ["deploy", "resources", "reservations", "devices"]
    reservations = ((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    for device in reservations.get("devices") or []:
        if _is_gpu_request(device):
            asks.append((f"the GPU reservation {_shown(device)}", path))
    if svc.get("runtime") == "nvidia":
        asks.append(("`runtime: nvidia`", ["runtime"]))
    visible = _environment(svc).get("NVIDIA_VISIBLE_DEVICES")
    if visible not in _NO_GPU_VALUES:
        asks.append((f"`NVIDIA_VISIBLE_DEVICES={visible}`", ["environment"]))
    return asks


def _isolate_dependency(
    svc: dict[str, Any],
    name: str,
    how: str,
    service: str,
    config: Mapping[str, Any],
    files: Sequence[Path],
) -> str:
    """A service started with the one gpuroute runs gets no GPU: refuse it if it asks for
    any (or reaches device nodes), else set ``NVIDIA_VISIBLE_DEVICES=void`` for it (an image
    that bakes ``all`` under a default ``nvidia`` runtime would get every GPU). The note."""
    origin = _origins(files, name)
    who = f"service {name!r}, which `compose run {service}` starts with it ({how}),"
    _refuse_device_access(svc, name, config, origin, who)
    asks = _gpu_asks(svc)
    if asks:
        shown, path = asks[0]
        raise ComposeConflictError(
            f"{who} asks for GPUs with {shown} in {origin(path)}: gpuroute gives GPUs only "
            f"to the service it runs ({service!r}), so that one would get GPUs past the "
            f"plan. Remove the GPU request from {name!r}, or remove the dependency, or start "
            f"{name!r} yourself before the launch (gpuroute leaves a service that is already "
            "running as it is)."
        )
    environment = _environment(svc)
    environment["NVIDIA_VISIBLE_DEVICES"] = "void"
    svc["environment"] = environment
    return (
        f"service {name!r} starts with {service!r} ({how}) and gets no GPU "
        "(NVIDIA_VISIBLE_DEVICES=void); it is stopped and removed when the launch ends"
    )


def container_run_env(plan: RoutingPlan) -> dict[str, str]:
    """The plan's variables for a compose container: ``NVIDIA_DRIVER_CAPABILITIES`` only
    when the caller chose it; otherwise the service's or its image's own stands (the
    toolkit's default, ``compute,utility``, where neither declares any)."""
    env = dict(plan.container_run_env)
    if not plan.capabilities_given:
        del env["NVIDIA_DRIVER_CAPABILITIES"]
    return env


def _rewrite_service(
    svc: dict[str, Any],
    plan: RoutingPlan,
    files: Sequence[Path],
    service: str,
    config: Mapping[str, Any],
) -> list[str]:
    """Replace the service's GPU settings with the plan's; return notes on what changed."""
    notes: list[str] = []
    origin = _origins(files, service)
    _refuse_device_access(svc, service, config, origin)
    if "gpus" in svc:
        notes.append(
            f"replaced `gpus: {_shown_gpus(svc['gpus'])}` from {origin(['gpus'])} with the "
            "planned devices"
        )
        del svc["gpus"]
    reservations = (
        svc.setdefault("deploy", {}).setdefault("resources", {}).setdefault("reservations", {})
    )
    kept = []
    for device in reservations.get("devices") or []:
        if _is_gpu_request(device):
            where = origin(["deploy", "resources", "reservations", "devices"])
            notes.append(f"replaced the GPU reservation {_shown(device)} from {where}")
        else:
            kept.append(device)
    environment = _environment(svc)
    declared = environment.get("NVIDIA_DRIVER_CAPABILITIES")
    caps = plan.driver_capabilities if plan.capabilities_given else ()
    if plan.devices:
        kept.append(
            {
                "driver": "nvidia",
                "device_ids": list(plan.uuids),
                # Driver capabilities here would reach the container after its own
                # NVIDIA_DRIVER_CAPABILITIES, and win: only the caller's choice goes here.
                "capabilities": request_capabilities(caps),
            }
        )
    if kept:
        reservations["devices"] = kept
    else:
        reservations.pop("devices", None)
    where = origin(["environment"])
    for key in sorted((OWNED - {"NVIDIA_DRIVER_CAPABILITIES"}) & environment.keys()):
        notes.append(f"replaced `{key}` in the service's environment (from {where})")
    environment = {k: v for k, v in environment.items() if k not in OWNED}
    environment.update(container_run_env(plan))
    if plan.capabilities_given:
        chosen = ",".join(plan.driver_capabilities)
        if declared not in (None, chosen):
            notes.append(
                f"NVIDIA_DRIVER_CAPABILITIES: {declared} (from {where}) -> {chosen} "
                "(driver_capabilities=)"
            )
    elif declared is not None:
        environment["NVIDIA_DRIVER_CAPABILITIES"] = declared
        notes.append(f"kept NVIDIA_DRIVER_CAPABILITIES={declared} from {where}")
    svc["environment"] = environment
    if svc.get("runtime") == "nvidia":
        notes.append("the service uses `runtime: nvidia`; its NVIDIA_VISIBLE_DEVICES is the plan's")
    return notes


def prepare(
    plan: RoutingPlan,
    service: str,
    command: Sequence[str],
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    compose: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    container_name: str | None = None,
    running: Callable[[str], Iterable[str]] | None = None,
) -> ComposeRun:
    """Generate the compose file and argv that run ``command`` in ``service`` on exactly the
    planned GPUs. ``env`` adds variables inside the container; ``environ`` is the environment
    Compose itself runs with (default ``os.environ``), less its CUDA_*/NVIDIA_* variables.

    The services that ``compose run`` starts with ``service`` (``depends_on``, ``links``,
    ``volumes_from``, ``network_mode``/``ipc``/``pid: service:NAME``) get no GPU, or the
    launch is refused if one asks for GPUs. ``running(project)`` names the project's
    services already running: those are left as they are (not rewritten, not stopped)."""
    import yaml

    here = Path(cwd) if cwd is not None else Path.cwd()
    paths = resolve_files(files, here)
    compose = tuple(compose) if compose else find_compose(environ)
    clean = strip_gpu_vars(os.environ if environ is None else environ)
    config = _effective(compose, paths, clean, here)
    services = config.get("services") or {}
    if service not in services:
        raise LaunchError(
            f"no service {service!r} in {', '.join(map(str, paths))}; services: "
            f"{', '.join(sorted(services)) or 'none'}"
        )
    notes = _rewrite_service(services[service], plan, paths, service, config)
    project = _project_name(config, paths, clean)
    needed = dependencies(services, service)
    up = set(running(project)) if needed and running is not None else set()
    started = tuple(name for name in needed if name not in up)
    for name in needed:
        if name in up:
            notes.append(f"service {name!r} ({needed[name]}) was already running: left as it is")
        else:
            notes.append(
                _isolate_dependency(services[name], name, needed[name], service, config, paths)
            )
    name = container_name or f"gpuroute-{project}-{service}-{os.urandom(5).hex()}"
    remove_stale_workdirs()
    me = os.getpid()
    since = process_start_time(me) or 0  # 0: unknown (no /proc)
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{me}-{since}-"))
    generated = workdir / "compose.gpuroute.yml"
    generated.write_text(yaml.safe_dump(config, sort_keys=False))
    container_env = merge_env(env, container_run_env(plan))
    base = [
        *compose,
        "-p",
        project,
        "--project-directory",
        str(paths[0].resolve().parent),
        "-f",
        str(generated),
    ]
    try:
        _check_generated(base, clean, here, service, plan, started)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    argv = [*base, "run", "--rm", "-T", "--name", name]
    for key in container_env:
        # The name only: Compose takes the value from its own environment, so that no value
        # (a token, a password) shows on the command line, which every local user can read.
        argv += ["-e", key]
    argv += [service, *command]
    return ComposeRun(
        argv,
        base,
        service,
        {**clean, **container_env},
        generated,
        name,
        notes,
        project=project,
        dependencies=started,
    )


WORKDIR_PREFIX = "gpuroute-compose-"
"""The generated configuration's directory, ``gpuroute-compose-PID-START-RANDOM`` in the
temporary directory: the launcher that made it, and when that process started."""


def remove_stale_workdirs(root: str | None = None) -> list[str]:
    """Remove the generated-configuration directories whose launcher is gone (killed before
    it could clean up); return their names. Only this user's own directories are touched, a
    link is never followed, and a directory whose launcher may live (its pid answers and
    started when the name says, or the name does not say) is left alone."""
    root = root if root is not None else tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(WORKDIR_PREFIX):
            continue
        pid_text, _, rest = name[len(WORKDIR_PREFIX) :].partition("-")
        start_text, _, _ = rest.partition("-")
        if not (pid_text.isdigit() and start_text.isdigit()):
            continue  # an older name, or not ours to judge
        path = os.path.join(root, name)
        try:
            found = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
            continue
        launcher = Holder.process(int(pid_text), int(start_text) or None)
        if process_alive(launcher) is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _check_generated(
    base: list[str],
    env: Mapping[str, str],
    cwd: Path,
    service: str,
    plan: RoutingPlan,
    started: Sequence[str] = (),
) -> None:
    """Read the generated file back through Compose: the service must request exactly the
    planned devices, and nothing else that reaches GPUs; each service started with it must
    ask for none and have ``NVIDIA_VISIBLE_DEVICES=void``."""
    import yaml

    services = (yaml.safe_load(_run_compose([*base, "config"], env, cwd)) or {})["services"]
    for name in started:
        dep = services.get(name) or {}
        if (
            _gpu_asks(dep)
            or dep.get("privileged")
            or _environment(dep).get("NVIDIA_VISIBLE_DEVICES") != "void"
        ):
            raise ComposeConflictError(
                f"Compose did not take `NVIDIA_VISIBLE_DEVICES=void` and no GPU request for "
                f"service {name!r}, which starts with {service!r}"
            )
    svc = services[service]
    requests = [
        d
        for d in (svc.get("deploy") or {})
        .get("resources", {})
        .get("reservations", {})
        .get("devices")
        or []
        if _is_gpu_request(d)
    ]
    wanted = [list(plan.uuids)] if plan.devices else []
    got = [[str(i) for i in d.get("device_ids") or []] for d in requests]
    if (
        got != wanted
        or any("count" in d for d in requests)
        or svc.get("privileged")
        or ("gpus" in svc)
    ):
        raise ComposeConflictError(
            f"Compose did not take the planned GPUs for service {service!r}: it reads "
            f"{requests or 'no GPU request'}; expected {wanted or 'none'}"
        )


# -- the handle ---------------------------------------------------------------------------

_NOT_YET = object()


class ComposeLaunch(ProcessLaunch):
    """``compose run --rm`` of one service, on a generated configuration."""

    kind = "compose"

    def __init__(
        self,
        plan: RoutingPlan,
        run: ComposeRun,
        engine: Engine,
        *,
        cwd: Path,
        stream: bool,
        gated: bool = False,
        before: Mapping[str, bool] | None = None,
    ) -> None:
        self.run = run
        self.engine = engine
        self.cwd = cwd
        self.before = dict(before or {})
        """The project's containers before the launch: id -> whether it was running."""
        try:
            super().__init__(
                plan, run.argv, run.env, cwd=cwd, stream=stream, notes=run.notes, gated=gated
            )
        except LaunchError:
            run.cleanup()
            raise

    @property
    def id(self) -> str:
        return self.run.container_name

    def holder(self, container: Any = None) -> Holder:
        """The service's holder: its container by name, standing for it the compose client
        until the container runs, then the container's init process (where visible)."""
        init = init_process(self.engine, container) if container is not None else None
        pid, started = init or (self.process.pid, process_start_time(self.process.pid))
        return Holder("compose", self.run.container_name, self.engine.holder_where(), pid, started)

    def _container(self, action: Callable[[Any], None]) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            action(self.engine.client.containers.get(self.run.container_name))

    def wait_for_container(self, timeout: float, *, running: bool = False) -> Any:
        """The service's container once it exists (and runs, with ``running``), while the
        compose process lives; None if it does not appear within ``timeout`` seconds."""
        import docker.errors
        import tenacity

        def look() -> Any:
            if self.process.poll() is not None:
                return None  # compose has ended: the container will not appear
            try:
                container = self.engine.client.containers.get(self.run.container_name)
            except docker.errors.NotFound:
                return _NOT_YET
            return container if not running or container.status == "running" else _NOT_YET

        found = tenacity.Retrying(
            stop=tenacity.stop_after_delay(max(timeout, 0)),
            wait=tenacity.wait_fixed(0.05),
            retry=tenacity.retry_if_result(lambda result: result is _NOT_YET),
            retry_error_callback=lambda state: None,
        )(look)
        return None if found is _NOT_YET else found

    def dependency_containers(self) -> list[Any]:
        """The containers of the services this run started with its own (see
        ``ComposeRun.dependencies``), less any that ran before the launch."""
        if not self.run.dependencies:
            return []
        services = set(self.run.dependencies)
        found = self.engine.call(
            lambda: self.engine.client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={self.run.project}"}
            )
        )
        return [
            c
            for c in found
            if c.labels.get("com.docker.compose.service") in services
            and c.labels.get("com.docker.compose.oneoff") != "True"
            and not self.before.get(c.id, False)
        ]

    def stop(self, timeout: float = 10.0) -> None:
        try:
            if self.process.poll() is None:
                try:
                    # Stop the container; compose run then ends and removes it (--rm).
                    self._container(lambda c: c.stop(timeout=int(timeout)))
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout + 10)
                finally:
                    self.kill_group(timeout)
        finally:
            # The services started with it: compose run --rm leaves them running.
            import docker.errors

            for container in self.dependency_containers():
                try:
                    self.engine.call(partial(container.stop, timeout=int(timeout)))
                except EngineError as exc:
                    if not isinstance(exc.__cause__, docker.errors.NotFound):
                        raise

    def kill(self) -> None:
        """SIGKILL to the service's container; the services started with it (which were
        checked to see no GPU) get a normal stop."""
        import docker.errors

        try:
            if self.process.poll() is None:
                try:
                    with contextlib.suppress(docker.errors.APIError):  # it ended meanwhile
                        self._container(lambda c: c.kill())
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(10)
                finally:
                    self.kill_group(0)
        finally:
            self.stop()

    def remove(self) -> None:
        import docker.errors

        try:
            self._container(lambda c: c.remove(force=True))
        finally:
            # Only the containers this launch created: one that existed, stopped, before the
            # launch is left stopped.
            for container in self.dependency_containers():
                if container.id not in self.before:
                    with contextlib.suppress(docker.errors.NotFound):
                        container.remove(force=True)

    def cleanup(self) -> None:
        self.run.cleanup()
        super().cleanup()

    def verify(self) -> None:
        """``nvidia-smi -L`` inside the service's container must list exactly the plan; if
        the run ends before it can be entered, a twin run of the same configuration is
        checked instead."""
        deadline = time.monotonic() + 60
        while container := self.wait_for_container(deadline - time.monotonic(), running=True):
            seen = nvidia_smi_evidence(self.engine, container)
            if seen is not None:
                check_seen(self.plan, seen, f"compose container {self.run.container_name}")
                return
            time.sleep(0.05)  # it ended meanwhile: wait for compose to end, or try again
        twin = self.run.twin_argv("nvidia-smi", "-L")
        result = subprocess.run(
            twin, env=self.run.env, cwd=self.cwd, capture_output=True, text=True, check=False
        )
        check_seen(self.plan, result.stdout, f"a twin run of compose service {self.run.service!r}")


# -- the backend --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeWork(Work):
    """``compose run --rm`` of ``service`` with ``command`` (empty: the service's own).

    ``files`` default to ``compose.yaml`` (and friends) in ``cwd``; ``compose`` picks the
    binary (default: ``docker compose`` if present, else ``docker-compose``); ``stream``
    lets the work print to this process's output instead of capturing it for ``logs()``.
    """

    backend: ClassVar[str] = "compose"
    service: str = ""
    files: tuple[str | os.PathLike[str], ...] | None = None
    compose: tuple[str, ...] | None = None
    cwd: str | os.PathLike[str] | None = None
    stream: bool = False


class ComposeBackend(EngineBackend):
    name = "compose"
    target = "container"

    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        assert isinstance(work, ComposeWork)
        cwd = Path(work.cwd) if work.cwd is not None else Path.cwd()
        environ = dict(self.connection.env())
        if self.connection.docker_host:
            environ["DOCKER_HOST"] = self.connection.docker_host
        before: dict[str, bool] = {}

        def running(project: str) -> set[str]:
            """The project's services that run now; notes every container's state."""
            found = self.engine.call(
                lambda: self.engine.client.containers.list(
                    all=True, filters={"label": f"com.docker.compose.project={project}"}
                )
            )
            before.update({c.id: c.status == "running" for c in found})
            return {
                str(c.labels.get("com.docker.compose.service"))
                for c in found
                if c.status == "running" and c.labels.get("com.docker.compose.oneoff") != "True"
            }

        run = prepare(
            plan,
            work.service,
            list(work.command),
            files=work.files,
            compose=work.compose,
            env=work.env,
            environ=environ,
            cwd=cwd,
            container_name=work.name,
            running=running,
        )
        gated = bind is not unbound
        handle = ComposeLaunch(
            plan, run, self.engine, cwd=cwd, stream=work.stream, gated=gated, before=before
        )
        if not gated:
            return handle
        try:
            # The lease names the service's container and the compose client before the
            # client may start (it waits at the gate): a launcher killed at any moment leaves
            # either nothing running, or work that its lease names.
            bind(handle.holder())
            handle.open_gate()
            container = handle.wait_for_container(30, running=True)
            if container is not None:
                bind(handle.holder(container))
        except BaseException:
            handle.shut_gate()
            handle.close()
            raise
        return handle

    def verify(self, handle: Launch) -> None:
        assert isinstance(handle, ComposeLaunch)
        handle.verify()

    def alive(self, holder: Holder) -> bool | None:
        """Whether the service's container (by name) still exists, as the engine says; while
        it does not exist yet, whether the compose client that will create it lives; when
        the engine cannot be asked, whether the process standing for it (the client, then
        the container's init process) lives."""
        state = self.engine_says(holder)
        if state is True:
            return True
        if holder.pid is not None:
            return process_alive(holder)
        return state
