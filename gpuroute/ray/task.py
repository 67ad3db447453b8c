"""Routing inside a Ray task or actor: what Ray gave it, as this node's devices, leased.

Ray writes the entries it gives a task into the task's ``CUDA_VISIBLE_DEVICES``: entries of
the node's own ``CUDA_VISIBLE_DEVICES`` when the node was started with one, else 0..N-1.
CUDA reads integer entries as its own ordinals (fastest first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``), so they are read here exactly as gpuroute reads a parent
mask (``CallerContext.visible_devices``): on a host that mixes models without
``PCI_BUS_ID`` order, or with GPUs in MIG mode, integers are refused rather than guessed
(start such a node as ``gpuroute ray resources`` prints: its GPUs named by UUID).

A task that holds a MIG profile's resource (``mig-1g.10gb``) is given no GPU by Ray; a free
MIG device of that profile is chosen here, through a lease.

Either way the devices are leased on the node (its ``GPUROUTE_LEASE_DIR``) before they are
used: someone on the same server who does not use Ray sees them taken, and a device a local
user holds is never used by a Ray task (``here`` waits ``wait_s`` for it, or fails at once).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gpuroute.backends import Launch, Work
from gpuroute.backends.local import process_start_time
from gpuroute.core.closing import Closing
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Device
from gpuroute.core.plan import RoutingPlan
from gpuroute.core.selection import Need
from gpuroute.host import Host, LeaseTerms, PlanOptions, caps_option, default_host
from gpuroute.leases import Lease
from gpuroute.ray.resources import MIG_RESOURCE_PREFIX, mig_resource
from gpuroute.ray.runtime import RayError, load_ray
from gpuroute.records import Holder

__all__ = ["Assignment", "Placement", "assigned", "here", "task_holder"]


@dataclass(frozen=True)
class Assignment:
    """What Ray gave this task, on this node: whole GPUs (``devices``, in the task's CUDA
    order, read through ``context``), or ``count`` units of a MIG profile's resource."""

    devices: tuple[Device, ...]
    context: CallerContext
    ray_ids: tuple[str, ...] = ()
    mig_profile: str | None = None
    count: int = 0


def _entries(mask: str) -> list[str]:
    return [e.strip() for e in mask.split(",") if e.strip()]


def assigned(host: Host | None = None) -> Assignment:
    """Map what Ray assigned this task onto this node's devices (no lease: see ``here``)."""
    ray = load_ray()
    host = host if host is not None else default_host()
    ids = tuple(str(i) for i in ray.get_gpu_ids())
    base = host.context
    if ids:
        current = os.environ.get("CUDA_VISIBLE_DEVICES")
        if current is not None and sorted(_entries(current)) == sorted(ids):
            mask = current  # the order CUDA sees in this task
        else:  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: Ray's ids, in a stable order
            mask = ",".join(
                sorted(ids, key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))
            )
        context = CallerContext(mask, base.cuda_device_order, base.in_container)
        inventory = host.inventory
        devices = context.visible_devices(inventory) or ()
        if len(devices) != len(ids):
            raise RayError(
                f"Ray gave this task GPUs {','.join(ids)} (CUDA_VISIBLE_DEVICES={mask}), but "
                f"this node's inventory has only {len(devices)} of them among its "
                f"{len(inventory.gpus)} GPU(s): start the node with the resources "
                "`gpuroute ray resources` prints for it"
            )
        return Assignment(tuple(devices), context, ids)
    held = ray.get_runtime_context().get_assigned_resources()
    profiles = {
        name[len(MIG_RESOURCE_PREFIX) :]: amount
        for name, amount in held.items()
        if name.startswith(MIG_RESOURCE_PREFIX) and amount > 0
    }
    if len(profiles) > 1:
        raise RayError(
            f"this task holds several MIG profiles ({', '.join(sorted(profiles))}); ask for one "
            "profile per task"
        )
    if profiles:
        ((profile, amount),) = profiles.items()
        if amount != int(amount):
            raise RayError(
                f"this task holds {amount:g} of {mig_resource(profile)}: ask for whole units "
                f"(resources={{{mig_resource(profile)!r}: 1}}), one per MIG device"
            )
        context = CallerContext(None, base.cuda_device_order, base.in_container)
        return Assignment((), context, mig_profile=profile, count=int(amount))
    raise RayError(
        "Ray gave this task no GPU: ask for GPUs with @ray.remote(num_gpus=N), or for a MIG "
        "device with resources={'mig-1g.10gb': 1} (`gpuroute ray resources` lists a node's)"
    )


def task_holder() -> Holder:
    """The lease holder of this Ray task or actor: backend ``ray``, its task (or actor) id,
    its node, and this worker process (which stands for it on the node)."""
    ray = load_ray()
    runtime = ray.get_runtime_context()
    ident = runtime.get_actor_id() or runtime.get_task_id() or "driver"
    pid = os.getpid()
    return Holder("ray", str(ident), runtime.get_node_id(), pid, process_start_time(pid))


class Placement(Closing):
    """Devices Ray gave this task, routed on its node and leased there. ``plan`` routes
    exactly them; ``launch`` starts work on them; ``release`` (or leaving the ``with`` block)
    gives them back."""

    def __init__(self, plan: RoutingPlan, lease: Lease, host: Host, node: str) -> None:
        self.plan = plan
        self.lease = lease
        self.host = host
        self.node = node
        """The Ray node id."""

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.plan.devices

    def launch(self, work: Work) -> Launch:
        """Start ``work`` (a ``DockerWork``, ``LocalWork`` or ``ComposeWork``) on exactly these
        devices, on this node's engine; the lease is bound to it while it runs."""
        return self.host.launch(work, gpus=self.plan, lease=self.lease)

    def release(self) -> None:
        self.lease.release()

    def close(self) -> None:
        """Release (as leaving a ``with`` block does)."""
        self.release()


def here(
    *,
    wait_s: float = 0.0,
    ttl_s: float | None = None,
    host: Host | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    docker_host: str | None = None,
    driver_capabilities: Iterable[str] | None = None,
) -> Placement:
    """In a Ray task or actor given GPUs (``num_gpus``) or a MIG profile's resource: route
    them on this node and lease them, waiting up to ``wait_s`` seconds for a device someone
    else holds (0: fail at once with DeviceLeasedError or NoFreeDeviceError).

    ``host``: the node's host (default: the one its environment names, ``DOCKER_HOST``,
    ``GPUROUTE_INVENTORY``, ``GPUROUTE_LEASE_DIR``). An inventory that cannot be read is an
    InventoryError, raised in the task.
    """
    ray = load_ray()
    host = host if host is not None else default_host(docker_host=docker_host, lease_dir=lease_dir)
    found = assigned(host)
    options = PlanOptions(
        driver_capabilities=caps_option(driver_capabilities),
        allow_multiple_mig=found.count > 1,
    )
    if found.devices:
        spec = ",".join(d.uuid for d in found.devices)
        need = Need(0)
    else:
        spec = f"any:{found.count}"
        need = Need(0, mig_profile=found.mig_profile)
    terms = LeaseTerms(ttl_s=ttl_s, wait_s=wait_s, need=need, holder=task_holder())
    routed = host.route(spec, options=options, lease=True, terms=terms, context=found.context)
    assert routed.lease is not None
    node: Any = ray.get_runtime_context().get_node_id()
    return Placement(routed.plan, routed.lease, host, str(node))
