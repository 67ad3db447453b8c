"""``gpuroute.plan``: the front door to the core, filling in the defaults from the host."""

from __future__ import annotations

from collections.abc import Iterable

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.core.plan import DEFAULT_DRIVER_CAPABILITIES, LocalIds, RoutingPlan
from gpuroute.core.resolve import Target, resolve
from gpuroute.core.spec import SpecInput
from gpuroute.host import default_inventory, detect_context

__all__ = ["plan"]


def plan(
    spec: SpecInput,
    inventory: Inventory | None = None,
    *,
    context: CallerContext | None = None,
    target: Target | None = None,
    allow_multiple_mig: bool = False,
    driver_capabilities: Iterable[str] = DEFAULT_DRIVER_CAPABILITIES,
    local_ids: LocalIds = "uuid",
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
        driver_capabilities: ``NVIDIA_DRIVER_CAPABILITIES`` for the container runtime.
        local_ids: ``"uuid"`` (default) or ``"index"`` for ``plan.local_env``.

    Raises:
        SpecError, ResolutionError (and its subclasses), ContextError, InventoryError:
        all subclasses of GpurouteError, each naming the offending input.
    """
    return resolve(
        spec,
        inventory if inventory is not None else default_inventory(),
        context=context if context is not None else detect_context(),
        target=target,
        allow_multiple_mig=allow_multiple_mig,
        driver_capabilities=driver_capabilities,
        local_ids=local_ids,
    )
