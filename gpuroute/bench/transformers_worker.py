"""The generation benchmark that the transformers runner runs: one self-contained script.

It imports only the standard library, torch and transformers, so the runner can run it as
``python -m gpuroute.bench.transformers_worker`` in a process of its own, or copy it into a
container image that has torch and transformers but not gpuroute. It reads a JSON
configuration and writes a JSON report (``gpuroute.bench.transformers-worker/1``):

* random prompt token ids (seeded), ``num_prompts`` of ``input_len`` tokens, in batches;
* a greedy ``generate`` per batch that always makes exactly ``output_len`` new tokens (no
  EOS), timing the moment each new token reaches the streamer: the first one ends the
  prefill (time to first token), the rest are the decode steps;
* ``warmup`` untimed batches first; the timed window (unix seconds) covers only the timed
  batches, so model loading and warm-up are outside it;
* ``--tiny`` (``"model": "tiny"``): a small Llama built from a config with random weights,
  without any hub access, so the benchmark runs for real on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

FORMAT = "gpuroute.bench.transformers-worker/1"
TINY = "tiny"
SIMULATED = "GPUROUTE_SIMULATED_HOST"  # the GPUs are simulated: the CPU stands in for them


class _TokenClock:
    """A generate() streamer that records when each new token arrives."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _tiny_model(tf: Any, dtype: Any) -> Any:
    config = tf.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return tf.AutoModelForCausalLM.from_config(config, dtype=dtype)


def run(config: dict[str, Any]) -> dict[str, Any]:
    if config.get("model") == TINY:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    tf: Any = transformers  # untyped in places: used through Any

    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    want = config.get("device", "auto")
    device = "cuda" if want == "auto" and torch.cuda.is_available() else want
    notes: list[str] = []
    if device == "auto":
        routed = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if routed and not os.environ.get(SIMULATED):
            raise SystemExit(
                f"GPUs were routed to this run (CUDA_VISIBLE_DEVICES={routed}) but torch "
                f"{torch.__version__} sees no CUDA device: a CPU-only torch build, or a driver "
                "it cannot use. Install a CUDA build of torch, or pass --device cpu to run on "
                "the CPU knowingly (the GPUs' energy would then not be this run's)."
            )
        if routed:
            notes.append("simulated host: the model ran on the CPU")
        device = "cpu"
    dtype_name = config.get("dtype", "auto")
    if dtype_name == "auto":
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    else:
        dtype = getattr(torch, dtype_name)

    load_start = time.time()
    model: Any
    if config.get("model") == TINY:
        model = _tiny_model(tf, dtype)
        model.to(device)
    else:
        kwargs: dict[str, Any] = {"dtype": dtype}
        if config.get("revision"):
            kwargs["revision"] = config["revision"]
        if device == "cuda" and torch.cuda.device_count() > 1:
            kwargs["device_map"] = "auto"  # layers spread over every visible GPU
        model = tf.AutoModelForCausalLM.from_pretrained(config["model"], **kwargs)
        if "device_map" not in kwargs:
            model.to(device)
    model.eval()
    load_s = time.time() - load_start

    input_len, output_len = int(config["input_len"]), int(config["output_len"])
    num_prompts, batch_size = int(config["num_prompts"]), int(config.get("batch_size", 1))
    vocab = int(model.config.vocab_size)
    low = 3 if vocab > 3 else 0
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(low, vocab, (num_prompts, input_len), generator=generator)
    first_device = next(model.parameters()).device
    gen = tf.GenerationConfig(
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )

    def generate(batch: Any) -> tuple[Any, _TokenClock]:
        ids = batch.to(first_device)
        clock = _TokenClock()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=gen,
                streamer=clock,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return out, clock

    warmup_start = time.time()
    for _ in range(int(config.get("warmup", 1))):
        generate(prompts[:batch_size])
    warmup_s = time.time() - warmup_start
    if device == "cuda":
        for index in range(torch.cuda.device_count()):  # every GPU the model spans
            torch.cuda.reset_peak_memory_stats(index)

    batches = []
    output_total = 0
    window_start = time.time()
    for first in range(0, num_prompts, batch_size):
        batch = prompts[first : first + batch_size]
        start = time.perf_counter()
        out, clock = generate(batch)
        end = time.perf_counter()
        new = int(out.shape[1]) - input_len
        output_total += new * int(batch.shape[0])
        batches.append(
            {
                "size": int(batch.shape[0]),
                "new_tokens_per_sequence": new,
                "latency_s": end - start,
                "token_times_s": [t - start for t in clock.times],
            }
        )
    window_end = time.time()

    peak = None
    if device == "cuda":
        peak = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / (
            1024 * 1024
        )
    return {
        "format": FORMAT,
        "window": {"start_unix_s": window_start, "end_unix_s": window_end},
        "model_load_s": load_s,
        "warmup_s": warmup_s,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if device == "cuda"
        else [],
        "input_tokens_total": num_prompts * input_len,
        "output_tokens_total": output_total,
        "batches": batches,
        "peak_allocated_mib": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the JSON configuration file")
    parser.add_argument("--output", required=True, help="where to write the JSON report")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    report = run(config)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
