"""A container pinned to host GPUs 3 and 1, in that order, verified with nvidia-smi.

    python examples/pinned_container.py [IMAGE]

Inside, nvidia-smi numbers the two GPUs 0 and 1 in PCI order (host GPU 1 first), while
CUDA_VISIBLE_DEVICES=1,0 with CUDA_DEVICE_ORDER=PCI_BUS_ID makes cuda:0 host GPU 3.
"""

from __future__ import annotations

import sys

from _host import gpu_host

import gpuroute


def main(image: str | None) -> int:
    with gpu_host(image) as host:
        spec = "3,1" if len(host.inventory.gpus) >= 4 else "1,0"
        command = ["sh", "-c", "nvidia-smi -L; echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"]
        if host.simulated:
            command[2] += "; cuda-devices"  # the simulated host's stand-in for CUDA
        with gpuroute.launch(
            command,
            gpus=spec,
            image=host.image,
            inventory=host.inventory,
            docker_host=host.docker_host,
            verify=True,  # compare nvidia-smi -L inside with the plan; stop if they differ
            docker_kwargs={"network_mode": "none"},
        ) as run:
            code = run.wait(timeout=300)
            print(run.logs())
            for ordinal, device in run.plan.container_map.items():
                print(f"cuda:{ordinal} in the container is host {device.describe()}")
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
