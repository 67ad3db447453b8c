"""What gpuroute learns from the machine it runs on: the default inventory and the caller's
context. These are the only places that read the environment; the core never does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.nvml import read_inventory

__all__ = ["INVENTORY_ENV", "default_inventory", "detect_context", "reads_live_state"]

INVENTORY_ENV = "GPUROUTE_INVENTORY"
"""Names a snapshot file that replaces the live NVML inventory (remote planning, demos, tests)."""

_CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


def default_inventory(environ: Mapping[str, str] | None = None) -> Inventory:
    """The snapshot named by ``GPUROUTE_INVENTORY`` if it is set, else the live NVML inventory."""
    env = os.environ if environ is None else environ
    path = env.get(INVENTORY_ENV, "").strip()
    if path:
        return Inventory.load(path)
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
