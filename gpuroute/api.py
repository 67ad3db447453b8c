"""The module-level doors, ``gpuroute.plan``, ``gpuroute.acquire`` and ``gpuroute.launch``:
thin functions over a ``Host`` (the default one, or one made for the call's own inventory,
engine or lease directory). Everything they do, a ``Host`` does; see ``gpuroute.host``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpuroute.backends import Launch, Work
from gpuroute.backends.docker import Pull, RetryPolicy
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.core.plan import LocalIds, RoutingPlan
from gpuroute.core.resolution import Target
from gpuroute.core.selection import HostState, Need
from gpuroute.core.spec import SpecInput
from gpuroute.errors import LaunchError
from gpuroute.host import LeaseTerms, PlanOptions, caps_option, host_for
from gpuroute.leases import Lease
from gpuroute.limits import Policy

__all__ = ["acquire", "launch", "plan"]


def plan(
    spec: SpecInput,
    inventory: Inventory | None = None,
    *,
    context: CallerContext | None = None,
    target: Target | None = None,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] | None = None,
    local_ids: LocalIds = "uuid",
    allow_unhealthy: bool = False,
) -> RoutingPlan:
    """Resolve a GPU spec into a RoutingPlan.

    Args:
        spec: ``"3,1"``, ``"GPU-8932f937"``, ``"MIG-…"``, ``"0:1"``, ``"0000:18:00.0"``,
            ``"all"``, ``"none"``/``""``/None, or a list of ints and strings.
        inventory: the host's GPUs; by default the snapshot named by ``GPUROUTE_INVENTORY``,
            else the live NVML inventory.
        context: the caller's context; by default ``detect_context()`` reads it once.
        target: ``"local"`` makes a request outside the parent ``CUDA_VISIBLE_DEVICES``
            mask fail now; otherwise that is recorded and raised by ``plan.local_env``.
        allow_multiple_mig: permit several MIG devices for one process (driver R570+).
        driver_capabilities: ``NVIDIA_DRIVER_CAPABILITIES`` for the container runtime;
            by default ``compute,utility`` where the work (a compose service, an image)
            declares none, and what it declares where it does.
        local_ids: ``"uuid"`` (default) or ``"index"`` for ``plan.local_env``.
        allow_unhealthy: plan a device known to be unhealthy (an Xid, ECC errors, lost)
            rather than raise ``UnhealthyDeviceError``. Health is known for this host's own
            inventory only (not a given inventory or a snapshot).

    Raises:
        SpecError, ResolutionError (and its subclasses), ContextError, InventoryError,
        UnhealthyDeviceError: all subclasses of GpurouteError, each naming the offending input.
    """
    options = PlanOptions(
        target, allow_multiple_mig, caps_option(driver_capabilities), local_ids, allow_unhealthy
    )
    return host_for(inventory).route(spec, options=options, context=context).plan


def acquire(
    request: SpecInput,
    *,
    inventory: Inventory | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    ttl_s: float | None = None,
    state: HostState | None = None,
    nvml: Any = None,
    policy: Policy | None = None,
    context: CallerContext | None = None,
    target: Target | None = None,
    min_free_mib: int | None = None,
    model: str | None = None,
    mig_profile: str | None = None,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] | None = None,
    local_ids: LocalIds = "uuid",
    pid: int | None = None,
    wait_s: float = 0.0,
    allow_unhealthy: bool = False,
) -> Lease:
    """Lease devices: the ones a spec names, or ``any:N`` free ones chosen for you.

    Args:
        request: a spec (``"3,1"``, ``"1:0"``) or ``"any:N"``.
        inventory: the host's GPUs (default: ``GPUROUTE_INVENTORY``, else NVML).
        lease_dir: the lease directory (default: ``GPUROUTE_LEASE_DIR``, else
            ``/run/gpuroute/leases``).
        ttl_s: the lease ends by itself after this many seconds.
        state / nvml: the live state (processes, memory, health) used to pick and check
            devices; by default read through NVML (``nvml`` may be a ``FakeNVML``), and
            unknown on a host without NVML (then only leases decide what is free).
        policy: a ``gpuroute.limits.Policy`` of the caller's (default: ``GPUROUTE_POLICY``'s
            file): it only tightens the administrator's ``/etc/gpuroute/policy.yaml``, which
            binds every user; each limit is the stricter of the two.
        min_free_mib, model, mig_profile: filters for ``any:N``.
        pid: the process the lease lives with (default: this one).
        wait_s: while the devices are taken (NoFreeDeviceError, DeviceLeasedError), try
            again for up to this many seconds before raising.
        allow_unhealthy: lease devices the spec names even when known to be unhealthy
            (``any:N`` never picks one).

    Raises:
        NoFreeDeviceError, DeviceLeasedError, UnhealthyDeviceError, LimitExceededError,
        LeaseDirError, and the errors of ``gpuroute.plan``.
    """
    host = host_for(inventory, nvml=nvml, lease_dir=lease_dir, policy=policy, state=state)
    return host.acquire(
        request,
        ttl_s=ttl_s,
        wait_s=wait_s,
        context=context,
        target=target,
        min_free_mib=min_free_mib,
        model=model,
        mig_profile=mig_profile,
        allow_multiple_mig=allow_multiple_mig,
        driver_capabilities=driver_capabilities,
        local_ids=local_ids,
        pid=pid,
        allow_unhealthy=allow_unhealthy,
    )


def launch(
    command: Sequence[str],
    *,
    gpus: SpecInput,
    image: str | None = None,
    compose_service: str | None = None,
    compose_files: Sequence[str | os.PathLike[str]] | None = None,
    inventory: Inventory | None = None,
    env: Mapping[str, str] | None = None,
    context: CallerContext | None = None,
    verify: bool = False,
    cdi: bool = False,
    torchrun: bool = False,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] | None = None,
    local_ids: LocalIds = "uuid",
    docker_host: str | None = None,
    docker_client: Any = None,
    retry: RetryPolicy | None = None,
    pull: Pull = "missing",
    name: str | None = None,
    compose: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stream: bool = False,
    docker_kwargs: Mapping[str, Any] | None = None,
    lease: bool | Lease = False,
    lease_dir: str | os.PathLike[str] | None = None,
    ttl_s: float | None = None,
    lease_wait_s: float = 0.0,
    allow_unhealthy: bool = False,
    nvml: Any = None,
) -> Launch:
    """Start ``command`` on exactly the GPUs ``gpus`` names.

    Args:
        command: argv as a list (no shell is ever used); may be empty for a container, to
            run the image's own command.
        gpus: a GPU spec, as for ``gpuroute.plan``.
        image: run in a container of this image, through docker-py.
        compose_service / compose_files: run this service with ``compose run --rm``; the
            files default to ``compose.yaml`` (and friends) in ``cwd``. ``compose`` picks the
            binary (default: ``docker compose`` if present, else ``docker-compose``).
        inventory / context: as for ``gpuroute.plan`` (defaults read from the host).
        env: variables for the work. gpuroute owns CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER,
            NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES; setting them is an error.
            The caller's own CUDA_*/NVIDIA_* variables never reach a container.
        verify: after start, compare ``nvidia-smi -L`` inside the container with the plan;
            on a mismatch the container is killed at once (no grace period: it runs on GPUs
            it was not given) and removed, and VerificationError raised.
        cdi: request devices by CDI name (``nvidia.com/gpu=<UUID>``) instead of the
            ``nvidia`` driver (engines with CDI enabled).
        torchrun: local only; run ``command`` under torchrun, one worker per planned GPU.
        docker_host: the engine (default: DOCKER_HOST, else the local socket).
        docker_client: a docker-py ``DockerClient`` to use instead of opening a connection
            (``image=`` launches); the caller keeps it open.
        retry: how transient engine failures are retried (default: RetryPolicy()).
        pull: ``"missing"`` pulls an image that is not on the engine; ``"never"`` does not.
        name: the container's name (default: a unique ``gpuroute-…`` name).
        stream: local and compose only; let the work print to this process's stdout and
            stderr instead of capturing it for ``logs()``.
        docker_kwargs: more keyword arguments for ``containers.create`` (``volumes``,
            ``network_mode``, ``shm_size``, ...).
        lease: ``True`` acquires a lease on the devices first (``gpus`` may then be
            ``"any:N"``) and releases it when the work ends and the handle closes; a
            ``Lease`` already held is used as it is (and not released). The lease lives with
            the work: its process, or its container, named in the lease before the work can
            run (``handle.detach()`` leaves a container running with its lease, freed when
            the container is gone).
        lease_dir / ttl_s / lease_wait_s: as ``lease_dir``, ``ttl_s`` and ``wait_s`` of
            ``gpuroute.acquire``.
        allow_unhealthy: start on devices known to be unhealthy (an Xid, ECC errors, a lost
            GPU) rather than raise ``UnhealthyDeviceError``; with or without a lease.
        nvml: an NVML module to read the host through (a ``FakeNVML`` in tests).

    Returns:
        A LocalLaunch, ContainerLaunch or ComposeLaunch. As a context manager it stops and
        removes what it started.
    """
    work = _work(
        command,
        image=image,
        compose_service=compose_service,
        compose_files=compose_files,
        compose=compose,
        env=env,
        verify=verify,
        name=name,
        cwd=cwd,
        stream=stream,
        torchrun=torchrun,
        cdi=cdi,
        pull=pull,
        docker_kwargs=docker_kwargs,
    )
    host = host_for(
        inventory,
        nvml=nvml,
        lease_dir=lease_dir,
        docker_host=docker_host,
        docker_client=docker_client,
        retry=retry,
    )
    options = PlanOptions(
        None, allow_multiple_mig, caps_option(driver_capabilities), local_ids, allow_unhealthy
    )
    terms = LeaseTerms(ttl_s=ttl_s, wait_s=lease_wait_s, need=Need(0))
    return host.launch(work, gpus=gpus, context=context, options=options, lease=lease, terms=terms)


def _env(env: object) -> dict[str, str]:
    """``env`` as a dict of names to values, checked: a list or a string is never guessed at
    (``dict(["AB"])`` is ``{"A": "B"}``), and names and values are strings the OS can take."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise LaunchError(
            f"env must be a mapping of names to values, not a {type(env).__name__}: write "
            "env={'NAME': 'value'} (a list such as ['NAME=value'] is not read)"
        )
    variables: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str):
            raise LaunchError(f"env has a key of type {type(key).__name__}: names must be strings")
        if not key or "=" in key or "\0" in key:
            raise LaunchError(
                f"env key {key!r} is not a variable name: a name is not empty and has no '=' "
                "and no NUL character"
            )
        if not isinstance(value, str):
            raise LaunchError(
                f"env[{key!r}] is of type {type(value).__name__}: values must be strings "
                "(write the value in quotes)"
            )
        if "\0" in value:
            raise LaunchError(f"env[{key!r}] contains a NUL character, which no variable can hold")
        variables[key] = value
    return variables


def _work(
    command: Sequence[str],
    *,
    image: str | None,
    compose_service: str | None,
    compose_files: Sequence[str | os.PathLike[str]] | None,
    compose: Sequence[str] | None,
    env: Mapping[str, str] | None,
    verify: bool,
    name: str | None,
    cwd: str | os.PathLike[str] | None,
    stream: bool,
    torchrun: bool,
    cdi: bool,
    pull: Pull,
    docker_kwargs: Mapping[str, Any] | None,
) -> Work:
    """The ``Work`` a ``launch`` call describes: local, docker or compose, by its keywords."""
    from gpuroute.backends.compose import ComposeWork
    from gpuroute.backends.docker import DockerWork
    from gpuroute.backends.local import LocalWork

    if isinstance(command, str | bytes):
        raise LaunchError(
            f"command must be a list of arguments, not the string {command!r}; gpuroute never "
            "runs a shell (write ['sh', '-c', '...'] if you need one)"
        )
    argv = tuple(command)
    variables = _env(env)
    if image is not None and compose_service is not None:
        raise LaunchError("give either image= or compose_service=, not both")
    if image is None and compose_service is None:
        if not argv:
            raise LaunchError("a local launch needs a command")
        if verify:
            raise LaunchError(
                "verify=True checks what a container sees with nvidia-smi; a local process "
                "sees exactly what its CUDA_VISIBLE_DEVICES (plan.local_env) names"
            )
        return LocalWork(
            command=argv, env=variables, name=name, cwd=cwd, stream=stream, torchrun=torchrun
        )
    if torchrun:
        raise LaunchError(
            "torchrun=True is for local launches; in a container, run torchrun as the command"
        )
    if compose_service is not None:
        return ComposeWork(
            command=argv,
            env=variables,
            verify=verify,
            name=name,
            service=compose_service,
            files=tuple(compose_files) if compose_files is not None else None,
            compose=tuple(compose) if compose is not None else None,
            cwd=cwd,
            stream=stream,
        )
    assert image is not None
    return DockerWork(
        command=argv,
        env=variables,
        verify=verify,
        name=name,
        image=image,
        pull=pull,
        cdi=cdi,
        docker_kwargs=dict(docker_kwargs or {}),
    )
