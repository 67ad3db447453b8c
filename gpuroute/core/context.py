"""The caller's context: a value describing where a plan is made. Pure.

``gpuroute.detect_context()`` fills it in from the environment once; resolution only ever
reads this value. Two things matter:

* a parent ``CUDA_VISIBLE_DEVICES`` mask (a batch scheduler's allocation, or a host policy):
  a *local* launch must stay inside it, and an empty mask is a policy that reserves the GPUs
  for containers. Container routing goes through the engine and is not bound by it;
* running inside a container: the inventory then holds only that container's GPUs, with
  indices renumbered from 0, so only UUIDs mean the same thing to a host-side engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuroute.core.inventory import Device, Inventory
from gpuroute.errors import ContextError

__all__ = ["CallerContext"]


@dataclass(frozen=True, slots=True)
class CallerContext:
    """Where a plan is made. ``cuda_visible_devices`` is the parent mask exactly as set
    (None when unset); ``cuda_device_order`` likewise; ``in_container`` says whether this
    process runs inside a container."""

    cuda_visible_devices: str | None = None
    cuda_device_order: str | None = None
    in_container: bool = False

    @property
    def reserves_gpus_for_containers(self) -> bool:
        """An empty parent mask: the host keeps its GPUs for containers."""
        return self.cuda_visible_devices is not None and not self.cuda_visible_devices.strip()

    @property
    def device_order(self) -> str:
        """``CUDA_DEVICE_ORDER`` as CUDA reads it (``FASTEST_FIRST`` when unset)."""
        return (self.cuda_device_order or "FASTEST_FIRST").strip().upper()

    def ordinals_follow_pci(self, inventory: Inventory) -> bool:
        """Whether CUDA's integer ordinals are NVML's indices on this host: under
        ``PCI_BUS_ID`` order, or when every GPU is the same model (fastest first is then PCI
        order)."""
        return self.device_order == "PCI_BUS_ID" or len({g.name for g in inventory.gpus}) <= 1

    def visible_devices(self, inventory: Inventory) -> tuple[Device, ...] | None:
        """The devices the parent mask lets a local process use, as CUDA would read it
        (entries in order; the first entry that names nothing ends the list; a repeated
        entry makes the mask select nothing). None when there is no mask.

        Integer entries are CUDA ordinals. They equal NVML indices only under
        ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, or on a host whose GPUs are all one model; on any
        other host, and on a host with GPUs in MIG mode, an integer mask is refused with a
        ContextError rather than guessed.
        """
        mask = self.cuda_visible_devices
        if mask is None:
            return None
        selected: list[Device] = []
        by_pci = sorted(inventory.gpus, key=lambda g: g.pci_bus_id)
        for raw in mask.split(","):
            entry = raw.strip()
            if not entry:
                break
            if entry.lstrip("+").isdigit():
                self._check_integer_mask_is_readable(inventory)
                ordinal = int(entry)
                if ordinal >= len(by_pci):
                    break
                device = Device(by_pci[ordinal])
            elif entry.upper().startswith(("GPU-", "MIG-")):
                matches = inventory.uuids_starting_with(entry)
                if len(matches) != 1:
                    break
                device = matches[0]
            else:
                break
            if any(d.uuid == device.uuid for d in selected):
                return ()
            selected.append(device)
        return tuple(selected)

    def _check_integer_mask_is_readable(self, inventory: Inventory) -> None:
        if inventory.mig_gpus:
            raise ContextError(
                f"the parent CUDA_VISIBLE_DEVICES={self.cuda_visible_devices!r} uses integer "
                "ordinals on a host with GPUs in MIG mode, where CUDA's ordinals cannot be "
                "derived from NVML. Name the allowed devices by UUID in CUDA_VISIBLE_DEVICES."
            )
        if not self.ordinals_follow_pci(inventory):
            raise ContextError(
                f"the parent CUDA_VISIBLE_DEVICES={self.cuda_visible_devices!r} uses integer "
                f"ordinals under CUDA_DEVICE_ORDER={self.device_order}, and this host mixes GPU "
                "models, so CUDA's ordinal 0 is the fastest GPU, not nvidia-smi's GPU 0. Set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID alongside the mask, or name GPUs by UUID."
            )
