"""A CPU-only container from an image that bakes NVIDIA_VISIBLE_DEVICES=all (as CUDA images
do): gpuroute writes NVIDIA_VISIBLE_DEVICES=void and an empty CUDA_VISIBLE_DEVICES, so the
container sees no GPU even under a default `nvidia` runtime.

    python examples/zero_gpu.py [IMAGE]
"""

from __future__ import annotations

import sys

from _host import gpu_host

import gpuroute
from gpuroute.testing.engine import IMAGE_CUDA_ALL


def main(image: str | None) -> int:
    with gpu_host(image) as host:
        image_name = IMAGE_CUDA_ALL if host.simulated else host.image
        with gpuroute.launch(
            [
                "sh",
                "-c",
                "nvidia-smi -L; echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES "
                "CUDA_VISIBLE_DEVICES=[$CUDA_VISIBLE_DEVICES]",
            ],
            gpus="none",
            image=image_name,
            inventory=host.inventory,
            docker_host=host.docker_host,
            verify=True,  # nvidia-smi must list nothing
            docker_kwargs={"network_mode": "none", "runtime": "nvidia"}
            if host.simulated
            else {"network_mode": "none"},
        ) as run:
            run.wait(timeout=300)
            print(run.logs())
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
