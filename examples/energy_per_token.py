"""Energy per output token of a small generation benchmark, measured on exactly the GPUs it
ran on.

    python examples/energy_per_token.py [SPEC]

On a machine with an NVIDIA driver it runs on this host's GPUs (default ``0``), reading
their energy counters through NVML by UUID. Without one it runs on the built-in simulated
host: the benchmark itself runs for real on the CPU (a tiny random model), and the energy
comes from the simulated GPUs' counters.
"""

from __future__ import annotations

import sys

from gpuroute.bench import RunOptions, run_transformers
from gpuroute.errors import NVMLError


def main(spec: str | None) -> int:
    from gpuroute.bench.simhost import SimulatedBenchHost
    from gpuroute.nvml import read_inventory

    sim = None
    try:
        options = RunOptions(gpus=spec or "0", inventory=read_inventory())
    except NVMLError:
        print("No NVIDIA driver here: on the simulated 8 x H100 host.\n")
        sim = SimulatedBenchHost("h100-sxm-8")
        options = sim.apply(RunOptions(gpus=spec or "3,1"), "transformers")
    try:
        result = run_transformers(options, input_len=32, output_len=16, num_prompts=8, batch_size=4)
    finally:
        if sim is not None:
            sim.close()
    if result.status != "ok":
        print(f"failed: {result.error}")
        return 1
    speed = result.throughput.output_tok_per_s or 0.0
    print(f"{result.tokens.output_total} output tokens at {speed:.0f} tok/s")
    for gpu in result.energy.per_gpu:
        print(f"GPU {gpu.nvml_index} {gpu.uuid}: {gpu.energy_j:.2f} J ({gpu.method})")
    energy = result.energy
    if energy.j_per_output_token is None:
        print(f"energy not measured: {energy.unavailable_reason or ', '.join(energy.warnings)}")
    else:
        print(f"{energy.j_per_output_token:.4f} J per output token")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
