"""The routing plan: the resolved devices and every environment derived from them. Pure.

A plan answers three questions for one request:

* ``host_env``: what the container runtime reads on the host side (``NVIDIA_VISIBLE_DEVICES``
  as full UUIDs, ``NVIDIA_DRIVER_CAPABILITIES``);
* ``container_env``: what the program inside that container reads (``CUDA_VISIBLE_DEVICES``
  as ranks within the container's own numbering, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``);
* ``local_env``: what a process started directly on this host reads.

The numbering rule. The runtime mounts the *set* of requested devices; inside the container
they are renumbered from 0 in PCI bus order, whatever order the request listed them in.
With ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, CUDA numbers them the same way, so the rank of each
requested device among the selected devices sorted by PCI bus id is its number inside the
container. Listing those ranks in the requested order makes ``cuda:0`` the first device the
user asked for. Host GPUs ``3,1`` give ``CUDA_VISIBLE_DEVICES=1,0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Device, Inventory
from gpuroute.core.table import format_table, short_ids
from gpuroute.errors import ContextError

__all__ = [
    "DEFAULT_DRIVER_CAPABILITIES",
    "DRIVER_CAPABILITIES",
    "LocalIds",
    "RoutingPlan",
]

LocalIds = Literal["uuid", "index"]

DRIVER_CAPABILITIES = frozenset(
    {"compute", "compat32", "graphics", "utility", "video", "display", "ngx", "all"}
)
"""The values ``NVIDIA_DRIVER_CAPABILITIES`` accepts (the toolkit panics on any other)."""

DEFAULT_DRIVER_CAPABILITIES = ("compute", "utility")

NO_GPU = "void"
"""``NVIDIA_VISIBLE_DEVICES`` for no GPU. Never leave it unset: CUDA images bake ``all``."""


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    """An immutable plan: which devices, in which order, and the environments that make a
    container or a process see exactly those devices, numbered as requested.

    ``devices`` is in requested order: ``devices[i]`` is ``cuda:i`` in the container and in
    a local process. Build plans with ``gpuroute.plan()``.
    """

    spec: str
    devices: tuple[Device, ...]
    inventory: Inventory = field(repr=False)
    context: CallerContext = field(default_factory=CallerContext, repr=False)
    driver_capabilities: tuple[str, ...] = DEFAULT_DRIVER_CAPABILITIES
    local_ids: LocalIds = "uuid"
    local_refusal: str | None = field(default=None, repr=False)
    """Why a local process may not use this plan (the parent mask, or index form with MIG)."""
    notes: tuple[str, ...] = field(default=(), repr=False)
    capabilities_given: bool = field(default=False, repr=False)
    """Whether the caller chose ``driver_capabilities``. If not, a backend keeps what the
    work itself declares (a compose service's or an image's ``NVIDIA_DRIVER_CAPABILITIES``)
    and ``driver_capabilities`` (the default) applies only where nothing is declared."""

    # -- the views ------------------------------------------------------------------------

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(d.uuid for d in self.devices)

    @property
    def host_env(self) -> Mapping[str, str]:
        """For the container runtime on the host: full UUIDs, never indices or prefixes."""
        return MappingProxyType(
            {
                "NVIDIA_VISIBLE_DEVICES": ",".join(self.uuids) or NO_GPU,
                "NVIDIA_DRIVER_CAPABILITIES": ",".join(self.driver_capabilities),
            }
        )

    @property
    def container_visible(self) -> tuple[Device, ...]:
        """The devices as the container numbers them (nvidia-smi inside lists them so)."""
        return tuple(sorted(self.devices, key=lambda d: d.sort_key))

    @property
    def container_cuda_ids(self) -> tuple[str, ...]:
        """The entries of the container's ``CUDA_VISIBLE_DEVICES``, in requested order.

        Ranks in the container's PCI-ordered numbering, except for several MIG devices
        (an explicit opt-in), whose CUDA numbering is not derivable: their UUIDs then.
        """
        if sum(d.is_mig for d in self.devices) > 1:
            return self.uuids
        rank = {d.uuid: i for i, d in enumerate(self.container_visible)}
        return tuple(str(rank[d.uuid]) for d in self.devices)

    @property
    def container_env(self) -> Mapping[str, str]:
        """For the program inside the container: ``cuda:i`` is ``devices[i]``."""
        return MappingProxyType(
            {
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "CUDA_VISIBLE_DEVICES": ",".join(self.container_cuda_ids),
            }
        )

    @property
    def container_run_env(self) -> Mapping[str, str]:
        """What a container is started with: ``host_env`` (read by the runtime on the host)
        and ``container_env`` (read by the program inside)."""
        return MappingProxyType({**self.host_env, **self.container_env})

    @property
    def container_map(self) -> Mapping[int, Device]:
        """Container CUDA ordinal -> host device."""
        return MappingProxyType(dict(enumerate(self.devices)))

    @property
    def local_env(self) -> Mapping[str, str]:
        """For a process started on this host (no renumbering happens there).

        UUIDs by default; NVML indices with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` when the plan was
        made with ``local_ids="index"``, for frameworks that cannot parse UUIDs. Raises
        ContextError when the caller's context forbids a local process this plan.
        """
        if self.local_refusal is not None:
            raise ContextError(self.local_refusal, spec=self.spec)
        if self.local_ids == "index":
            ids = [str(d.gpu.index) for d in self.devices]
        else:
            ids = list(self.uuids)
        return MappingProxyType(
            {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(ids)}
        )

    # -- presentation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the plan (what ``gpuroute plan --json`` prints)."""
        return {
            "spec": self.spec,
            "devices": [
                {
                    "request_position": i,
                    "label": d.label,
                    "uuid": d.uuid,
                    "gpu_index": d.gpu.index,
                    "gpu_uuid": d.gpu.uuid,
                    "pci_bus_id": d.gpu.pci_bus_id,
                    "name": d.gpu.name,
                    "mig_profile": d.mig.profile if d.mig else None,
                    "container_ordinal": i,
                }
                for i, d in enumerate(self.devices)
            ],
            "host_env": dict(self.host_env),
            "container_env": dict(self.container_env),
            "container_map": {str(i): d.label for i, d in self.container_map.items()},
            "local_env": None if self.local_refusal else dict(self.local_env),
            "local_refusal": self.local_refusal,
            "notes": list(self.notes),
        }

    def explain(self, width: int | None = None) -> str:
        """A human-readable account of the plan: the devices and every environment. With
        ``width``, the device table fits that many columns as ``gpuroute ls`` does: UUIDs
        shortened to the unique prefixes on this host that a spec accepts, no PCI bus ids,
        models cut where needed; the environments are always whole (they are what is set)."""
        inv = self.inventory
        driver = f", driver {inv.driver_version}" if inv.driver_version else ""
        out = [f"Routing plan for {self.spec!r} ({len(inv.gpus)} GPUs on this host{driver})", ""]
        if not self.devices:
            out.append("No GPU: the container and the process see none.")
        else:
            headers = ("cuda", "host", "uuid", "pci bus id", "model", "nvidia-smi in container")
            smi = {d.uuid: i for i, d in enumerate(self.container_visible)}
            rows = []
            for i, d in enumerate(self.devices):
                model = f"{d.gpu.name} {d.mig.profile}" if d.mig else d.gpu.name
                rows.append((str(i), d.label, d.uuid, d.gpu.pci_bus_id, model, str(smi[d.uuid])))
            if width is None:
                out.append(format_table(headers, rows, indent="  "))
            else:  # as `gpuroute ls` fits: short UUIDs, no PCI bus ids, models cut
                ids = short_ids(u.uuid for u in inv.devices())
                narrow = [(c, h, ids[u], m, n) for c, h, u, _, m, n in rows]
                heads = ("cuda", "host", "uuid", "model", "smi in container")
                out.append(format_table(heads, narrow, indent="  ", max_width=width, shrink=(3,)))
        out += ["", "Container runtime, host side (docker run / compose):"]
        out += [f"  {k}={v}" for k, v in self.host_env.items()]
        out += ["Program inside the container:"]
        out += [f"  {k}={v}" for k, v in self.container_env.items()]
        for i, d in self.container_map.items():
            out.append(f"  cuda:{i} -> host {'MIG' if d.is_mig else 'GPU'} {d.label} ({d.uuid})")
        out += ["Process on this host:"]
        if self.local_refusal is not None:
            out.append(f"  refused: {self.local_refusal}")
        else:
            out += [f"  {k}={v}" for k, v in self.local_env.items()]
        if self.notes:
            out += ["", "Notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"
