"""A local torchrun job on GPUs 5 and 2: one worker per GPU, worker i on cuda:i.

    python examples/torchrun_job.py

Each worker reports which GPU its cuda:LOCAL_RANK is. On a machine without GPUs the plan is
made on the simulated host and the workers run on the CPU (gloo), which is enough to show the
routing: worker 0 gets host GPU 5, worker 1 host GPU 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gpuroute
from gpuroute.testing import topology

WORKER = Path(__file__).with_name("torch_worker.py")


def main() -> int:
    try:
        inventory = gpuroute.default_inventory()
    except gpuroute.NVMLError:
        print("(no NVIDIA driver here: planning on the simulated host 'h100-sxm-8')\n")
        inventory = topology("h100-sxm-8")
    spec = "5,2" if len(inventory.gpus) >= 6 else "1,0"
    with gpuroute.launch(
        [str(WORKER)], gpus=spec, inventory=inventory, torchrun=True, env={"OMP_NUM_THREADS": "1"}
    ) as run:
        code = run.wait(timeout=300)
        print(
            "\n".join(sorted(line for line in run.logs().splitlines() if line.startswith("worker")))
        )
        if code:
            print(run.logs())
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
