"""``gpuroute.Host``: what an orchestrator creates once and keeps, and the one route of every
request.

A host holds the inventory (read once; re-read when NVML reports another layout, or on
``refresh()``), the caller's context, the connection to the engine (kept open between
launches), the lease directory, the limits policy and the retry policy. ``plan``,
``acquire`` and ``launch`` all go through ``route``: the one place that decides "just plan"
or "take a lease, and plan exactly its devices", with the spec parsed once. A launch then
goes to one backend (``gpuroute.backends``), which binds the lease to the work before the
work can run.

This module and ``gpuroute.nvml`` are the only readers of the environment: the core never is.
The module-level ``gpuroute.plan``, ``gpuroute.acquire`` and ``gpuroute.launch`` use a
default host (``default_host()``), one per set of relevant environment variables.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuroute.backends import Backend, Connection, Launch, Work, backend_class, unbound
from gpuroute.core.closing import Closing
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.core.plan import LocalIds, RoutingPlan
from gpuroute.core.resolution import Target, resolve
from gpuroute.core.selection import HostState, Need
from gpuroute.core.spec import Kind, ParsedSpec, SpecInput, parse_spec
from gpuroute.errors import VerificationError
from gpuroute.leases import Acquisition, Lease, LeaseDir
from gpuroute.limits import Policy
from gpuroute.records import Holder

if TYPE_CHECKING:
    from gpuroute.backends.docker import RetryPolicy
    from gpuroute.kernel_log import KernelLog, KernelLogState
    from gpuroute.nvml import NVMLApi

__all__ = [
    "INVENTORY_ENV",
    "Host",
    "LeaseTerms",
    "PlanOptions",
    "Routed",
    "caps_option",
    "close_default_hosts",
    "default_host",
    "default_inventory",
    "host_for",
    "detect_context",
    "reads_live_state",
]

INVENTORY_ENV = "GPUROUTE_INVENTORY"
"""Names a snapshot file that replaces the live NVML inventory (remote planning, demos, tests)."""

_CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


def default_inventory(environ: Mapping[str, str] | None = None) -> Inventory:
    """The snapshot named by ``GPUROUTE_INVENTORY`` if it is set, else the live NVML inventory."""
    env = os.environ if environ is None else environ
    path = env.get(INVENTORY_ENV, "").strip()
    if path:
        return Inventory.load(path)
    from gpuroute.nvml import read_inventory

    return read_inventory()


def reads_live_state(
    inventory_given: bool, nvml: object = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether the live state (processes, memory, health) is to be read for the inventory in
    use: when an NVML is passed in, or when the inventory is this host's own (none given and
    no ``GPUROUTE_INVENTORY``). A snapshot may be another host's: this host's NVML says
    nothing about it."""
    env = os.environ if environ is None else environ
    return nvml is not None or not (inventory_given or env.get(INVENTORY_ENV, "").strip())


def detect_context(environ: Mapping[str, str] | None = None, *, root: str = "/") -> CallerContext:
    """Read the caller's context once: the parent ``CUDA_VISIBLE_DEVICES`` mask and
    ``CUDA_DEVICE_ORDER`` as set (unset stays None), and whether this process runs in a
    container (``/.dockerenv``, podman's ``/run/.containerenv``, or a ``container`` variable).
    """
    env = os.environ if environ is None else environ
    base = Path(root)
    in_container = bool(env.get("container")) or any(
        (base / marker.lstrip("/")).exists() for marker in _CONTAINER_MARKERS
    )
    return CallerContext(
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        cuda_device_order=env.get("CUDA_DEVICE_ORDER"),
        in_container=in_container,
    )


# -- what a request says ------------------------------------------------------------------


def caps_option(driver_capabilities: Iterable[str] | None) -> tuple[str, ...] | None:
    """The caller's driver capabilities as a tuple, or None for "not chosen"."""
    if driver_capabilities is None:
        return None
    if isinstance(driver_capabilities, str):
        return tuple(driver_capabilities.split(","))
    return tuple(driver_capabilities)


@dataclass(frozen=True)
class PlanOptions:
    """How a spec is resolved, beyond the spec itself (see ``gpuroute.plan``)."""

    target: Target | None = None
    allow_multiple_mig: bool = False
    driver_capabilities: tuple[str, ...] | None = None
    """None: the default, and what the work declares is kept (``RoutingPlan``)."""
    local_ids: LocalIds = "uuid"
    allow_unhealthy: bool = False
    """Route to named devices that are known to be unhealthy (``any:N`` never picks one)."""


@dataclass(frozen=True)
class LeaseTerms:
    """How a lease is taken (see ``gpuroute.acquire``): its TTL, how long to wait for taken
    devices, the filters of ``any:N``, and its first holder (default: this process)."""

    ttl_s: float | None = None
    wait_s: float = 0.0
    need: Need = field(default_factory=lambda: Need(0))
    holder: Holder | None = None


@dataclass
class Routed:
    """A routed request: the plan, and the lease that holds its devices when there is one
    (``own``: taken for this request, so released with it)."""

    plan: RoutingPlan
    lease: Lease | None = None
    own: bool = False

    def bind(self, holder: Holder) -> None:
        """Name the work's holder in the lease (nothing without one)."""
        if self.lease is not None:
            self.lease.bind(holder)

    def release(self) -> None:
        """Give back a lease taken for this request."""
        if self.lease is not None and self.own:
            self.lease.release()


# -- the host -----------------------------------------------------------------------------


_CHOSEN_MAX = 256
"""Plans a host remembers for the devices ``any:N`` chose."""


class Host(Closing):
    """A GPU host as an orchestrator holds it: created once, kept, and shared by requests.

    Args:
        inventory: the host's GPUs (default: ``GPUROUTE_INVENTORY``'s snapshot, else NVML,
            read on first use). A given inventory is never re-read.
        nvml: an NVML module to read through (default ``pynvml``; a ``FakeNVML`` in tests).
        context: the caller's context (default: read from the environment once).
        docker_host / docker_client / retry: the engine, as for ``gpuroute.launch``; the
            connection is opened on first use and kept until ``close()``.
        lease_dir: the lease directory (default: ``GPUROUTE_LEASE_DIR``, else
            ``/run/gpuroute/leases``).
        policy: a limits ``Policy`` of the caller's (default: ``GPUROUTE_POLICY``'s file);
            it only tightens the administrator's ``/etc/gpuroute/policy.yaml``, which binds
            every user. Files are read again when they change.
        state: the live state to choose devices by (default: read through NVML at each
            acquisition, for this host's own inventory).
        recheck_s: how often ``plan`` asks NVML whether the layout (GPUs, MIG devices)
            changed and reads the devices' health, at most; ``acquire`` always does.
            0: every call.
        kernel_log: where to read Xids that NVML no longer delivers (default:
            ``GPUROUTE_KERNEL_LOG``, else ``/dev/kmsg`` when reading the real NVML; none for
            a given NVML, such as ``FakeNVML``, unless named here).
        environ: the environment to read defaults from (default ``os.environ``).
    """

    def __init__(
        self,
        *,
        inventory: Inventory | None = None,
        nvml: NVMLApi | Any = None,
        context: CallerContext | None = None,
        docker_host: str | None = None,
        docker_client: Any = None,
        retry: RetryPolicy | None = None,
        lease_dir: str | os.PathLike[str] | None = None,
        policy: Policy | None = None,
        state: HostState | None = None,
        recheck_s: float = 1.0,
        environ: Mapping[str, str] | None = None,
        kernel_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.nvml = nvml
        self.kernel_log = kernel_log
        self._kernel: KernelLog | None = None
        self.environ = environ
        self.lease_dir = lease_dir
        self.state = state
        self.recheck_s = recheck_s
        self.connection = Connection(docker_host, docker_client, retry, environ)
        self._given_inventory = inventory
        self._given_policy = policy
        self._inventory: Inventory | None = inventory
        self._layout: tuple[tuple[str, ...], ...] | None = None
        self._checked = 0.0
        self._snapshot_key: tuple[str, int, int] | None = None
        self._context: CallerContext | None = context
        self._policy: tuple[tuple[object, ...], Policy] | None = None
        self._backends: dict[str, Backend] = {}
        self._recent_state: tuple[float, HostState] | None = None
        self._owns_backends = True
        self._lock = threading.Lock()
        self._chosen: dict[tuple[object, ...], tuple[Inventory, RoutingPlan]] = {}

    def using(
        self,
        *,
        inventory: Inventory | None = None,
        nvml: NVMLApi | Any = None,
        policy: Policy | None = None,
        state: HostState | None = None,
    ) -> Host:
        """A host like this one with another inventory, NVML, policy or live state, sharing
        this one's engine connections (closing it leaves them open)."""
        other = Host(
            inventory=inventory if inventory is not None else self._given_inventory,
            nvml=nvml if nvml is not None else self.nvml,
            context=self.context,  # read once, by this host: not again for each request
            lease_dir=self.lease_dir,
            policy=policy if policy is not None else self._given_policy,
            state=state if state is not None else self.state,
            recheck_s=self.recheck_s,
            environ=self.environ,
            kernel_log=self.kernel_log,
        )
        other.connection = self.connection
        other._backends = self._backends
        other._owns_backends = False
        return other

    # -- what the host knows --------------------------------------------------------------

    def _env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    @property
    def snapshot(self) -> str | None:
        """The snapshot file in use instead of NVML (``GPUROUTE_INVENTORY``), if any."""
        if self._given_inventory is not None:
            return None
        return self._env().get(INVENTORY_ENV, "").strip() or None

    @property
    def live(self) -> bool:
        """Whether this host's live state is read through NVML: for its own inventory, or
        when an NVML is given; never for a given inventory or a snapshot alone."""
        return self.nvml is not None or (self._given_inventory is None and self.snapshot is None)

    @property
    def inventory(self) -> Inventory:
        """The inventory, read on first use and kept (see ``refresh``)."""
        return self._current_inventory(check=False)

    def _current_inventory(self, *, check: bool) -> Inventory:
        if self._given_inventory is not None:
            return self._given_inventory
        snapshot = self.snapshot
        if snapshot is not None:
            return self._snapshot_inventory(snapshot)
        from gpuroute.nvml import layout_of, read_inventory, read_layout

        with self._lock:
            now = time.monotonic()
            if self._inventory is not None and self._snapshot_key is None:
                if not check and now - self._checked < self.recheck_s:
                    return self._inventory
                layout = read_layout(self.nvml)
                self._checked = now
                if layout == self._layout:
                    return self._inventory
            self._inventory = read_inventory(self.nvml)
            self._layout = layout_of(self._inventory)
            self._snapshot_key = None
            self._checked = time.monotonic()
            return self._inventory

    def _snapshot_inventory(self, path: str) -> Inventory:
        try:
            info = os.stat(path)
            key: tuple[str, int, int] | None = (path, info.st_mtime_ns, info.st_size)
        except OSError:
            key = None  # Inventory.load names the problem
        with self._lock:
            if key is None or key != self._snapshot_key or self._inventory is None:
                self._inventory = Inventory.load(path)
                self._snapshot_key = key
            return self._inventory

    def refresh(self) -> Inventory:
        """Read the inventory anew (a given inventory stays as given)."""
        with self._lock:
            self._snapshot_key = None
            if self._given_inventory is None:
                self._inventory = None
        return self._current_inventory(check=True)

    @property
    def context(self) -> CallerContext:
        if self._context is None:
            self._context = detect_context(self.environ)
        return self._context

    @property
    def policy(self) -> Policy:
        """The limits policy that binds the caller: the administrator's
        (``/etc/gpuroute/policy.yaml``), tightened by the caller's own (as given, else
        ``GPUROUTE_POLICY``'s file), read again when either file changes."""
        from gpuroute.limits import DEFAULT_POLICY, POLICY_ENV, binding_policy, file_key

        caller_path = "" if self._given_policy is not None else self._env().get(POLICY_ENV, "")
        key = (
            file_key(DEFAULT_POLICY),
            file_key(caller_path) if caller_path else None,
            id(self._given_policy),
        )
        if self._policy is None or self._policy[0] != key or (caller_path and key[1] is None):
            self._policy = (key, binding_policy(self._given_policy, self._env()))
        return self._policy[1]

    def live_state(self, inventory: Inventory, *, topology: bool = True) -> HostState:
        """The live state to choose devices by (processes, memory, health; with
        ``topology``, the distances between GPUs)."""
        if self.state is not None:
            return self.state
        if not self.live:
            return HostState.unknown()  # a snapshot: only leases say what is free
        from gpuroute.health import observe
        from gpuroute.nvml import read_state

        state = read_state(inventory, self.nvml, topology=topology)
        kernel = self.kernel_log_state()
        state = observe(
            inventory, state, kernel=kernel, lease_dir=self.lease_dir, environ=self.environ
        )
        self._recent_state = (time.monotonic(), state)
        return state

    def _state_for_plan(self) -> HostState:
        """The live state as last read, if it is more recent than ``recheck_s``; else read
        anew. A plan sees a GPU that became unhealthy within ``recheck_s``; an acquisition
        always reads the state."""
        recent = self._recent_state
        if recent is not None and time.monotonic() - recent[0] < self.recheck_s:
            return recent[1]
        return self.live_state(self.inventory, topology=False)

    def kernel_log_state(self) -> KernelLogState | None:
        """The Xids the kernel log holds since boot (read on, from where this host stopped),
        or None where this host reads no kernel log (see ``kernel_log``)."""
        from gpuroute.kernel_log import DEFAULT_KERNEL_LOG, KERNEL_LOG_ENV, KernelLog

        with self._lock:
            if self._kernel is None:
                path = self.kernel_log or self._env().get(KERNEL_LOG_ENV, "").strip() or None
                if path is None and self.nvml is None:
                    path = DEFAULT_KERNEL_LOG
                if path is None:
                    return None
                self._kernel = KernelLog(path)
            kernel = self._kernel
        return kernel.poll()

    def _check_health(self, plan: RoutingPlan, options: PlanOptions) -> None:
        """Refuse a plan naming a device known to be unhealthy, unless allowed."""
        if options.allow_unhealthy or not plan.devices or not (self.live or self.state):
            return
        from gpuroute.errors import UnhealthyDeviceError

        state = self._state_for_plan()
        for device in plan.devices:
            problems = state.problems_of(device)
            if problems:
                raise UnhealthyDeviceError(
                    f"{device.describe()} is unhealthy: {'; '.join(problems)}. Choose another "
                    "device, pass allow_unhealthy=True (`--allow-unhealthy`) to use it anyway, "
                    f"or clear a mark that no longer applies (`gpuroute health clear "
                    f"{device.label}`)",
                    spec=plan.spec,
                )

    # -- backends -------------------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        """This host's instance of the backend called ``name`` (created on first use)."""
        found = self._backends.get(name)
        if found is None:
            found = self._backends[name] = backend_class(name)(self.connection)
        return found

    def alive(self, holder: Holder) -> bool | None:
        """Whether a lease holder lives, as its own backend says; None for an unknown one."""
        try:
            backend = self.backend(holder.backend)
        except LookupError:
            return None
        return backend.alive(holder)

    # -- the route ------------------------------------------------------------------------

    def route(
        self,
        spec: SpecInput | RoutingPlan,
        *,
        options: PlanOptions = PlanOptions(),
        lease: bool | Lease = False,
        terms: LeaseTerms = LeaseTerms(),
        context: CallerContext | None = None,
    ) -> Routed:
        """The one route of every request: a plan, or a lease and the plan of its devices.

        ``lease=True`` takes a lease (``spec`` may then be ``any:N``); a ``Lease`` already
        held is used as it is; ``False`` only plans. The spec is parsed once, here.
        """
        if isinstance(lease, Lease):
            return Routed(lease.plan, lease, own=False)
        if isinstance(spec, RoutingPlan):
            if not lease:
                self._check_health(spec, options)
                return Routed(spec)  # routed already
            spec = spec.spec
        parsed = parse_spec(spec)
        context = context if context is not None else self.context
        if not lease:
            plan = self._resolve(parsed, self.inventory, context, options)
            self._check_health(plan, options)
            return Routed(plan)
        taken = self._acquire(parsed, context, options, terms)
        return Routed(taken.plan, taken, own=True)

    @staticmethod
    def _resolve(
        spec: ParsedSpec | str, inventory: Inventory, context: CallerContext, options: PlanOptions
    ) -> RoutingPlan:
        return resolve(
            spec,
            inventory,
            context=context,
            target=options.target,
            allow_multiple_mig=options.allow_multiple_mig,
            driver_capabilities=options.driver_capabilities,
            local_ids=options.local_ids,
        )

    def _acquire(
        self, spec: ParsedSpec, context: CallerContext, options: PlanOptions, terms: LeaseTerms
    ) -> Lease:
        from gpuroute.backends.local import process_holder

        inventory = self._current_inventory(check=True) if self.live else self.inventory
        acquisition = Acquisition(
            spec=spec,
            plan=lambda s: self._resolve_chosen(s, inventory, context, options),
            inventory=inventory,
            directory=LeaseDir(self.lease_dir, environ=self.environ),
            policy=self.policy,
            context=context,
            need=terms.need,
            holder=terms.holder or process_holder(),
            alive=self.alive,
            ttl_s=terms.ttl_s,
            local_only_target=options.target == "local",
        )

        def state() -> HostState:
            found = self.live_state(inventory)
            named = not any(t.kind is Kind.ANY for t in spec.tokens)
            if options.allow_unhealthy and named:  # any:N never picks an unhealthy device
                found = replace(
                    found, devices={u: replace(d, problems=()) for u, d in found.devices.items()}
                )
            return found

        if terms.wait_s <= 0:
            return acquisition.once(state())
        import tenacity

        from gpuroute.errors import DeviceLeasedError, NoFreeDeviceError

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(terms.wait_s),
            wait=tenacity.wait_exponential(multiplier=0.005, max=0.5),
            retry=tenacity.retry_if_exception_type((NoFreeDeviceError, DeviceLeasedError)),
            reraise=True,
        )
        # The live state is read anew at each try: processes end.
        return retrying(lambda: acquisition.once(state()))

    # -- the three doors ------------------------------------------------------------------

    def _resolve_chosen(
        self,
        spec: ParsedSpec | str,
        inventory: Inventory,
        context: CallerContext,
        options: PlanOptions,
    ) -> RoutingPlan:
        """``_resolve``, remembered for the devices ``any:N`` chose (given as a string of
        labels): an acquisition of ``any:1`` leases the same few devices again and again, and
        their plan is a pure function of the labels, the inventory, the context and the
        options (a plan is immutable). A request's own spec is parsed and resolved once, and
        not remembered."""
        if not isinstance(spec, str):
            return self._resolve(spec, inventory, context, options)
        key = (spec, id(inventory), context, options)
        hit = self._chosen.get(key)
        if hit is not None and hit[0] is inventory:  # the same inventory, not one at its address
            return hit[1]
        plan = self._resolve(spec, inventory, context, options)
        if len(self._chosen) >= _CHOSEN_MAX:
            self._chosen.clear()
        self._chosen[key] = (inventory, plan)
        return plan

    def plan(
        self,
        spec: SpecInput,
        *,
        context: CallerContext | None = None,
        target: Target | None = None,
        allow_multiple_mig: bool = False,
        driver_capabilities: Iterable[str] | None = None,
        local_ids: LocalIds = "uuid",
        allow_unhealthy: bool = False,
    ) -> RoutingPlan:
        """Resolve a spec into a RoutingPlan, as ``gpuroute.plan`` does, on this host."""
        options = PlanOptions(
            target, allow_multiple_mig, caps_option(driver_capabilities), local_ids, allow_unhealthy
        )
        return self.route(spec, options=options, context=context).plan

    def acquire(
        self,
        request: SpecInput,
        *,
        ttl_s: float | None = None,
        wait_s: float = 0.0,
        context: CallerContext | None = None,
        target: Target | None = None,
        min_free_mib: int | None = None,
        model: str | None = None,
        mig_profile: str | None = None,
        allow_multiple_mig: bool = False,
        driver_capabilities: Iterable[str] | None = None,
        local_ids: LocalIds = "uuid",
        pid: int | None = None,
        allow_unhealthy: bool = False,
    ) -> Lease:
        """Lease devices on this host, as ``gpuroute.acquire`` does."""
        from gpuroute.backends.local import process_holder

        options = PlanOptions(
            target, allow_multiple_mig, caps_option(driver_capabilities), local_ids, allow_unhealthy
        )
        terms = LeaseTerms(
            ttl_s=ttl_s,
            wait_s=wait_s,
            need=Need(0, min_free_mib, model, mig_profile),
            holder=process_holder(pid),
        )
        routed = self.route(request, options=options, lease=True, terms=terms, context=context)
        assert routed.lease is not None
        return routed.lease

    def launch(
        self,
        work: Work,
        *,
        gpus: SpecInput | RoutingPlan,
        context: CallerContext | None = None,
        options: PlanOptions = PlanOptions(),
        lease: bool | Lease = False,
        terms: LeaseTerms = LeaseTerms(),
    ) -> Launch:
        """Start ``work`` (a ``LocalWork``, ``DockerWork`` or ``ComposeWork``) on exactly the
        GPUs ``gpus`` names, through its backend. ``gpuroute.launch`` is this with keywords.
        """
        backend = self.backend(work.backend)
        options = replace(options, target=backend.target)
        routed = self.route(gpus, options=options, lease=lease, terms=terms, context=context)
        try:
            handle = backend.start(
                routed.plan, work, routed.bind if routed.lease is not None else unbound
            )
        except BaseException:
            routed.release()
            raise
        if routed.lease is not None:
            handle.hold(routed.lease, own=routed.own)
        if work.verify:
            try:
                backend.verify(handle)
            except VerificationError:
                with contextlib.suppress(Exception):  # close() below stops it, if this fails
                    handle.kill()  # it runs on GPUs it was not given: no grace period
                handle.close()
                raise
            except BaseException:
                handle.close()
                raise
        return handle

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the backends' connections (work already started goes on)."""
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            kernel.close()
        if not self._owns_backends:
            return
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()


# -- the default host ---------------------------------------------------------------------

_DEFAULT_KEYS = (
    INVENTORY_ENV,
    "GPUROUTE_LEASE_DIR",
    "GPUROUTE_POLICY",
    "GPUROUTE_KERNEL_LOG",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "container",
)
_defaults: dict[tuple[object, ...], Host] = {}
_defaults_lock = threading.Lock()
_MAX_DEFAULTS = 8


def default_host(
    *,
    docker_host: str | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Host:
    """The host the module-level ``gpuroute.plan``, ``acquire`` and ``launch`` use: one per
    engine, lease directory and retry policy given, and per value of the environment
    variables that choose what a host reads, so that a change of ``DOCKER_HOST`` or
    ``GPUROUTE_INVENTORY`` is honoured at once. Like any host, its ``plan`` asks NVML for
    the layout and the devices' health at most once a second (``recheck_s``); an
    acquisition always asks."""
    key = (
        docker_host,
        str(lease_dir) if lease_dir is not None else None,
        retry,
        *(os.environ.get(name) for name in _DEFAULT_KEYS),
    )
    with _defaults_lock:
        host = _defaults.get(key)
        if host is None:
            while len(_defaults) >= _MAX_DEFAULTS:
                _defaults.pop(next(iter(_defaults))).close()
            host = _defaults[key] = Host(docker_host=docker_host, lease_dir=lease_dir, retry=retry)
        return host


def close_default_hosts() -> None:
    """Close and forget the default hosts, so that the next module-level call reads the
    inventory, the caller's context and the NVML module anew (the pytest plugin does this
    when it installs a ``FakeNVML``)."""
    with _defaults_lock:
        hosts = list(_defaults.values())
        _defaults.clear()
    for host in hosts:
        host.close()


def host_for(
    inventory: Inventory | None = None,
    *,
    nvml: NVMLApi | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
    state: HostState | None = None,
    docker_host: str | None = None,
    docker_client: Any = None,
    retry: RetryPolicy | None = None,
) -> Host:
    """The default host for the call's engine and lease directory, with the call's own
    inventory, NVML, policy or live state where it gives them. A caller's docker-py client
    gets a host of its own (the caller keeps the client)."""
    if docker_client is not None:
        return Host(
            inventory=inventory,
            nvml=nvml,
            lease_dir=lease_dir,
            policy=policy,
            state=state,
            docker_host=docker_host,
            docker_client=docker_client,
            retry=retry,
        )
    host = default_host(docker_host=docker_host, lease_dir=lease_dir, retry=retry)
    if inventory is None and nvml is None and policy is None and state is None:
        return host
    return host.using(inventory=inventory, nvml=nvml, policy=policy, state=state)
