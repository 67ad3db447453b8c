"""gpuroute on Ray: work spread over many GPU servers, each node routing and leasing locally.

Ray counts GPUs per node and sets ``CUDA_VISIBLE_DEVICES`` for a task; gpuroute turns what
Ray gave a task into that node's devices (UUIDs, MIG devices), leases them on the node so
that people who do not use Ray see them taken, and launches containers pinned to them.

* ``here()``: in a task or actor given GPUs (or a MIG profile's resource), route and lease
  them on its node; ``Placement.launch(work)`` starts a container on exactly them;
* ``launch(work, gpus=N)``: from a driver, run work on N GPUs of some node; a ``RayLaunch``
  handle (wait, logs, stop) comes back;
* ``node_resources(inventory)``: the ``ray start`` resources of a host
  (``gpuroute ray resources``).

Ray is the optional ``ray`` extra (``pip install 'gpuroute[ray]'``); it is imported only
when one of these runs, never by ``import gpuroute`` or ``import gpuroute.ray``.
"""

from __future__ import annotations

from gpuroute.ray.backend import RayBackend, RayLaunch, check_fits, launch
from gpuroute.ray.resources import NodeResources, mig_resource, node_resources
from gpuroute.ray.runtime import RayError, connect, load_ray
from gpuroute.ray.task import Assignment, Placement, assigned, here, task_holder

__all__ = [
    "Assignment",
    "NodeResources",
    "Placement",
    "RayBackend",
    "RayError",
    "RayLaunch",
    "assigned",
    "check_fits",
    "connect",
    "here",
    "launch",
    "load_ray",
    "mig_resource",
    "node_resources",
    "task_holder",
]
