"""Options and argument parsing shared by the ``gpuroute`` command and its ``bench`` and
``campaign`` subcommands (``gpuroute.cli``, ``gpuroute.bench.cli``); both import this module,
neither imports the other for it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gpuroute.errors import GpurouteError

__all__ = [
    "BENCH_HELP",
    "CAMPAIGN_HELP",
    "SIMULATE_HELP",
    "add_inventory_options",
    "add_simulate_option",
    "key_values",
]

BENCH_HELP = "run an LLM benchmark on exactly the routed GPUs"
CAMPAIGN_HELP = "run or report a benchmark campaign"
SIMULATE_HELP = (
    "run against a built-in simulated GPU host (see `gpuroute topologies`): its GPUs, a fake "
    "NVML, a lease directory of its own and, for containers, a private Docker Engine with a "
    "stand-in NVIDIA toolkit"
)
"""What ``--simulate TOPOLOGY`` means, the same on every command."""


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    """``--inventory FILE`` or ``--simulate TOPOLOGY``: another host's GPUs than this one's."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--inventory", metavar="FILE", help="use this snapshot instead of NVML")
    add_simulate_option(group)


def add_simulate_option(parser: argparse._ActionsContainer) -> None:
    """``--simulate TOPOLOGY``: the whole simulated host (``gpuroute.testing.simhost``)."""
    parser.add_argument("--simulate", metavar="TOPOLOGY", help=SIMULATE_HELP)


def key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` options (``--env``, ``--label``) as a mapping."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GpurouteError(f"{flag} {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs
