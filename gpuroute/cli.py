"""The ``gpuroute`` command.

    gpuroute ls [--json]                       the inventory, MIG devices nested
    gpuroute plan SPEC [--target T] [--json]   the routing plan for a spec, explained
    gpuroute inventory save FILE               write a snapshot of this host
    gpuroute demo [--spec SPEC]                the plan for an example spec, on the real GPUs
                                               or, with no NVIDIA driver, on a simulated host
    gpuroute topologies                        the built-in simulated hosts

``--inventory FILE`` plans against a snapshot and ``--simulate NAME`` against a built-in
simulated host, instead of ``GPUROUTE_INVENTORY`` or NVML. User errors print one line
(``gpuroute: error: …``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gpuroute.api import plan as make_plan
from gpuroute.core.inventory import Inventory
from gpuroute.errors import GpurouteError, NVMLError
from gpuroute.host import INVENTORY_ENV, default_inventory
from gpuroute.nvml import NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND

__all__ = ["main"]

SIMULATED_DEFAULT = "h100-sxm-8"
EXIT_USER_ERROR = 2
NO_DRIVER_CODES = (NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED)


def _add_inventory_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--inventory", metavar="FILE", help="plan against this snapshot instead of NVML"
    )
    group.add_argument(
        "--simulate",
        metavar="NAME",
        help="plan against a built-in simulated host (see `gpuroute topologies`)",
    )


def _inventory(args: argparse.Namespace) -> Inventory:
    if args.inventory:
        return Inventory.load(args.inventory)
    if args.simulate:
        from gpuroute.testing import topology

        return topology(args.simulate)
    return default_inventory()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuroute",
        description="Put work on exactly the GPUs you asked for.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", help="list GPUs and MIG devices")
    ls.add_argument("--json", action="store_true", help="print the snapshot document")
    _add_inventory_options(ls)

    pl = sub.add_parser("plan", help="show the routing plan for a GPU spec")
    pl.add_argument("spec", metavar="SPEC", help="e.g. 3,1  GPU-8932f937  1:0  all  none")
    pl.add_argument(
        "--target",
        choices=["container", "local"],
        help="check the plan for this target now (local: the parent CUDA_VISIBLE_DEVICES mask)",
    )
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
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
    _add_inventory_options(pl)

    inv = sub.add_parser("inventory", help="inventory snapshots")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    save = inv_sub.add_parser("save", help="write a snapshot of this host's GPUs to FILE")
    save.add_argument("file", metavar="FILE")
    _add_inventory_options(save)

    demo = sub.add_parser(
        "demo", help="the plan for an example spec, on this host or a simulated one"
    )
    demo.add_argument("--spec", help="the spec to plan (default: chosen for the host)")

    sub.add_parser("topologies", help="list the built-in simulated hosts")
    return parser


def _ls(inventory: Inventory) -> str:
    if not inventory.gpus:
        return "No GPUs.\n"
    rows = [("GPU", "UUID", "PCI BUS ID", "NAME", "MEMORY", "MIG")]
    for g in inventory.gpus:
        if g.mig_compute_slices_total is None:
            mig = "n/a"
        else:
            mig = f"{'on' if g.mig_mode else 'off'} ({g.mig_compute_slices_total} slices)"
        rows.append((str(g.index), g.uuid, g.pci_bus_id, g.name, _mib(g.memory_total_mib), mig))
        for m in g.mig_devices:
            rows.append(
                (
                    f"  {g.index}:{m.index}",
                    m.uuid,
                    f"GI {m.gpu_instance_id} CI {m.compute_instance_id}",
                    m.profile,
                    _mib(m.memory_total_mib),
                    f"{m.compute_slices}/{g.mig_compute_slices_total} slices",
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    driver = inventory.driver_version or "unknown"
    return "\n".join(lines) + f"\n\nDriver {driver}; {len(inventory.gpus)} GPU(s).\n"


def _mib(value: int) -> str:
    return f"{value / 1024:.1f} GiB"


def _demo_inventory() -> tuple[Inventory, str]:
    try:
        inventory = default_inventory()
    except NVMLError as exc:
        if exc.code not in NO_DRIVER_CODES:
            raise  # a real GPU host with a problem: say so, never hide it behind a simulation
        from gpuroute.testing import TOPOLOGIES, topology

        return topology(SIMULATED_DEFAULT), (
            "No NVIDIA driver on this machine, so this runs on the built-in simulated host "
            f"{SIMULATED_DEFAULT!r}: {TOPOLOGIES[SIMULATED_DEFAULT]}."
        )
    return inventory, f"Planning on this host's GPUs ({len(inventory.gpus)} found)."


def _demo_spec(inventory: Inventory) -> str:
    whole = [g.index for g in inventory.gpus if not g.mig_mode]
    migs = [f"{g.index}:{m.index}" for g in inventory.gpus for m in g.mig_devices]
    if len(whole) >= 4:
        return f"{whole[3]},{whole[1]}"
    if len(whole) >= 2:
        return f"{whole[1]},{whole[0]}"
    if whole:
        return str(whole[0])
    return migs[0] if migs else "none"


def _run(args: argparse.Namespace) -> int:
    if args.command == "topologies":
        from gpuroute.testing import TOPOLOGIES

        for name, what in TOPOLOGIES.items():
            print(f"{name:<20} {what}")
        return 0
    if args.command == "demo":
        inventory, banner = _demo_inventory()
        spec = args.spec or _demo_spec(inventory)
        print(banner)
        print(f"Example request: GPUs {spec!r}, in that order.\n")
        print(make_plan(spec, inventory).explain(), end="")
        return 0
    inventory = _inventory(args)
    if args.command == "ls":
        if args.json:
            print(json.dumps(inventory.to_dict(), indent=2))
        else:
            print(_ls(inventory), end="")
        return 0
    if args.command == "inventory":
        inventory.save(args.file)
        print(
            f"Wrote {len(inventory.gpus)} GPU(s) to {args.file}; use it with "
            f"{INVENTORY_ENV}={args.file} or --inventory {args.file}."
        )
        return 0
    result = make_plan(
        args.spec,
        inventory,
        target=args.target,
        allow_multiple_mig=args.allow_multiple_mig,
        driver_capabilities=args.capabilities.split(","),
        local_ids=args.local_ids,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.explain(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except GpurouteError as exc:
        print(f"gpuroute: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
