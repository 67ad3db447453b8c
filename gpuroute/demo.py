"""``gpuroute demo``: the main job of ``scripts/run``.

On a GPU host: the routing plan for an example spec on the real GPUs (and, with ``--image``,
that plan applied to a container, verified with ``nvidia-smi -L``). On a machine with no
NVIDIA driver: the same on the built-in simulated host, including a pinned container on a
private Docker Engine with the stand-in NVIDIA toolkit, when one can run here. With
``--simulate TOPOLOGY`` (``sim``), on that simulated host whatever this machine has.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from gpuroute.api import launch
from gpuroute.api import plan as make_plan
from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.errors import NVMLError
from gpuroute.host import default_inventory
from gpuroute.nvml import NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND

if TYPE_CHECKING:
    from gpuroute.testing.simhost import SimulatedHost

__all__ = ["SIMULATED", "demo", "example_spec"]

SIMULATED = "h100-sxm-8"
NO_DRIVER = (NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED)
PROBE = ["sh", "-c", "echo '$ nvidia-smi -L'; nvidia-smi -L; echo '$ cuda-devices'; cuda-devices"]


def example_spec(inventory: Inventory) -> str:
    """A spec that shows the renumbering on this inventory: '3,1' on a host of four or more."""
    whole = [g.index for g in inventory.gpus if not g.mig_mode]
    migs = [f"{g.index}:{m.index}" for g in inventory.gpus for m in g.mig_devices]
    if len(whole) >= 4:
        return f"{whole[3]},{whole[1]}"
    if len(whole) >= 2:
        return f"{whole[1]},{whole[0]}"
    if whole:
        return str(whole[0])
    return migs[0] if migs else "none"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def demo(
    spec: str | None = None, image: str | None = None, *, sim: SimulatedHost | None = None
) -> int:
    """The demo on this host's GPUs, or on the simulated host ``sim`` (by default, the
    built-in ``h100-sxm-8`` where there is no NVIDIA driver)."""
    if sim is not None:
        from gpuroute.testing import TOPOLOGIES

        print(f"This runs on the built-in simulated host {sim.name!r} ({TOPOLOGIES[sim.name]}).")
        return _on_simulated_host(spec, sim)
    try:
        inventory: Inventory | None = default_inventory()
    except NVMLError as exc:
        if exc.code not in NO_DRIVER:
            raise  # a GPU host with a problem: say so, never hide it behind a simulation
        inventory = None
    if inventory is None:  # out of the handler: what fails later is not "during" it
        from gpuroute.testing import TOPOLOGIES
        from gpuroute.testing.simhost import SimulatedHost

        print(
            "No NVIDIA driver on this machine: this runs on the built-in simulated host "
            f"{SIMULATED!r} ({TOPOLOGIES[SIMULATED]})."
        )
        with SimulatedHost(SIMULATED) as own:
            return _on_simulated_host(spec, own)
    print(f"Planning on this host's GPUs ({len(inventory.gpus)} found).")
    spec = spec or example_spec(inventory)
    plan = make_plan(spec, inventory)
    print(f"Example request: GPUs {spec!r}, in that order.\n")
    print(plan.explain())
    if image:
        print(f"nvidia-smi -L in a pinned container of {image} (verified):")
        with launch(
            ["nvidia-smi", "-L"], gpus=spec, image=image, inventory=inventory, verify=True
        ) as run:
            code = run.wait()
            print(_indent(run.logs()))
        return code
    print("Pass --image IMAGE to also run nvidia-smi -L in a pinned, verified container.")
    return 0


def _on_simulated_host(spec: str | None, sim: SimulatedHost) -> int:
    spec = spec or example_spec(sim.inventory)
    # On the simulated host, this machine's own CUDA variables and container say nothing.
    plan = make_plan(spec, sim.inventory, context=CallerContext())
    print(f"Example request: GPUs {spec!r}, in that order.\n")
    print(plan.explain())
    return _simulated_container(spec, sim)


def _simulated_container(spec: str, sim: SimulatedHost) -> int:
    from gpuroute.testing.engine import IMAGE, SimulatedGPUHost

    reason = SimulatedGPUHost.unavailable()
    if reason is not None:
        print(
            f"A pinned container on the simulated host needs a private Docker Engine, and "
            f"{reason}. As root on Debian, ./scripts/run installs what it needs."
        )
        return 0
    print(
        "A pinned container on the simulated host (a private Docker Engine whose NVIDIA "
        "toolkit is a stand-in):"
    )
    print(f"    gpuroute.launch(PROBE, gpus={spec!r}, image={IMAGE!r}, verify=True)")
    print(
        "Starting the private Docker Engine and the container (a few seconds) ...",
        file=sys.stderr,
        flush=True,
    )
    with launch(
        PROBE,
        gpus=spec,
        image=IMAGE,
        context=CallerContext(),
        verify=True,
        docker_kwargs={"network_mode": "none"},
        **sim.launch_kwargs(container=True),
    ) as run:
        code = run.wait(timeout=120)
        print(_indent(run.logs()))
    print(
        "\nnvidia-smi inside lists the mounted GPUs renumbered from 0 in PCI order; CUDA, "
        "told CUDA_VISIBLE_DEVICES="
        f"{run.plan.container_env['CUDA_VISIBLE_DEVICES']} with CUDA_DEVICE_ORDER=PCI_BUS_ID, "
        f"makes cuda:0 host GPU {run.plan.devices[0].label if run.plan.devices else '-'}, "
        "the first one requested. Verified: the container sees exactly the plan."
    )
    return code
