"""docker-py: keyword arguments for ``client.containers.create``/``run``."""

from __future__ import annotations

from typing import Any

from gpuroute.core.plan import RoutingPlan

__all__ = ["cdi_device_names", "container_kwargs", "device_requests"]


def cdi_device_names(plan: RoutingPlan) -> list[str]:
    """Fully qualified CDI names (``nvidia.com/gpu=<UUID>``) of the planned devices."""
    return [f"nvidia.com/gpu={uuid}" for uuid in plan.uuids]


def device_requests(plan: RoutingPlan, *, cdi: bool = False) -> list[Any]:
    """The engine's device requests for a plan: none for no GPU.

    ``nvidia`` driver (default): the planned UUIDs, with capability ``gpu`` plus the plan's
    driver capabilities, which the engine passes on as ``NVIDIA_DRIVER_CAPABILITIES``.
    ``cdi=True``: CDI device names, for engines with CDI enabled (Docker 25+).
    """
    if not plan.devices:
        return []
    from docker.types import DeviceRequest

    if cdi:
        return [DeviceRequest(driver="cdi", device_ids=cdi_device_names(plan))]
    return [
        DeviceRequest(
            driver="nvidia",
            device_ids=list(plan.uuids),
            capabilities=[["gpu", *plan.driver_capabilities]],
        )
    ]


def container_kwargs(plan: RoutingPlan, *, cdi: bool = False) -> dict[str, Any]:
    """``device_requests`` and ``environment`` for ``containers.create(image, cmd, **kw)``.

    The environment holds the container view (``CUDA_VISIBLE_DEVICES`` as ranks with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) and the host view too, so that an image that bakes
    ``NVIDIA_VISIBLE_DEVICES=all`` run under a default ``nvidia`` runtime still gets exactly
    the planned devices (``void`` for none).
    """
    return {
        "device_requests": device_requests(plan, cdi=cdi),
        "environment": dict(plan.container_run_env),
    }
