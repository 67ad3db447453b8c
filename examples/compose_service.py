"""A compose service that reserves every GPU (`count: all`), launched for one GPU: gpuroute
replaces the reservation, so the container sees exactly GPU 2 and nothing else.

    python examples/compose_service.py [IMAGE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _host import gpu_host

import gpuroute

COMPOSE = """\
version: "3.8"
services:
  worker:
    image: {image}
    network_mode: none
    command: ["nvidia-smi", "-L"]
    deploy:
      resources:
        reservations:
          devices:
            - driver: nvidia
              count: all
              capabilities: [gpu]
"""


def main(image: str | None) -> int:
    with gpu_host(image) as host, tempfile.TemporaryDirectory() as project:
        Path(project, "compose.yaml").write_text(COMPOSE.format(image=host.image))
        env = {"DOCKER_HOST": host.docker_host} if host.docker_host else {}
        with gpuroute.launch(
            [],  # the service's own command
            gpus="2",
            compose_service="worker",
            cwd=project,
            inventory=host.inventory,
            docker_host=env.get("DOCKER_HOST"),
            verify=True,
        ) as run:
            code = run.wait(timeout=300)
            print(run.logs())
            for note in run.notes:
                print("note:", note)
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
