"""The docker CLI: argv for ``docker run``, one list element per argument, no shell."""

from __future__ import annotations

from collections.abc import Sequence

from gpuroute.backends.docker import cdi_device_names
from gpuroute.core.plan import RoutingPlan

__all__ = ["docker_run_argv", "gpus_flag"]


def gpus_flag(plan: RoutingPlan) -> list[str]:
    """``--gpus`` and its value, or nothing for no GPU.

    The value is one CSV record, so a comma inside a field needs double quotes around that
    field: ``"device=GPU-a,GPU-b","capabilities=compute,utility"``. Without them the CLI reads
    ``device=GPU-a`` plus a bare count, and the engine refuses the request or, worse, takes
    only the first device. The quotes are part of the argv element; no shell is involved.
    """
    if not plan.devices:
        return []
    devices = ",".join(plan.uuids)
    caps = ",".join(plan.driver_capabilities)
    return ["--gpus", f'"device={devices}","capabilities={caps}"']


def docker_run_argv(
    plan: RoutingPlan,
    image: str,
    command: Sequence[str] = (),
    *,
    docker: Sequence[str] = ("docker",),
    options: Sequence[str] = ("--rm",),
    cdi: bool = False,
) -> list[str]:
    """``docker run`` argv that runs ``command`` in ``image`` on exactly the planned GPUs.

    ``options`` go before the image (default ``--rm``). ``cdi=True`` names the devices with
    ``--device nvidia.com/gpu=<UUID>`` instead of ``--gpus``.
    """
    argv = [*docker, "run", *options]
    if cdi:
        for name in cdi_device_names(plan):
            argv += ["--device", name]
    else:
        argv += gpus_flag(plan)
    for key, value in plan.container_run_env.items():
        argv += ["-e", f"{key}={value}"]
    return [*argv, image, *command]
