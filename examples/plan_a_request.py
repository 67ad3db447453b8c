"""Plan a GPU request and print every view of it.

    python examples/plan_a_request.py [SPEC]

Uses this host's GPUs (or the snapshot named by GPUROUTE_INVENTORY); on a machine with no
NVIDIA driver it uses the built-in simulated 8 x H100 host instead.
"""

from __future__ import annotations

import sys

import gpuroute
from gpuroute.testing import topology


def main(spec: str) -> None:
    try:
        inventory = gpuroute.default_inventory()
    except gpuroute.NVMLError:
        print("(no NVIDIA driver here: using the simulated host h100-sxm-8)\n")
        inventory = topology("h100-sxm-8")

    p = gpuroute.plan(spec, inventory)
    print(p.explain())

    # The three environments, as plain dicts:
    print("docker run -e ...      ", dict(p.host_env))
    print("inside the container   ", dict(p.container_env))
    for ordinal, device in p.container_map.items():
        print(f"cuda:{ordinal} in the container is host {device.describe()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "3,1")
