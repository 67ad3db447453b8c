"""Options and argument parsing shared by the ``gpuroute`` command and its ``bench`` and
``campaign`` subcommands (``gpuroute.cli``, ``gpuroute.bench.cli``); both import this module,
neither imports the other for it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gpuroute.errors import GpurouteError

__all__ = ["BENCH_HELP", "CAMPAIGN_HELP", "add_inventory_options", "key_values"]

BENCH_HELP = "run an LLM benchmark on exactly the routed GPUs"
CAMPAIGN_HELP = "run or report a benchmark campaign"


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    """``--inventory FILE`` or ``--simulate NAME``: another host's GPUs than this one's."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--inventory", metavar="FILE", help="use this snapshot instead of NVML")
    group.add_argument(
        "--simulate",
        metavar="NAME",
        help="use a built-in simulated host (see `gpuroute topologies`)",
    )


def key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` options (``--env``, ``--label``) as a mapping."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GpurouteError(f"{flag} {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs
