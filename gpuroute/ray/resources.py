"""What a node offers Ray: ``ray start`` resources from the inventory.

Ray counts whole GPUs per node and hands a task entries of the node's own
``CUDA_VISIBLE_DEVICES`` (0..N-1 when it is unset). It knows nothing of MIG: a GPU in MIG
mode is not a GPU a task may be given, and each MIG profile becomes a custom resource
(``mig-1g.10gb``) whose units are that profile's devices on the node. Where some GPUs are in
MIG mode, or the models differ (CUDA then counts the fastest first), the node is started with
``CUDA_VISIBLE_DEVICES`` naming its whole GPUs by UUID, so that the entries Ray hands out are
exactly those GPUs.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gpuroute.core.inventory import Inventory

__all__ = ["MIG_RESOURCE_PREFIX", "NodeResources", "mig_resource", "node_resources"]

MIG_RESOURCE_PREFIX = "mig-"
"""A MIG profile's Ray resource is this prefix and the profile: ``mig-1g.10gb``."""


def mig_resource(profile: str) -> str:
    """The Ray resource of a MIG profile (``1g.10gb`` -> ``mig-1g.10gb``)."""
    return f"{MIG_RESOURCE_PREFIX}{profile}"


@dataclass(frozen=True)
class NodeResources:
    """A node's ``ray start`` resources: ``num_gpus`` whole GPUs (not in MIG mode), one
    custom resource per MIG profile, and the ``CUDA_VISIBLE_DEVICES`` to start the node with
    (the whole GPUs' UUIDs where some GPU is in MIG mode or the models differ; None
    where Ray's 0..N-1 are the GPUs in NVML's order)."""

    num_gpus: int
    resources: dict[str, int]
    cuda_visible_devices: str | None

    def argv(self) -> list[str]:
        """The ``ray start`` arguments."""
        args = ["--num-gpus", str(self.num_gpus)]
        if self.resources:
            args += ["--resources", json.dumps(self.resources, sort_keys=True)]
        return args

    def command(self, *start: str) -> str:
        """The ``ray start`` command line to run on this node (``start``: more arguments,
        such as ``--head`` or ``--address=HOST:PORT``), with its environment."""
        line = shlex.join(["ray", "start", *start, *self.argv()])
        if self.cuda_visible_devices is None:
            return line
        return f"CUDA_VISIBLE_DEVICES={shlex.quote(self.cuda_visible_devices)} {line}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_gpus": self.num_gpus,
            "resources": dict(self.resources),
            "cuda_visible_devices": self.cuda_visible_devices,
            "argv": self.argv(),
        }


def node_resources(inventory: Inventory) -> NodeResources:
    """The ``ray start`` resources of a host with this inventory."""
    whole = [g for g in inventory.gpus if not g.mig_mode]
    profiles = Counter(m.profile for g in inventory.gpus if g.mig_mode for m in g.mig_devices)
    # Integer entries would be CUDA ordinals, not NVML indices, on a host with MIG GPUs or
    # mixed models: name the whole GPUs by UUID there.
    mixed = len({g.name for g in inventory.gpus}) > 1
    mask = ",".join(g.uuid for g in whole) if inventory.mig_gpus or mixed else None
    return NodeResources(
        num_gpus=len(whole),
        resources={mig_resource(p): n for p, n in sorted(profiles.items())},
        cuda_visible_devices=mask,
    )
