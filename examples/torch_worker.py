"""One torchrun worker (see torchrun_job.py): joins the group and reports its GPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def main() -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    visible = os.environ["CUDA_VISIBLE_DEVICES"].split(",")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        name = torch.cuda.get_device_name(local_rank)
    else:
        name = "CPU here; on the GPU host"
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    line = (
        f"worker {rank}: cuda:{local_rank} is {visible[local_rank]} ({name}); "
        f"group of {dist.get_world_size()}, all_reduce sum {int(total)}\n"
    )
    os.write(1, line.encode())  # one write: the workers share one output
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
