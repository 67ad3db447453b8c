"""Parse the benchmark tools' own reports into the result schema's tokens, throughput and latency.

One parser per report format:

* ``vllm bench throughput --output-json``: five keys; ``tokens_per_second`` counts prompt and
  output tokens, and the output-token count is only printed (stdout) or derived;
* ``vllm bench latency --output-json``: per-iteration batch latencies in seconds;
* ``vllm bench serve --save-result``: per-request statistics in milliseconds;
* ``trtllm-bench throughput|latency --report_json``: a nested report in milliseconds, whose
  percentiles are nearest-rank and whose output tokens include the first token.

The parsers are pure: they take the parsed JSON (see :func:`load_native_report`) and return a
:class:`Parsed`. A figure the report does not carry is ``None``, never zero, and every derived
figure says how it was derived in ``Parsed.notes``. A report that is not in the tool's format
raises :class:`~gpuroute.errors.NativeReportError` naming the tool, the key path and what was
expected; no other exception escapes for any JSON value given as the report.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuroute.bench.result import Latency, Stats, Throughput, Tokens
from gpuroute.bench.stats import summarize
from gpuroute.errors import BenchConfigError, NativeReportError

__all__ = [
    "TOOL_TRTLLM",
    "TOOL_VLLM_LATENCY",
    "TOOL_VLLM_SERVE",
    "TOOL_VLLM_THROUGHPUT",
    "Parsed",
    "load_native_report",
    "parse_trtllm",
    "parse_vllm_latency",
    "parse_vllm_serve",
    "parse_vllm_throughput",
]

TOOL_VLLM_THROUGHPUT = "vllm bench throughput"
TOOL_VLLM_LATENCY = "vllm bench latency"
TOOL_VLLM_SERVE = "vllm bench serve"
TOOL_TRTLLM = "trtllm-bench"

_VLLM_THROUGHPUT_KEYS = (
    "elapsed_time",
    "num_requests",
    "total_num_tokens",
    "requests_per_second",
    "tokens_per_second",
)
_VLLM_LATENCY_KEYS = ("avg_latency", "std_latency", "latencies", "percentiles")

_EXPECTED = {
    TOOL_VLLM_THROUGHPUT: "the JSON written by --output-json (keys: "
    + ", ".join(_VLLM_THROUGHPUT_KEYS)
    + ")",
    TOOL_VLLM_LATENCY: "the JSON written by --output-json (keys: "
    + ", ".join(_VLLM_LATENCY_KEYS)
    + ")",
    TOOL_VLLM_SERVE: "the JSON written by --save-result (keys: duration, completed, failed, "
    "total_input_tokens, total_output_tokens, request_throughput, output_throughput, "
    "mean_/median_/std_/p<P>_<metric>_ms)",
    TOOL_TRTLLM: "the JSON written by --report_json (objects: engine, world_info, "
    "request_info, performance, optional streaming_metrics)",
}

_WRITTEN_BY = {
    TOOL_VLLM_THROUGHPUT: "--output-json",
    TOOL_VLLM_LATENCY: "--output-json",
    TOOL_VLLM_SERVE: "--save-result",
    TOOL_TRTLLM: "--report_json",
}

# Integers in a report are counts; anything beyond int64 is not one, and refusing it keeps
# every later product and quotient finite.
_MAX_COUNT = 2**63 - 1

_STDOUT_PROMPT = re.compile(r"^\s*Total num prompt tokens:\s+(\d+)\s*$", re.MULTILINE)
_STDOUT_OUTPUT = re.compile(r"^\s*Total num output tokens:\s+(\d+)\s*$", re.MULTILINE)

_SERVE_METRICS = ("ttft", "tpot", "itl", "e2el")
_SERVE_PERCENTILES = ("50", "90", "95", "99")
_TRT_PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "minimum", "maximum", "average")

# Relative tolerance for a report's own summaries against the samples it also holds.
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Parsed:
    """The figures one native report yields, in the result schema's models."""

    tokens: Tokens
    throughput: Throughput
    latency: Latency
    duration_s: float | None
    """The tool's timed region, in seconds."""
    tool_version: str | None
    """The tool's version when the report carries it (TRT-LLM's ``engine.version``)."""
    notes: tuple[str, ...] = ()
    """How each derived figure was derived, and anything odd found in the report."""


# --------------------------------------------------------------------------- reading


def load_native_report(path: str | os.PathLike[str], tool: str) -> Any:
    """Read a tool's JSON report.

    A missing or unreadable file, or one that is not JSON, raises NativeReportError naming
    the file and the tool and saying what to check.
    """
    target = Path(path)
    flag = next(
        (flag for name, flag in _WRITTEN_BY.items() if tool == name or tool.startswith(name + " ")),
        None,
    )
    written = f"the tool was given {flag} {target}" if flag else "the tool was told to write it"
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NativeReportError(
            f"{tool} report {target} does not exist; check that the run finished (see its "
            f"log) and that {written}"
        ) from None
    except IsADirectoryError:
        raise NativeReportError(
            f"{tool} report {target} is a directory, not a file; check that {written}"
        ) from None
    except UnicodeDecodeError as exc:
        raise NativeReportError(
            f"{tool} report {target} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            f"check that {written} and nothing else wrote to that path"
        ) from None
    except OSError as exc:
        raise NativeReportError(
            f"{tool} report {target} cannot be read: {exc.strerror or exc}; check its "
            "permissions and the volume it is on"
        ) from None
    if not text.strip():
        raise NativeReportError(
            f"{tool} report {target} is empty; check that the run was not stopped before it "
            "wrote its report"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "check that the run was not cut off while writing it"
        if exc.msg == "Extra data":
            hint = (
                "it holds more than one JSON document (written with --append-result?); "
                "give each run its own file"
            )
        raise NativeReportError(
            f"{tool} report {target} is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); {hint}"
        ) from None
    except RecursionError:
        raise NativeReportError(
            f"{tool} report {target} is nested too deeply to be a benchmark report"
        ) from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise NativeReportError(
            f"{tool} report {target} is not a benchmark report JSON: {exc}"
        ) from None


class _Reader:
    """Typed access to one report, raising NativeReportError with the key path."""

    def __init__(self, tool: str, source: str | os.PathLike[str] | None) -> None:
        self.tool = tool
        self.where = (
            f"{tool} report {os.fspath(source)}" if source is not None else f"{tool} report"
        )
        self.expected = _EXPECTED[tool]

    def fail(self, problem: str) -> NativeReportError:
        return NativeReportError(f"{self.where}: {problem}; expected {self.expected}")

    def root(self, report: object) -> Mapping[str, Any]:
        if not isinstance(report, Mapping):
            raise self.fail(f"the report is {_describe(report)}, not a JSON object")
        return report

    def _get(self, obj: Mapping[str, Any], key: str, path: str, *, required: bool) -> object:
        if key not in obj:
            if required:
                raise self.fail(f"missing key {_join(path, key)!r}")
            return None
        return obj[key]

    def mapping(self, obj: Mapping[str, Any], key: str, path: str = "") -> Mapping[str, Any]:
        value = self._get(obj, key, path, required=True)
        if not isinstance(value, Mapping):
            raise self.fail(f"{_join(path, key)!r} is {_describe(value)}, not a JSON object")
        return value

    def optional_mapping(
        self, obj: Mapping[str, Any], key: str, path: str = ""
    ) -> Mapping[str, Any] | None:
        value = self._get(obj, key, path, required=False)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(f"{_join(path, key)!r} is {_describe(value)}, not a JSON object")
        return value

    def number(
        self, obj: Mapping[str, Any], key: str, path: str = "", *, positive: bool = False
    ) -> float:
        value = self._get(obj, key, path, required=True)
        return self.as_number(value, _join(path, key), positive=positive)

    def optional_number(self, obj: Mapping[str, Any], key: str, path: str = "") -> float | None:
        value = self._get(obj, key, path, required=False)
        if value is None:
            return None
        return self.as_number(value, _join(path, key), positive=False)

    def as_number(self, value: object, where: str, *, positive: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{where!r} is {_describe(value)}, not a number")
        if isinstance(value, int) and abs(value) > _MAX_COUNT:
            raise self.fail(f"{where!r} is {_show(value)}, too large to be a measurement")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(f"{where!r} is {value}, not a finite number")
        if number < 0:
            raise self.fail(f"{where!r} is {_show(value)}, a negative quantity")
        if positive and number == 0:
            raise self.fail(f"{where!r} is 0, but it is a duration and must be positive")
        return number

    def count(self, obj: Mapping[str, Any], key: str, path: str = "", *, minimum: int = 0) -> int:
        value = self._get(obj, key, path, required=True)
        return self._as_count(value, _join(path, key), minimum=minimum)

    def optional_count(self, obj: Mapping[str, Any], key: str, path: str = "") -> int | None:
        value = self._get(obj, key, path, required=False)
        if value is None:
            return None
        return self._as_count(value, _join(path, key), minimum=0)

    def _as_count(self, value: object, where: str, *, minimum: int) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where!r} is {_describe(value)}, not an integer count")
        if value > _MAX_COUNT:
            raise self.fail(f"{where!r} is {_show(value)}, too large to be a count")
        if value < minimum:
            raise self.fail(f"{where!r} is {_show(value)}, not a count of at least {minimum}")
        return value

    def optional_text(self, obj: Mapping[str, Any], key: str, path: str = "") -> str | None:
        value = self._get(obj, key, path, required=False)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{_join(path, key)!r} is {_describe(value)}, not a string")
        return value

    def samples(self, obj: Mapping[str, Any], key: str, path: str = "") -> list[float]:
        value = self._get(obj, key, path, required=True)
        where = _join(path, key)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise self.fail(f"{where!r} is {_describe(value)}, not a list of numbers")
        if not value:
            raise self.fail(f"{where!r} is an empty list: the run timed no iteration")
        return [
            self.as_number(item, f"{where}[{i}]", positive=False) for i, item in enumerate(value)
        ]

    def count_product(self, value: float, where: str) -> int:
        """``round(value)`` for a product of report figures that must be a token count."""
        if not math.isfinite(value) or value > _MAX_COUNT:
            raise self.fail(f"{where} is {value}, too large to be a token count")
        return round(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: object) -> str:
    """``repr`` of a scalar for a message, short even for a huge integer (whose ``str`` may
    exceed Python's digit limit and raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, (int, float)):
        return f"a number ({_show(value)})"
    if isinstance(value, Mapping):
        return "a JSON object"
    if isinstance(value, Sequence):
        return "a list"
    return f"a {type(value).__name__}"


def _check_arg(name: str, value: int | None, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchConfigError(f"{name} must be an integer of at least {minimum}, not {value!r}")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-12)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# --------------------------------------------------------------------------- vLLM


def parse_vllm_throughput(
    report: Mapping[str, Any],
    *,
    input_len: int | None,
    output_len: int | None,
    stdout: str = "",
    source: str | os.PathLike[str] | None = None,
) -> Parsed:
    """``vllm bench throughput --output-json``.

    The report has ``elapsed_time, num_requests, total_num_tokens, requests_per_second,
    tokens_per_second``; ``tokens_per_second`` counts prompt and output tokens. The output
    and prompt totals come from the stdout lines ``Total num output tokens:`` / ``Total num
    prompt tokens:`` when given, else from ``num_requests x output_len`` (exact: the tool
    forces ``ignore_eos``) and ``total_num_tokens`` minus that. ``source`` names the file in
    error messages.
    """
    _check_arg("input_len", input_len, minimum=0)
    _check_arg("output_len", output_len, minimum=0)
    r = _Reader(TOOL_VLLM_THROUGHPUT, source)
    data = r.root(report)
    elapsed = r.number(data, "elapsed_time", positive=True)
    num_requests = r.count(data, "num_requests")
    total_tokens = r.count(data, "total_num_tokens")
    requests_per_s = r.number(data, "requests_per_second")
    total_tok_per_s = r.number(data, "tokens_per_second")
    notes: list[str] = []

    stdout_prompt = _last_count(_STDOUT_PROMPT, stdout)
    stdout_output = _last_count(_STDOUT_OUTPUT, stdout)

    output_total: int | None
    if stdout_output is not None:
        output_total = stdout_output
        notes.append("tokens.output_total from stdout 'Total num output tokens:'")
    elif output_len is not None:
        output_total = num_requests * output_len
        notes.append(
            "tokens.output_total = num_requests x output_len "
            "(exact: vllm bench throughput forces ignore_eos)"
        )
    else:
        output_total = None
        notes.append(
            "tokens.output_total unknown: no 'Total num output tokens:' line in stdout "
            "and no output_len"
        )

    input_total: int | None
    if stdout_prompt is not None:
        input_total = stdout_prompt
        notes.append("tokens.input_total from stdout 'Total num prompt tokens:'")
    elif output_total is not None and total_tokens >= output_total:
        input_total = total_tokens - output_total
        notes.append("tokens.input_total = total_num_tokens - tokens.output_total")
    elif input_len is not None:
        input_total = num_requests * input_len
        notes.append("tokens.input_total = num_requests x input_len")
    else:
        input_total = None

    if (
        output_total is not None
        and input_total is not None
        and input_total + output_total != total_tokens
    ):
        notes.append(
            f"prompt + output tokens ({input_total} + {output_total}) differ from the "
            f"report's total_num_tokens ({total_tokens})"
        )
    if (
        input_len is not None
        and output_len is not None
        and total_tokens != num_requests * (input_len + output_len)
    ):
        notes.append(
            f"total_num_tokens {total_tokens} != num_requests x (input_len + output_len) = "
            f"{num_requests * (input_len + output_len)}: the dataset's prompt lengths differ "
            "from input_len (re-tokenised random prompts, --random-range-ratio) or n > 1"
        )

    return Parsed(
        tokens=Tokens(
            input_total=input_total,
            output_total=output_total,
            requests_completed=num_requests,
        ),
        throughput=Throughput(
            requests_per_s=requests_per_s,
            output_tok_per_s=_ratio(output_total, elapsed),
            total_tok_per_s=total_tok_per_s,
        ),
        latency=Latency(),
        duration_s=elapsed,
        tool_version=None,
        notes=tuple(notes),
    )


def _last_count(pattern: re.Pattern[str], text: str) -> int | None:
    matches = pattern.findall(text)
    if not matches:
        return None
    value = int(matches[-1])
    return value if value <= _MAX_COUNT else None


def parse_vllm_latency(
    report: Mapping[str, Any],
    *,
    batch_size: int,
    input_len: int,
    output_len: int,
    source: str | os.PathLike[str] | None = None,
) -> Parsed:
    """``vllm bench latency --output-json``.

    The report has ``avg_latency, std_latency, latencies, percentiles``, in seconds per
    batch. ``latency.batch_latency_s`` is summarised from ``latencies`` (numpy's linear
    percentiles, as vLLM's own); the duration is their sum (warm-up excluded), and the token
    counts are iterations x ``batch_size`` x the lengths (exact: the tool forces
    ``ignore_eos`` and fixed-length random prompts).
    """
    _check_arg("batch_size", batch_size, minimum=1)
    _check_arg("input_len", input_len, minimum=0)
    _check_arg("output_len", output_len, minimum=0)
    r = _Reader(TOOL_VLLM_LATENCY, source)
    data = r.root(report)
    avg_latency = r.number(data, "avg_latency")
    std_latency = r.number(data, "std_latency")
    latencies = r.samples(data, "latencies")
    percentiles = r.mapping(data, "percentiles")
    reported: dict[str, float] = {
        str(key): r.as_number(value, f"percentiles.{key}", positive=False)
        for key, value in percentiles.items()
    }
    duration = math.fsum(latencies)
    if duration <= 0:
        raise r.fail("'latencies' are all 0: no iteration was timed")

    stats = summarize(latencies, "numpy_linear")
    assert stats is not None  # latencies is non-empty
    notes: list[str] = [
        "latency.batch_latency_s summarised from 'latencies' (numpy linear percentiles)",
        "duration_s = sum of 'latencies' (timed iterations; warm-up excluded)",
        "tokens = iterations x batch_size x input_len/output_len "
        "(exact: vllm bench latency forces ignore_eos; n = 1 assumed)",
    ]
    if not _close(avg_latency, stats.mean or 0.0):
        notes.append(f"avg_latency {avg_latency} differs from the mean of latencies {stats.mean}")
    if not _close(std_latency, stats.std or 0.0):
        notes.append(f"std_latency {std_latency} differs from the std of latencies {stats.std}")
    for key, ours in (("50", stats.p50), ("90", stats.p90), ("99", stats.p99)):
        theirs = reported.get(key)
        if theirs is not None and ours is not None and not _close(theirs, ours):
            notes.append(f"percentiles[{key!r}] {theirs} differs from p{key} of latencies {ours}")

    iterations = len(latencies)
    requests = iterations * batch_size
    input_total = requests * input_len
    output_total = requests * output_len
    return Parsed(
        tokens=Tokens(
            input_total=input_total,
            output_total=output_total,
            requests_completed=requests,
        ),
        throughput=Throughput(
            requests_per_s=requests / duration,
            output_tok_per_s=output_total / duration,
            total_tok_per_s=(input_total + output_total) / duration,
        ),
        latency=Latency(percentile_method="numpy_linear", batch_latency_s=stats),
        duration_s=duration,
        tool_version=None,
        notes=tuple(notes),
    )


def parse_vllm_serve(
    report: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None
) -> Parsed:
    """``vllm bench serve --save-result``.

    Counts and throughputs map across directly. Each of TTFT, TPOT, ITL and E2EL becomes
    Stats (count = completed requests; mean, std, p50 = median, and p90/p95/p99 when the run
    asked for them) or None when the report has none of its keys. vLLM writes 0 for a metric
    with no samples (a non-streaming endpoint has no TTFT), so a metric whose figures are all
    exactly zero is taken as not measured.
    """
    r = _Reader(TOOL_VLLM_SERVE, source)
    data = r.root(report)
    duration = r.number(data, "duration", positive=True)
    completed = r.count(data, "completed")
    failed = r.optional_count(data, "failed")
    notes: list[str] = []

    goodput: float | None = None
    for key in ("request_goodput", "request_goodput:"):
        value = r.optional_number(data, key)
        if value is not None:
            goodput = value
    if goodput is not None:
        notes.append(f"request_goodput = {goodput} req/s (not part of the result schema)")

    stats: dict[str, Stats | None] = {}
    for metric in _SERVE_METRICS:
        stats[metric] = _serve_stats(r, data, metric, completed, notes)
    any_stats = any(value is not None for value in stats.values())

    return Parsed(
        tokens=Tokens(
            input_total=r.optional_count(data, "total_input_tokens"),
            output_total=r.optional_count(data, "total_output_tokens"),
            requests_completed=completed,
            requests_failed=failed,
        ),
        throughput=Throughput(
            requests_per_s=r.optional_number(data, "request_throughput"),
            output_tok_per_s=r.optional_number(data, "output_throughput"),
            total_tok_per_s=r.optional_number(data, "total_token_throughput"),
        ),
        latency=Latency(
            percentile_method="numpy_linear" if any_stats else None,
            ttft_ms=stats["ttft"],
            tpot_ms=stats["tpot"],
            itl_ms=stats["itl"],
            e2el_ms=stats["e2el"],
        ),
        duration_s=duration,
        tool_version=None,
        notes=tuple(notes),
    )


def _serve_stats(
    r: _Reader, data: Mapping[str, Any], metric: str, completed: int, notes: list[str]
) -> Stats | None:
    mean = r.optional_number(data, f"mean_{metric}_ms")
    median = r.optional_number(data, f"median_{metric}_ms")
    std = r.optional_number(data, f"std_{metric}_ms")
    pct = {p: r.optional_number(data, f"p{p}_{metric}_ms") for p in _SERVE_PERCENTILES}
    values = [v for v in (mean, median, std, *pct.values()) if v is not None]
    if not values:
        return None
    if all(v == 0 for v in values):
        notes.append(
            f"latency.{metric}_ms is null: the report's {metric} figures are all 0, which "
            "vLLM writes for a metric with no samples"
        )
        return None
    if completed == 0:
        notes.append(f"latency.{metric}_ms is null: no request completed")
        return None
    p50 = pct["50"] if pct["50"] is not None else median
    return Stats(
        count=completed,
        mean=mean,
        std=std,
        p50=p50,
        p90=pct["90"],
        p95=pct["95"],
        p99=pct["99"],
    )


# --------------------------------------------------------------------------- TensorRT-LLM


def parse_trtllm(
    report: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None
) -> Parsed:
    """``trtllm-bench throughput|latency --report_json``.

    Token totals are ``round(avg_length x num_requests)`` (TRT-LLM's output tokens include the
    first token); throughputs are the report's system figures; E2EL comes from
    ``performance.request_latency_percentiles_ms`` and, for streaming runs, TTFT and TPOT from
    ``streaming_metrics``. Percentiles are nearest-rank (``sorted[int(n * q)]``).
    """
    r = _Reader(TOOL_TRTLLM, source)
    data = r.root(report)
    engine = r.mapping(data, "engine")
    version = r.optional_text(engine, "version", "engine")
    request_info = r.mapping(data, "request_info")
    num_requests = r.count(request_info, "num_requests", "request_info", minimum=1)
    avg_input = r.number(request_info, "avg_input_length", "request_info")
    avg_output = r.number(request_info, "avg_output_length", "request_info")
    performance = r.mapping(data, "performance")
    total_latency_ms = r.number(performance, "total_latency_ms", "performance", positive=True)
    requests_per_s = r.number(performance, "request_throughput_req_s", "performance")
    output_tok_per_s = r.number(performance, "system_output_throughput_tok_s", "performance")
    total_tok_per_s = r.optional_number(performance, "system_total_throughput_tok_s", "performance")
    e2el = _trt_stats(
        r,
        r.mapping(performance, "request_latency_percentiles_ms", "performance"),
        "performance.request_latency_percentiles_ms",
        num_requests,
    )
    streaming = r.optional_mapping(data, "streaming_metrics")
    ttft: Stats | None = None
    tpot: Stats | None = None
    if streaming is not None:
        block = r.optional_mapping(streaming, "ttft_percentiles", "streaming_metrics")
        if block is not None:
            ttft = _trt_stats(r, block, "streaming_metrics.ttft_percentiles", num_requests)
        block = r.optional_mapping(streaming, "tpot_percentiles", "streaming_metrics")
        if block is not None:
            tpot = _trt_stats(r, block, "streaming_metrics.tpot_percentiles", num_requests)

    output_total = r.count_product(
        avg_output * num_requests, "request_info.avg_output_length x num_requests"
    )
    input_total = r.count_product(
        avg_input * num_requests, "request_info.avg_input_length x num_requests"
    )
    notes = [
        "tokens.output_total = round(request_info.avg_output_length x num_requests) "
        "(TRT-LLM counts the first token as an output token)",
        "tokens.input_total = round(request_info.avg_input_length x num_requests)",
        "duration_s = performance.total_latency_ms / 1000 "
        "(first request's start to last request's end)",
    ]
    if total_tok_per_s is None:
        notes.append(
            "throughput.total_tok_per_s is null: this trtllm-bench version does not report "
            "performance.system_total_throughput_tok_s"
        )
    if streaming is None:
        notes.append("latency.ttft_ms and tpot_ms are null: not a streaming run")
    return Parsed(
        tokens=Tokens(
            input_total=input_total,
            output_total=output_total,
            requests_completed=num_requests,
        ),
        throughput=Throughput(
            requests_per_s=requests_per_s,
            output_tok_per_s=output_tok_per_s,
            total_tok_per_s=total_tok_per_s,
        ),
        latency=Latency(percentile_method="nearest_rank", ttft_ms=ttft, tpot_ms=tpot, e2el_ms=e2el),
        duration_s=total_latency_ms / 1000.0,
        tool_version=version,
        notes=tuple(notes),
    )


def _trt_stats(r: _Reader, block: Mapping[str, Any], path: str, count: int) -> Stats | None:
    values = {key: r.optional_number(block, key, path) for key in _TRT_PERCENTILE_KEYS}
    if all(value is None for value in values.values()):
        return None
    return Stats(
        count=count,
        mean=values["average"],
        min=values["minimum"],
        max=values["maximum"],
        p50=values["p50"],
        p90=values["p90"],
        p95=values["p95"],
        p99=values["p99"],
    )
