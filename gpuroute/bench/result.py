"""The benchmark result schema, ``gpuroute.bench.result/1``.

One JSON document per run, the same for every runner. The rules:

* every quantity carries its unit in its name (``_s``, ``_ms``, ``_j``, ``_w``, ``_mib``,
  ``_tok_per_s``); energy is in joules;
* output tokens and total (prompt + output) tokens are kept apart;
* a value that was not measured is ``null`` and, where it matters, says why
  (``energy.unavailable_reason``); never a zero that looks like a measurement;
* per-GPU energy is keyed by the GPU's UUID and its host NVML index, so a result can be
  checked against its routing;
* the percentile method and the energy window are recorded;
* the runner's native report is kept verbatim beside the normalised figures.

Unknown keys are refused when a result is read, so a typo or a newer schema fails loudly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpuroute.bench.runners import RunnerName

__all__ = [
    "SCHEMA",
    "Energy",
    "EnergyWindow",
    "Environment",
    "ForeignProcess",
    "GPUEnergy",
    "Isolation",
    "Latency",
    "Memory",
    "GPUMemory",
    "Result",
    "RoutedDevice",
    "Routing",
    "RunnerInfo",
    "Stats",
    "Throughput",
    "Timing",
    "Tokens",
    "Workload",
    "derive_energy",
]

SCHEMA = "gpuroute.bench.result/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Stats(_Model):
    """Summary of a sample; the unit is in the name of the field holding it."""

    count: int = Field(ge=1)
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


class RunnerInfo(_Model):
    name: RunnerName
    """A registered runner (``gpuroute.bench.runners``)."""
    mode: str
    """``generate`` (transformers), ``throughput``, ``latency`` or ``serve``."""
    execution: Literal["inprocess", "subprocess", "container"]
    tool: str
    tool_version: str | None = None
    image: str | None = None
    entrypoint: list[str] | None = None
    argv: list[str]
    native_report_path: str | None = None


class RoutedDevice(_Model):
    """One routed device, in the order requested (``cuda_ordinal`` is its CUDA ordinal in
    the program)."""

    cuda_ordinal: int
    uuid: str
    """The device's UUID: ``GPU-…``, or ``MIG-…`` for a MIG device."""
    gpu_uuid: str
    nvml_index: int
    pci_bus_id: str
    name: str
    mig_profile: str | None = None


class Routing(_Model):
    spec: str
    devices: list[RoutedDevice]
    cuda_visible_devices: str | None
    """``CUDA_VISIBLE_DEVICES`` as the program saw it (inside the container, if any)."""
    cuda_device_order: str | None
    nvidia_visible_devices: str | None
    """What the container runtime was given (containers only)."""
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    distributed_executor_backend: str | None = None
    lease_id: str | None = None
    plan: dict[str, Any]
    """The whole routing plan, as ``gpuroute plan --json`` prints it."""


class Workload(_Model):
    model: str
    model_revision: str | None = None
    load_format: str | None = None
    dtype: str | None = None
    dataset: str | None = None
    num_requests: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    batch_size: int | None = None
    ignore_eos: bool | None = None
    request_rate: float | None = None
    max_concurrency: int | None = None
    seed: int | None = None
    warmup_iters: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Timing(_Model):
    measured_window: str
    """What the window covers: ``generate_only`` (model load and warm-up excluded) or
    ``benchmark`` (the tool's whole timed run)."""
    duration_s: float | None
    start_unix_s: float | None = None
    end_unix_s: float | None = None


class Tokens(_Model):
    input_total: int | None = None
    output_total: int | None = None
    requests_completed: int | None = None
    requests_failed: int | None = None


class Throughput(_Model):
    requests_per_s: float | None = None
    output_tok_per_s: float | None = None
    total_tok_per_s: float | None = None


class Latency(_Model):
    percentile_method: Literal["numpy_linear", "nearest_rank"] | None = None
    ttft_ms: Stats | None = None
    tpot_ms: Stats | None = None
    itl_ms: Stats | None = None
    e2el_ms: Stats | None = None
    prefill_ms: Stats | None = None
    decode_ms: Stats | None = None
    batch_latency_s: Stats | None = None


class EnergyWindow(_Model):
    start_unix_s: float
    end_unix_s: float
    duration_s: float
    includes: list[str]
    excludes: list[str]


class GPUEnergy(_Model):
    """Energy of one physical GPU over the window, read on the host by UUID."""

    uuid: str
    nvml_index: int
    name: str
    method: Literal["nvml_total_energy_counter", "nvml_power_integration"] | None
    energy_j: float | None
    avg_power_w: float | None
    counter_start_mj: int | None = None
    counter_end_mj: int | None = None
    energy_uncertainty_j: float | None = None
    """How far ``energy_j`` may be from the truth, in joules (a bound, either way): for the
    counter, its update period (measured from the samples) plus the sampling interval, times
    the power; for power integration, the energy at stake between power samples. Null when
    it could not be measured (fewer than two counter changes sampled)."""
    counter_update_s: float | None = None
    """The energy counter's update period, measured from the samples: the median spacing of
    its changes."""
    unavailable_reason: str | None = None
    """Why ``energy_j`` is null: ``gpu_lost`` (the GPU fell off the bus before the window
    ended), ``counter_reset``."""
    idle_power_w: float | None = None
    power_samples: int = 0
    mig_devices: list[str] = Field(default_factory=list)
    """The routed MIG devices of this GPU: the counter is the whole GPU's, shared with its
    other slices."""
    shared_with_other_slices: bool = False


class Energy(_Model):
    method: Literal["nvml_total_energy_counter", "nvml_power_integration", "mixed", "none"]
    scope: Literal["gpu_board"] = "gpu_board"
    measured_on: Literal["host"] = "host"
    unavailable_reason: str | None = None
    window: EnergyWindow | None = None
    per_gpu: list[GPUEnergy] = Field(default_factory=list)
    gpu_energy_j: float | None = None
    gpu_energy_uncertainty_j: float | None = None
    """The sum of the GPUs' uncertainties (a bound; null if one is unknown)."""
    avg_gpu_power_w: float | None = None
    idle_adjusted_gpu_energy_j: float | None = None
    j_per_output_token: float | None = None
    j_per_token: float | None = None
    j_per_request: float | None = None
    output_tok_per_j: float | None = None
    sample_interval_s: float | None = None
    sampler_cpu_s: float | None = None
    """CPU time the background sampler used: the monitor's own overhead."""
    warnings: list[str] = Field(default_factory=list)


class GPUMemory(_Model):
    uuid: str
    nvml_index: int
    peak_used_mib: float | None
    """Peak memory in use on the device (the MIG device's own, for MIG), by every process."""


class Memory(_Model):
    per_gpu: list[GPUMemory] = Field(default_factory=list)
    peak_process_allocated_mib: float | None = None
    """Peak memory the framework itself allocated (``torch.cuda.max_memory_allocated``)."""


class Environment(_Model):
    driver_version: str | None = None
    cuda_version: str | None = None
    gpu_names: list[str] = Field(default_factory=list)
    hostname: str | None = None
    python_version: str | None = None
    gpuroute_version: str | None = None
    framework_versions: dict[str, str] = Field(default_factory=dict)
    device: str | None = None
    """Where the model ran (``cuda``, ``cpu``), when the runner knows."""
    simulated_host: str | None = None
    """The simulated topology's name when NVML was the built-in stand-in."""


class ForeignProcess(_Model):
    pid: int
    uuid: str
    nvml_index: int
    used_mib: float | None = None


class Isolation(_Model):
    checked: bool
    reason: str | None = None
    foreign_processes: list[ForeignProcess] = Field(default_factory=list)


class Result(_Model):
    """One benchmark run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    schema_: Literal["gpuroute.bench.result/1"] = Field(
        default="gpuroute.bench.result/1", alias="schema"
    )
    run_id: str
    status: Literal["ok", "failed", "partial"]
    error: str | None = None
    started_at: str
    ended_at: str | None = None
    runner: RunnerInfo
    routing: Routing
    workload: Workload
    timing: Timing
    tokens: Tokens = Field(default_factory=Tokens)
    throughput: Throughput = Field(default_factory=Throughput)
    latency: Latency = Field(default_factory=Latency)
    energy: Energy
    memory: Memory = Field(default_factory=Memory)
    environment: Environment = Field(default_factory=Environment)
    isolation: Isolation
    labels: dict[str, str] = Field(default_factory=dict)
    native_report: Any = None
    """The runner's own report, verbatim (parsed JSON)."""
    native_log_tail: str | None = None
    notes: list[str] = Field(default_factory=list)
    """How figures were derived from the native report, and anything odd found in it."""

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return data

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a temporary file renamed over ``path``), with the mode the
        umask gives a new file (0644 under the usual 022), as any other tool would."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
                f.write("\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        return cls.model_validate(json.loads(Path(path).read_text()))


def derive_energy(energy: Energy, tokens: Tokens) -> Energy:
    """Fill the per-token and per-request figures from the energy total and the counts.

    Each stays null when either side is unknown or the count is zero.
    """
    total = energy.gpu_energy_j
    out, inp, req = tokens.output_total, tokens.input_total, tokens.requests_completed
    updates: dict[str, float | None] = {
        "j_per_output_token": total / out if total is not None and out else None,
        "j_per_token": total / (out + inp) if total is not None and out and inp else None,
        "j_per_request": total / req if total is not None and req else None,
        "output_tok_per_j": out / total if total and out else None,
    }
    return energy.model_copy(update=updates)
