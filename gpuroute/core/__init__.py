"""The pure core: the spec grammar, the inventory value, resolution into a routing plan.

Nothing here reads the environment, talks to NVML or Docker, or starts a process. Values go
in and values come out; the I/O layer (``gpuroute.nvml``, ``gpuroute.host``) and the backends
build on it, never the other way round. ``Inventory.load``/``save`` are the only doors to
I/O: they read or write the one file named. The live inventory is read by
``gpuroute.nvml.read_inventory``.
"""

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import GPU, Device, Inventory, MIGDevice
from gpuroute.core.plan import RoutingPlan
from gpuroute.core.resolution import Target, resolve
from gpuroute.core.spec import Kind, ParsedSpec, SpecInput, Token, parse_spec

__all__ = [
    "GPU",
    "CallerContext",
    "Device",
    "Inventory",
    "Kind",
    "MIGDevice",
    "ParsedSpec",
    "RoutingPlan",
    "SpecInput",
    "Target",
    "Token",
    "parse_spec",
    "resolve",
]
