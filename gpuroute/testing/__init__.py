"""Stand-ins for a GPU host, shipped for tests, examples and demos on machines with no GPU.

* ``topology(name)``: a built-in simulated host, as an Inventory recorded in the snapshot
  format (``TOPOLOGIES`` lists the names);
* ``FakeNVML``: a stateful stand-in for the pynvml functions gpuroute calls, built from
  such an inventory;
* ``FakeKernelLog``: a recorded kernel log (``/dev/kmsg`` records) with the driver's Xid
  lines, which ``FakeNVML.inject_xid`` writes to when given one;
* ``gpuroute.testing.simhost.SimulatedHost``: the whole simulated host for one session, what
  ``--simulate TOPOLOGY`` means on every command (inventory, FakeNVML, a lease directory of
  its own, and a private engine, ``gpuroute.testing.engine``, started when first needed).

``FakeNVML`` and ``FakeProcess`` import pynvml (``nvidia-ml-py``), whose errors FakeNVML
raises, when first used: ``topology`` alone, which ``--simulate`` needs to plan, does not.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from gpuroute.core.inventory import GPU, Inventory, MIGDevice

if TYPE_CHECKING:
    from gpuroute.testing.fake_nvml import FakeNVML, FakeProcess
    from gpuroute.testing.kernel_log import FakeKernelLog

__all__ = [
    "TOPOLOGIES",
    "FakeKernelLog",
    "FakeNVML",
    "FakeProcess",
    "topology",
    "topology_path",
]

TOPOLOGIES = {
    "h100-sxm-8": "8 identical NVIDIA H100 80GB HBM3 (SXM), no MIG",
    "a100-mig-4": "4 NVIDIA A100-SXM4-80GB; GPUs 1 and 2 in MIG mode with mixed profiles",
    "workstation-mixed": "RTX 3060 on PCI bus 01, the faster RTX 4090 on bus 41",
}
"""The built-in simulated hosts, by name, with what each one exercises."""


def topology_path(name: str) -> str:
    """The path of a built-in topology's snapshot file."""
    if name not in TOPOLOGIES:
        from gpuroute.errors import SnapshotError

        raise SnapshotError(
            f"no simulated topology named {name!r}; choose one of: {', '.join(TOPOLOGIES)}"
        )
    return str(resources.files("gpuroute.testing") / "topologies" / f"{name}.json")


def topology(name: str) -> Inventory:
    """A built-in simulated host as an Inventory.

    The shipped files are built into an Inventory directly, without the snapshot schema's
    validation (pydantic, most of a short command's start): the test suite checks that each
    gives exactly what ``Inventory.load`` gives. The Inventory's own checks still apply."""
    path = topology_path(name)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return Inventory(
        gpus=tuple(
            GPU(
                **{key: value for key, value in gpu.items() if key != "mig_devices"},
                mig_devices=tuple(MIGDevice(**mig) for mig in gpu["mig_devices"]),
            )
            for gpu in doc["gpus"]
        ),
        driver_version=doc["driver_version"],
    )


_LAZY = {
    "FakeNVML": "gpuroute.testing.fake_nvml",
    "FakeProcess": "gpuroute.testing.fake_nvml",
    "FakeKernelLog": "gpuroute.testing.kernel_log",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpuroute.testing' has no attribute {name!r}")
