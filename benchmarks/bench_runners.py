"""Runner overhead and the energy monitor's CPU cost.

    python benchmarks/bench_runners.py [--rounds N]

1. The transformers runner (in-process, on two simulated GPUs with energy sampled at the
   default 10 Hz) against a plain ``generate`` loop on the same tiny model, the same prompts
   and the same generation settings, alternating, in one process. Compared: output tokens
   per second over the timed batches (the runner's own figure against the loop's), median of
   the rounds; the ratio plain / runner is the runner's overhead (target: at most 1.05).
   The runner's whole call (model build, warm-up, result) is reported beside it.
2. The energy monitor's sampler on the 8-GPU simulated host at 10, 50 and 100 Hz: the CPU
   time the sampling thread used over the wall time (its share of one core), against a bare
   loop making the same NVML calls with no bookkeeping. The simulated NVML answers from
   memory; a real driver's calls cost more (tens of microseconds each), so on a GPU host the
   cost per sample is higher and the ratio to the bare loop lower.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time
from typing import Any

import torch

from gpuroute.api import plan
from gpuroute.bench import RunOptions, run_transformers
from gpuroute.bench.energy import EnergyMonitor
from gpuroute.bench.transformers_worker import _tiny_model
from gpuroute.testing import FakeNVML, topology

TARGET = 1.05
WORKLOAD = {"input_len": 64, "output_len": 32, "num_prompts": 16, "batch_size": 4, "seed": 0}


def plain_loop() -> float:
    """Output tokens per second of a plain generate loop (the alternative)."""
    import transformers

    tf: Any = transformers
    torch.manual_seed(0)
    model = _tiny_model(tf, torch.float32).eval()
    n, b = WORKLOAD["num_prompts"], WORKLOAD["batch_size"]
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 256, (n, WORKLOAD["input_len"]), generator=generator)
    config = tf.GenerationConfig(
        max_new_tokens=WORKLOAD["output_len"],
        min_new_tokens=WORKLOAD["output_len"],
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )

    def generate(batch: Any) -> Any:
        with torch.inference_mode():
            return model.generate(
                input_ids=batch, attention_mask=torch.ones_like(batch), generation_config=config
            )

    generate(prompts[:b])  # warm-up, as the runner does
    tokens = 0
    start = time.perf_counter()
    for first in range(0, n, b):
        out = generate(prompts[first : first + b])
        tokens += (out.shape[1] - WORKLOAD["input_len"]) * out.shape[0]
    return tokens / (time.perf_counter() - start)


def runner(options: RunOptions) -> tuple[float, float]:
    """The runner's output tokens per second, and its whole call's wall time."""
    start = time.perf_counter()
    result = run_transformers(options, **WORKLOAD)
    wall = time.perf_counter() - start
    assert result.status == "ok", result.error
    assert result.throughput.output_tok_per_s is not None
    return result.throughput.output_tok_per_s, wall


def runner_overhead(rounds: int) -> None:
    inventory = topology("h100-sxm-8")
    options = RunOptions(
        gpus="3,1",
        execution="inprocess",
        inventory=inventory,
        nvml=FakeNVML(inventory, clock=time.time, energy_update_s=0.02),
        simulated_host="h100-sxm-8",
        energy_interval_s=0.1,
    )
    plain, ours, walls = [], [], []
    plain_loop()
    runner(options)  # warm both up (imports, allocator)
    for _ in range(rounds):
        plain.append(plain_loop())
        tok, wall = runner(options)
        ours.append(tok)
        walls.append(wall)
    p, r = statistics.median(plain), statistics.median(ours)
    print("1. transformers runner against a plain generate loop (tiny model, CPU)")
    print(f"   workload: {WORKLOAD}, {rounds} alternating rounds, medians")
    print(f"   plain generate loop       {p:10.1f} output tok/s")
    print(f"   runner (timed batches)    {r:10.1f} output tok/s")
    verdict = "within" if p / r <= TARGET else "OVER"
    print(f"   ratio plain / runner      {p / r:10.3f}  ({verdict} the {TARGET} target)")
    print(f"   runner whole call         {statistics.median(walls) * 1000:10.1f} ms median")


def bare_sampling(fake: FakeNVML, handles: list[Any], interval: float, seconds: float) -> float:
    """CPU share of a loop that only makes the NVML calls, at the same rate."""
    stop = threading.Event()
    cpu: list[float] = []

    def loop() -> None:
        start = time.thread_time()
        while not stop.wait(interval):
            for h in handles:
                fake.nvmlDeviceGetTotalEnergyConsumption(h)
                fake.nvmlDeviceGetPowerUsage(h)
                fake.nvmlDeviceGetMemoryInfo(h)
        cpu.append(time.thread_time() - start)

    thread = threading.Thread(target=loop)
    wall = time.perf_counter()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return cpu[0] / (time.perf_counter() - wall)


def monitor_cost(seconds: float) -> None:
    inventory = topology("h100-sxm-8")
    devices = list(plan("all", inventory).devices)
    print("2. energy monitor sampler CPU cost, 8 simulated GPUs")
    print(f"   {'rate':>6}  {'monitor':>9}  {'bare loop':>9}  {'ratio':>6}  {'per sample':>10}")
    for interval in (0.1, 0.02, 0.01):
        fake = FakeNVML(inventory, clock=time.time, energy_update_s=0.02)
        monitor = EnergyMonitor(devices, nvml=fake, interval_s=interval, own_pids=lambda: [1])
        start = time.perf_counter()
        monitor.start()
        time.sleep(seconds)
        reading = monitor.stop()
        wall = time.perf_counter() - start
        share = (reading.sampler_cpu_s or 0.0) / wall
        samples = len(reading.watched[0].samples)
        fake.nvmlInit()
        handles = [fake.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
        bare = bare_sampling(fake, handles, interval, seconds)
        per_sample = (reading.sampler_cpu_s or 0.0) / max(samples, 1) * 1e6
        print(
            f"   {1 / interval:4.0f}Hz  {share * 100:8.2f}%  {bare * 100:8.2f}%  "
            f"{share / bare if bare else float('nan'):6.2f}  {per_sample:8.0f}µs"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    runner_overhead(args.rounds)
    monitor_cost(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
