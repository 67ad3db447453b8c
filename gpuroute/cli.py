"""The ``gpuroute`` command.

    gpuroute ls [--json]                       the inventory, MIG devices nested
    gpuroute plan SPEC [--target T] [--json]   the routing plan for a spec, explained
    gpuroute inventory save FILE               write a snapshot of this host
    gpuroute leases | limits                   who holds which GPUs; your usage and limits
    gpuroute health [clear GPU...]             GPUs marked unhealthy by an Xid; clear marks
    gpuroute doctor [--image IMG]              check what launches depend on
    gpuroute run --gpus SPEC [--image IMG | --compose-service S [-f FILE]...] -- CMD...
                                               run a command on exactly those GPUs
    gpuroute demo [--spec SPEC]                an example plan and a pinned container, on the
                                               real GPUs or, with no NVIDIA driver, on a
                                               simulated host
    gpuroute topologies                        the built-in simulated hosts
    gpuroute ray resources [--json]            this host's `ray start` resources (GPUs not in
                                               MIG mode, one resource per MIG profile)
    gpuroute --version                         the installed version
    gpuroute bench transformers|vllm|trtllm …  an LLM benchmark on exactly the routed GPUs,
                                               energy measured on them (gpuroute.bench.cli)
    gpuroute campaign run FILE | report DIR    a grid of benchmarks, resumable, with plots

``--inventory FILE`` plans against a snapshot instead of ``GPUROUTE_INVENTORY`` or NVML.
``--simulate TOPOLOGY`` means the same on every command that takes it (``ls``, ``plan``,
``inventory save``, ``leases``, ``limits``, ``health``, ``doctor``, ``run``, ``demo``,
``bench``, ``campaign run``): the command runs against the whole built-in simulated host
(``gpuroute topologies``) -- its GPUs, a fake NVML, a lease directory of its own and, only
when the command needs containers, a private Docker Engine with a stand-in NVIDIA toolkit,
stopped and removed when the command ends (see ``gpuroute.testing.simhost``). User errors
print one line (``gpuroute: error: …``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from gpuroute.api import plan as make_plan
from gpuroute.cli_options import add_inventory_options, add_simulate_option, key_values
from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.selection import HostState
from gpuroute.core.table import format_table
from gpuroute.errors import GpurouteError

if TYPE_CHECKING:
    from gpuroute.leases import LeaseDir
    from gpuroute.records import LeaseRecord
    from gpuroute.testing.simhost import SimulatedHost
from gpuroute.host import INVENTORY_ENV, default_inventory

__all__ = ["main"]

EXIT_USER_ERROR = 2


def _inventory(args: argparse.Namespace, sim: SimulatedHost | None) -> Inventory:
    if sim is not None:
        return sim.inventory
    if args.inventory:
        return Inventory.load(args.inventory)
    return default_inventory()


def _lease_dir(args: argparse.Namespace, sim: SimulatedHost | None) -> str | None:
    """``--lease-dir``, else the simulated host's own lease directory, else the default."""
    given: str | None = args.lease_dir
    return given or (sim.lease_dir if sim is not None else None)


_BENCH_COMMANDS = ("bench", "campaign")


def _command_of(argv: Sequence[str]) -> str | None:
    """The command an argument list names: its first argument that is not an option (the
    ``gpuroute`` command's own options take no value)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the ``bench`` and ``campaign`` subcommands' own parsers (which import the
    benchmark package, and pydantic with it) only when ``command`` is one of them: for the
    others, and for ``--help``, a line each is enough."""
    parser = argparse.ArgumentParser(
        prog="gpuroute",
        description="Put work on exactly the GPUs you asked for.",
    )
    from gpuroute.version import __version__

    parser.add_argument("--version", action="version", version=f"gpuroute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", help="list GPUs and MIG devices")
    ls.add_argument("--json", action="store_true", help="print the snapshot document")
    ls.add_argument("--wide", action="store_true", help=_WIDE)
    add_inventory_options(ls)

    pl = sub.add_parser("plan", help="show the routing plan for a GPU spec")
    pl.add_argument("spec", metavar="SPEC", help="e.g. 3,1  GPU-8932f937  1:0  all  none")
    pl.add_argument(
        "--target",
        choices=["container", "local"],
        help="check the plan for this target now (local: the parent CUDA_VISIBLE_DEVICES mask)",
    )
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.add_argument("--wide", action="store_true", help=_WIDE)
    pl.add_argument(
        "--local-ids",
        choices=["uuid", "index"],
        default="uuid",
        help="id form of CUDA_VISIBLE_DEVICES for a local process (default: uuid)",
    )
    pl.add_argument(
        "--allow-multiple-mig",
        action="store_true",
        help="allow several MIG devices for one process (driver R570+)",
    )
    pl.add_argument(
        "--capabilities",
        default="compute,utility",
        help="NVIDIA_DRIVER_CAPABILITIES (default: compute,utility)",
    )
    pl.add_argument("--allow-unhealthy", action="store_true", help=_ALLOW_UNHEALTHY)
    add_inventory_options(pl)

    inv = sub.add_parser("inventory", help="inventory snapshots")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    save = inv_sub.add_parser("save", help="write a snapshot of this host's GPUs to FILE")
    save.add_argument("file", metavar="FILE")
    add_inventory_options(save)

    run = sub.add_parser(
        "run",
        help="run a command on exactly the given GPUs (locally, in a container, or compose)",
        description="Everything after -- is the command, passed as argv (no shell).",
    )
    run.add_argument("--gpus", required=True, metavar="SPEC", help="e.g. 3,1  1:0  none")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--image", metavar="IMAGE", help="run in a container of this image")
    where.add_argument("--compose-service", metavar="SERVICE", help="run this compose service")
    run.add_argument(
        "-f",
        "--file",
        dest="compose_files",
        action="append",
        metavar="FILE",
        help="compose file (repeatable; default: compose.yaml etc. in this directory)",
    )
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variable for the work (repeatable)",
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="check with nvidia-smi -L that the container sees exactly the plan",
    )
    run.add_argument(
        "--network", metavar="NET", help="container network mode (docker run --network)"
    )
    run.add_argument("--cdi", action="store_true", help="request devices by CDI name")
    run.add_argument(
        "--torchrun", action="store_true", help="local only: one torchrun worker per GPU"
    )
    run.add_argument(
        "--local-ids",
        choices=["uuid", "index"],
        default="uuid",
        help="id form of CUDA_VISIBLE_DEVICES for a local process",
    )
    run.add_argument("--explain", action="store_true", help="print the plan on stderr first")
    run.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments"
    )
    add_inventory_options(run)

    run.add_argument(
        "--lease", action="store_true", help="lease the GPUs for the run (--gpus may be any:N)"
    )
    run.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    run.add_argument("--allow-unhealthy", action="store_true", help=_ALLOW_UNHEALTHY)

    health = sub.add_parser("health", help="GPUs marked unhealthy by a critical Xid")
    health.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    health.add_argument("--json", action="store_true", help="print the marked GPUs as JSON")
    health.add_argument("--wide", action="store_true", help=_WIDE)
    health_sub = health.add_subparsers(dest="health_command", metavar="ACTION")
    health_clear = health_sub.add_parser(
        "clear", help="clear the marks of these GPUs (after a reset): later Xids count again"
    )
    health_clear.add_argument("gpus", nargs="+", metavar="GPU", help="an index or a UUID")
    add_inventory_options(health)

    leases = sub.add_parser("leases", help="list GPU leases on this host")
    leases.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    leases.add_argument("--json", action="store_true", help="print the records as JSON")
    leases.add_argument("--wide", action="store_true", help=_WIDE)
    add_inventory_options(leases)

    limits = sub.add_parser("limits", help="your GPU usage against your limits")
    limits.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    limits.add_argument(
        "--policy",
        metavar="FILE",
        help="a policy of your own: it only tightens the administrator's",
    )
    add_inventory_options(limits)

    doctor = sub.add_parser("doctor", help="check what GPU launches depend on, with fixes")
    doctor.add_argument("--image", help="also start a GPU container of this image")
    doctor.add_argument("--lease-dir", metavar="DIR", help="the lease directory")
    add_simulate_option(doctor)

    demo = sub.add_parser(
        "demo",
        help="an example plan and a pinned container, on this host or a simulated one",
    )
    demo.add_argument("--spec", help="the spec to plan (default: chosen for the host)")
    demo.add_argument("--image", help="on a real GPU host: also run nvidia-smi -L in this image")
    add_simulate_option(demo)

    topologies = sub.add_parser("topologies", help="list the built-in simulated hosts")
    topologies.add_argument("--json", action="store_true", help="print names and descriptions")

    ray = sub.add_parser("ray", help="gpuroute on a Ray cluster")
    ray_sub = ray.add_subparsers(dest="ray_command", required=True, metavar="COMMAND")
    ray_resources = ray_sub.add_parser(
        "resources",
        help="the `ray start` resources of this host: --num-gpus for GPUs not in MIG mode, "
        "a custom resource per MIG profile",
    )
    ray_resources.add_argument("--json", action="store_true")
    add_inventory_options(ray_resources)

    if command in _BENCH_COMMANDS:
        from gpuroute.bench.cli import add_parsers

        add_parsers(sub)
    else:
        from gpuroute.cli_options import BENCH_HELP, CAMPAIGN_HELP

        sub.add_parser("bench", help=BENCH_HELP, add_help=False)
        sub.add_parser("campaign", help=CAMPAIGN_HELP, add_help=False)
    return parser


_WIDE = "full UUIDs and every column, however wide (default: fit the terminal)"
_ALLOW_UNHEALTHY = "use named GPUs even if known to be unhealthy (an Xid, ECC errors)"


def _health(args: argparse.Namespace, inventory: Inventory, sim: SimulatedHost | None) -> int:
    from gpuroute.errors import GpurouteError as Error
    from gpuroute.health import HealthStore, clear
    from gpuroute.kernel_log import DEFAULT_KERNEL_LOG, KERNEL_LOG_ENV, KernelLog

    if args.health_command == "clear":
        uuids = []
        for token in args.gpus:
            found = make_plan(token, inventory).devices
            if len(found) != 1 or found[0].is_mig:
                raise Error(f"{token!r} is not one GPU: name a GPU by its index or UUID")
            uuids.append(found[0].uuid)
        kernel = None
        if sim is None:  # a simulated host's Xids are not in this machine's kernel log
            reader = KernelLog(os.environ.get(KERNEL_LOG_ENV, "").strip() or DEFAULT_KERNEL_LOG)
            state = reader.poll()
            reader.close()
            kernel = state if state.readable else None
        previous = clear(uuids, kernel=kernel, lease_dir=_lease_dir(args, sim))
        for token, record in zip(args.gpus, previous, strict=True):
            had = (
                ""
                if record is None or not record.unhealthy
                else " (it had " + ", ".join(f"Xid {m.xid}" for m in record.marks) + ")"
            )
            print(f"Cleared the health mark of GPU {token}{had}.")
        return 0
    directory = _existing_lease_dir(_lease_dir(args, sim), say=not args.json)
    if directory is None:
        if args.json:
            print("[]")
        return 0
    records, notes = HealthStore(directory).read()
    for note in notes:
        print(f"gpuroute: {note}", file=sys.stderr)
    rows = []
    for gpu in inventory.gpus:
        record = records.get(gpu.uuid)
        if record is not None and record.unhealthy:
            rows.append((str(gpu.index), gpu.uuid, "; ".join(m.describe() for m in record.marks)))
    if args.json:
        marked = [{"gpu": int(index), "uuid": uuid, "xids": xids} for index, uuid, xids in rows]
        print(json.dumps(marked, indent=2))
        return 0
    if not rows:
        print(f"No GPU is marked unhealthy in {_where(sim, directory)}.")
        return 0
    from gpuroute.core.table import short_ids
    from gpuroute.term import width

    if not args.wide:
        ids = short_ids(device.uuid for device in inventory.devices())
        rows = [(index, ids[uuid], xids) for index, uuid, xids in rows]
    fit = None if args.wide else width()
    print(format_table(("GPU", "UUID", "XIDS"), rows, max_width=fit, shrink=(2,)), end="\n")
    return 0


def _state_text(state: HostState | None, device: Device) -> str:
    if state is None or state.source == "none":
        return ""
    live = state.of(device.uuid)
    problems = state.problems_of(device)
    if problems:
        return "UNHEALTHY: " + "; ".join(problems)
    if live.pids:
        return f"busy: pid {', '.join(map(str, live.pids))}"
    return "idle"


def _ls(
    inventory: Inventory,
    state: HostState | None = None,
    *,
    wide: bool = False,
    width: int | None = None,
    colour: bool = False,
) -> str:
    """The inventory as a table. By default it fits ``width``: UUIDs shortened to unique
    prefixes (which specs accept), no PCI bus ids, long names and states cut; ``wide``
    shows everything in full."""
    if not inventory.gpus:
        return "No GPUs.\n"
    from gpuroute.core.table import short_ids
    from gpuroute.term import paint

    ids = (
        {d.uuid: d.uuid for d in inventory.devices()}
        if wide
        else short_ids(d.uuid for d in inventory.devices())
    )
    rows: list[tuple[str, ...]] = []
    unhealthy: set[int] = set()
    for g in inventory.gpus:
        if g.mig_compute_slices_total is None:
            mig = "n/a"
        else:
            mig = f"{'on' if g.mig_mode else 'off'} ({g.mig_compute_slices_total} slices)"
        devices = [(Device(g), str(g.index), g.pci_bus_id, g.name, g.memory_total_mib, mig)]
        devices.extend(
            (
                Device(g, m),
                f"  {g.index}:{m.index}",
                f"GI {m.gpu_instance_id} CI {m.compute_instance_id}",
                m.profile,
                m.memory_total_mib,
                f"{m.compute_slices}/{g.mig_compute_slices_total} slices",
            )
            for m in g.mig_devices
        )
        for device, label, where, name, memory, slices in devices:
            status = _state_text(state, device)
            if status.startswith("UNHEALTHY"):
                unhealthy.add(len(rows))
            cells: tuple[str, ...] = (
                label,
                ids[device.uuid],
                where,
                name,
                _mib(memory),
                slices,
                status,
            )
            rows.append(cells if wide else cells[:2] + cells[3:])
    headers: tuple[str, ...] = ("GPU", "UUID", "PCI BUS ID", "NAME", "MEMORY", "MIG", "STATE")
    if not wide:
        headers = headers[:2] + headers[3:]
    table = format_table(
        headers,
        rows,
        max_width=None if wide else width,
        shrink=() if wide else (2, 5),  # NAME and STATE
    ).split("\n")
    for i in unhealthy:
        table[i + 1] = paint(table[i + 1], "fail", colour)
    driver = inventory.driver_version or "unknown"
    return "\n".join(table) + f"\n\nDriver {driver}; {len(inventory.gpus)} GPU(s).\n"


def _mib(value: int) -> str:
    return f"{value / 1024:.1f} GiB"


def _has_inventory_option(args: argparse.Namespace) -> bool:
    return bool(args.inventory or args.simulate)


def _where(sim: SimulatedHost | None, directory: LeaseDir) -> str:
    """The lease directory as the user knows it: the simulated host's is its own."""
    if sim is not None and str(directory.path) == sim.lease_dir:
        return f"the lease directory of the simulated host {sim.name!r}"
    return str(directory.path)


class _Stopped(BaseException):
    """A signal asked ``gpuroute run`` to stop (SIGINT, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_stop_the_work() -> Iterator[None]:
    """The first SIGINT, SIGTERM or SIGHUP stops the work: the launch is unwound (the work
    stopped and removed, the lease released, temporary files deleted). Signals that come
    while it is being stopped are noted, never allowed to cut the clean-up short.

    Only the main thread may set signal handlers: ``main`` called from another thread (an
    embedding program's) leaves signals to that program, as any library call does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def again(signum: int, frame: object) -> None:
        print(
            f"gpuroute: {signal.Signals(signum).name} again: still stopping the work",
            file=sys.stderr,
        )

    def first(signum: int, frame: object) -> None:
        for each in _STOP_SIGNALS:
            signal.signal(each, again)
        print(f"gpuroute: {signal.Signals(signum).name}: stopping the work", file=sys.stderr)
        raise _Stopped(signum)

    previous = {each: signal.signal(each, first) for each in _STOP_SIGNALS}
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is first:  # no signal came: as before
            for each, handler in previous.items():
                signal.signal(each, handler)


def _run_command(args: argparse.Namespace, sim: SimulatedHost | None) -> int:
    from gpuroute.api import launch

    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    env = key_values(args.env, "--env")
    network = args.network
    in_container = bool(args.image or args.compose_service)
    try:
        with _signals_stop_the_work():
            if sim is not None:
                if in_container:
                    _say_the_engine_starts(sim)
                    network = network or "none"  # the private engine has no bridge
                host = sim.launch_kwargs(container=in_container)
            else:
                host = {"inventory": Inventory.load(args.inventory) if args.inventory else None}
            host["lease_dir"] = args.lease_dir or host.get("lease_dir")
            handle = launch(
                argv,
                gpus=args.gpus,
                image=args.image,
                compose_service=args.compose_service,
                compose_files=args.compose_files,
                env=env,
                verify=args.verify,
                cdi=args.cdi,
                torchrun=args.torchrun,
                local_ids=args.local_ids,
                stream=True,
                docker_kwargs={"network_mode": network} if network else None,
                lease=args.lease,
                allow_unhealthy=args.allow_unhealthy,
                **host,
            )
            with handle:
                if args.explain:
                    print(handle.plan.explain(), file=sys.stderr)
                for note in handle.notes:
                    print(f"gpuroute: {note}", file=sys.stderr)
                for chunk in handle.follow():  # a container's output; the others print it
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                return handle.wait()
    except _Stopped as stopped:
        for each in _STOP_SIGNALS:  # stopped: exit now, whatever signal comes
            signal.signal(each, signal.SIG_IGN)
        return 128 + stopped.signum


def _say_the_engine_starts(sim: SimulatedHost) -> None:
    if not sim.engine_started:
        print(
            f"gpuroute: starting the private Docker Engine of the simulated host {sim.name!r} "
            "(a few seconds) ...",
            file=sys.stderr,
            flush=True,
        )


def _existing_lease_dir(path: str | None, *, say: bool = True) -> LeaseDir | None:
    """The lease directory, or None (having said so, unless ``say`` is false) where none
    exists yet: no leases."""
    from gpuroute.leases import LeaseDir, lease_dir_path

    where = lease_dir_path(path)
    if not os.path.lexists(where):
        if say:
            print(f"No leases: the lease directory {where} does not exist yet.")
        return None
    return LeaseDir(where, create=False)


def _labelling_inventory(args: argparse.Namespace, sim: SimulatedHost | None) -> Inventory | None:
    """The inventory that labels leased devices, or None (having said so in one note) where
    NVML cannot be read, as on a machine without an NVIDIA driver: listings work without it.
    A snapshot or topology the user named that cannot be read stays an error."""
    from gpuroute.errors import NVMLError

    try:
        return _inventory(args, sim)
    except NVMLError as exc:
        print(
            f"gpuroute: note: the GPU inventory cannot be read, so devices are shown by UUID "
            f"and their usage is not counted ({exc})",
            file=sys.stderr,
        )
        return None


def _leases(args: argparse.Namespace, sim: SimulatedHost | None) -> int:
    import time

    from gpuroute.leases import boot_id, stale_reason
    from gpuroute.limits import format_equivalents, usage_of

    directory = _existing_lease_dir(_lease_dir(args, sim), say=not args.json)
    if directory is None:
        if args.json:
            print("[]")
        return 0
    records, notes = directory.read(set_aside=False)  # no lock: files change atomically
    by_lease = {r.lease_id: r for r in records.values()}
    # A lease holds the devices whose names are there: all of its record's, but for one
    # whose writer died between two of them.
    present: dict[str, set[str]] = {}
    for uuid, r in records.items():
        present.setdefault(r.lease_id, set()).add(uuid)
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in by_lease.values()], indent=2))
        return 0
    if not by_lease:
        print(f"No leases in {_where(sim, directory)}.")
        for note in notes:
            print(f"note: {note}")
        return 0
    from gpuroute.core.table import short_ids
    from gpuroute.term import width

    inventory = _labelling_inventory(args, sim)
    headers = ("LEASE", "USER", "DEVICES", "GPU-EQUIV", "PHYSICAL", "HELD BY", "AGE", "STATUS")
    rows = []
    now = time.time()
    held = {i: [u for u in r.devices if u in present[i]] for i, r in by_lease.items()}
    every = [u for devices in held.values() for u in devices]
    ids = {u: u for u in every} if args.wide else short_ids(every)
    for r in sorted(by_lease.values(), key=lambda r: r.created):
        devices = held[r.lease_id]
        if inventory is None:
            labels, equivalents, physical = [ids[u] for u in devices], "?", "?"
        else:
            labels = [d.label if (d := inventory.by_uuid(u)) else ids[u] for u in devices]
            usage = usage_of(devices, inventory)
            equivalents = format_equivalents(usage.gpu_equivalents)
            physical = str(len(usage.physical_gpus))
        holder = r.holder.describe()
        stale = stale_reason(r, now=now, this_boot=boot_id())
        rows.append(
            (
                r.lease_id,
                r.user,
                ",".join(labels),
                equivalents,
                physical,
                holder,
                f"{int(now - r.created)}s",
                f"stale: {stale}" if stale else "held",
            )
        )
    fit = None if args.wide else width()
    print(format_table(headers, rows, max_width=fit, shrink=(2, 5, 7)))  # devices, holder, status
    for note in notes:
        print(f"note: {note}")
    return 0


def _limits(args: argparse.Namespace, sim: SimulatedHost | None) -> int:
    from gpuroute.leases import caller_identity
    from gpuroute.limits import Policy, binding_policy

    # The administrator's policy binds; --policy (or GPUROUTE_POLICY) only tightens it.
    policy = binding_policy(Policy.load(args.policy) if args.policy else None)
    directory = _existing_lease_dir(_lease_dir(args, sim))
    records: dict[str, LeaseRecord] = {}
    if directory is not None:
        records, _ = directory.read(set_aside=False)
    # The inventory counts leased devices: with no leases, or none readable, nothing to count.
    inventory = _labelling_inventory(args, sim) if records else None
    if inventory is None:
        inventory = Inventory(gpus=())
    uid, user = caller_identity()
    (_, limit, mine, _), *groups = policy.budgets(uid, user, records.values(), inventory)
    print(f"Policy: {policy.source}")
    print(f"You ({user}, uid {uid}) hold {mine.describe()}.")
    print(f"  your limit: {limit.describe() if limit else 'none'}")
    for who, glimit, used, _ in groups:
        assert glimit is not None  # every group in a policy has a limit
        print(f"  {who}: {used.describe()} in use; limit {glimit.describe()}")
    return 0


def _doctor(args: argparse.Namespace, sim: SimulatedHost | None) -> int:
    from gpuroute.doctor import diagnose, render

    if sim is not None:
        _say_the_engine_starts(sim)
        docker_host = sim.docker_host
        print(f"Checking the simulated GPU host {sim.name!r} (private engine {docker_host}).\n")
        checks = diagnose(
            inventory=sim.inventory,
            nvml=sim.nvml,
            docker_host=docker_host,
            image=args.image or sim.image,
            lease_dir=_lease_dir(args, sim),
        )
    else:
        checks = diagnose(image=args.image, lease_dir=args.lease_dir)
    from gpuroute.term import colour_enabled

    print(render(checks, colour=colour_enabled()), end="")
    if sim is None and any(c.name == "GPU inventory" and c.status == "fail" for c in checks):
        from gpuroute.demo import SIMULATED

        print(
            f"\nNo GPU inventory here (no NVIDIA driver?): `gpuroute doctor --simulate "
            f"{SIMULATED}` checks a built-in simulated GPU host instead (`gpuroute topologies` "
            "lists them)."
        )
    return 1 if any(c.status == "fail" for c in checks) else 0


def _run(args: argparse.Namespace, sim: SimulatedHost | None) -> int:
    if args.command in ("bench", "campaign"):
        from gpuroute.bench.cli import run

        return run(args)
    if args.command == "topologies":
        from gpuroute.testing import TOPOLOGIES

        if args.json:
            print(json.dumps(dict(TOPOLOGIES), indent=2))
            return 0
        for name, what in TOPOLOGIES.items():
            print(f"{name:<20} {what}")
        return 0
    if args.command == "demo":
        from gpuroute.demo import demo

        return demo(spec=args.spec, image=args.image, sim=sim)
    if args.command == "run":
        return _run_command(args, sim)
    if args.command == "doctor":
        return _doctor(args, sim)
    if args.command == "leases":
        return _leases(args, sim)
    if args.command == "limits":
        return _limits(args, sim)
    inventory = _inventory(args, sim)
    if args.command == "ls":
        if args.json:
            print(json.dumps(inventory.to_dict(), indent=2))
        else:
            from gpuroute.host import Host, reads_live_state

            live = None
            if sim is not None:  # the simulated host's own NVML and leases
                with Host(inventory=inventory, nvml=sim.nvml, lease_dir=sim.lease_dir) as host:
                    live = host.live_state(inventory)
            elif reads_live_state(_has_inventory_option(args)):
                with Host() as host:
                    live = host.live_state(inventory)
            from gpuroute.term import colour_enabled, width

            print(
                _ls(inventory, live, wide=args.wide, width=width(), colour=colour_enabled()),
                end="",
            )
        return 0
    if args.command == "health":
        return _health(args, inventory, sim)
    if args.command == "ray":
        return _ray_resources(args, inventory)
    if args.command == "inventory":
        inventory.save(args.file)
        print(
            f"Wrote {len(inventory.gpus)} GPU(s) to {args.file}; use it with "
            f"{INVENTORY_ENV}={args.file} or --inventory {args.file}."
        )
        return 0
    result = make_plan(
        args.spec,
        inventory if _has_inventory_option(args) else None,  # this host's: its health counts
        allow_unhealthy=args.allow_unhealthy,
        target=args.target,
        allow_multiple_mig=args.allow_multiple_mig,
        driver_capabilities=args.capabilities.split(","),
        local_ids=args.local_ids,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        from gpuroute.term import width

        print(result.explain(width=None if args.wide else width()), end="")
    return 0


def _ray_resources(args: argparse.Namespace, inventory: Inventory) -> int:
    from gpuroute.ray.resources import node_resources

    found = node_resources(inventory)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    print(f"# Start this node with {found.num_gpus} GPU(s) not in MIG mode", end="")
    print(f" and {sum(found.resources.values())} MIG device(s):" if found.resources else ":")
    print(found.command("--head"), " # the first node")
    print(found.command("--address=HEAD:6379"), " # any other node")
    return 0


def _simulated(args: argparse.Namespace) -> int:
    """The command on the simulated host ``--simulate`` names, as one session: the host's
    private engine (if the command started one) and its files are gone when this returns,
    also after an error or a SIGINT, SIGTERM or SIGHUP (then the status is 128 + signal)."""
    try:
        with _signals_stop_the_work():
            if args.command in ("bench", "campaign"):
                return _run(args, None)  # they hold the session (gpuroute.bench.simhost)
            from gpuroute.testing.simhost import SimulatedHost

            with SimulatedHost(args.simulate) as sim:
                return _run(args, sim)
    except _Stopped as stopped:
        for each in _STOP_SIGNALS:  # stopped and cleaned up: exit now, whatever signal comes
            signal.signal(each, signal.SIG_IGN)
        return 128 + stopped.signum


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser(_command_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    try:
        if getattr(args, "simulate", None) is not None:
            return _simulated(args)
        return _run(args, None)
    except GpurouteError as exc:
        print(f"gpuroute: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("gpuroute: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
