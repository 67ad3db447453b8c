"""The native-report parsers, over fixtures in each tool's own format (tests/fixtures/native)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuroute.bench.parsers import (
    TOOL_TRTLLM,
    TOOL_VLLM_LATENCY,
    TOOL_VLLM_SERVE,
    TOOL_VLLM_THROUGHPUT,
    Parsed,
    load_native_report,
    parse_trtllm,
    parse_vllm_latency,
    parse_vllm_serve,
    parse_vllm_throughput,
)
from gpuroute.bench.result import Stats
from gpuroute.errors import BenchConfigError, BenchError, NativeReportError

NATIVE = Path(__file__).parent / "fixtures" / "native"


def _load(name: str) -> dict[str, Any]:
    data = json.loads((NATIVE / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def throughput_report() -> dict[str, Any]:
    return _load("vllm_throughput.json")


@pytest.fixture
def throughput_stdout() -> str:
    return (NATIVE / "vllm_throughput.stdout.txt").read_text()


@pytest.fixture
def latency_report() -> dict[str, Any]:
    return _load("vllm_latency.json")


@pytest.fixture
def serve_report() -> dict[str, Any]:
    return _load("vllm_serve.json")


@pytest.fixture
def trt_throughput_report() -> dict[str, Any]:
    return _load("trtllm_throughput.json")


@pytest.fixture
def trt_latency_report() -> dict[str, Any]:
    return _load("trtllm_latency.json")


def _exact(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=0.0)


# --------------------------------------------------------------------------- fixtures


def test_every_fixture_is_named_in_sources() -> None:
    sources = (NATIVE / "SOURCES.md").read_text()
    fixtures = sorted(p.name for p in NATIVE.iterdir() if p.name != "SOURCES.md")
    assert fixtures == [
        "trtllm_latency.json",
        "trtllm_throughput.json",
        "vllm_latency.json",
        "vllm_serve.json",
        "vllm_throughput.json",
        "vllm_throughput.stdout.txt",
    ]
    for name in fixtures:
        assert f"`{name}`" in sources


def test_load_native_report_reads_the_fixture() -> None:
    report = load_native_report(NATIVE / "vllm_throughput.json", TOOL_VLLM_THROUGHPUT)
    assert report == {
        "elapsed_time": 35.81726437201723,
        "num_requests": 1000,
        "total_num_tokens": 1151879,
        "requests_per_second": 27.919496855300455,
        "tokens_per_second": 32159.882118186633,
    }
    assert load_native_report(str(NATIVE / "vllm_serve.json"), TOOL_VLLM_SERVE)["completed"] == 200


# --------------------------------------------------------------------------- vLLM throughput


def test_vllm_throughput_with_stdout(
    throughput_report: dict[str, Any], throughput_stdout: str
) -> None:
    parsed = parse_vllm_throughput(
        throughput_report, input_len=1024, output_len=128, stdout=throughput_stdout
    )
    assert parsed.tokens.input_total == 1023879
    assert parsed.tokens.output_total == 128000
    assert parsed.tokens.requests_completed == 1000
    assert parsed.tokens.requests_failed is None
    assert parsed.throughput.requests_per_s == 27.919496855300455
    assert parsed.throughput.total_tok_per_s == 32159.882118186633
    assert parsed.throughput.output_tok_per_s == _exact(128000 / 35.81726437201723)
    assert parsed.throughput.output_tok_per_s == pytest.approx(3573.70, abs=0.005)  # stdout's
    assert parsed.duration_s == 35.81726437201723
    assert parsed.tool_version is None
    assert parsed.latency.percentile_method is None
    assert parsed.latency.batch_latency_s is None
    assert "tokens.output_total from stdout 'Total num output tokens:'" in parsed.notes
    assert "tokens.input_total from stdout 'Total num prompt tokens:'" in parsed.notes
    # 63 re-tokenised prompts came out a token or so short of 1024
    assert any("total_num_tokens 1151879 != num_requests x" in note for note in parsed.notes)


def test_vllm_throughput_derived_agrees_with_stdout(
    throughput_report: dict[str, Any], throughput_stdout: str
) -> None:
    from_stdout = parse_vllm_throughput(
        throughput_report, input_len=1024, output_len=128, stdout=throughput_stdout
    )
    derived = parse_vllm_throughput(throughput_report, input_len=1024, output_len=128)
    assert derived.tokens == from_stdout.tokens
    assert derived.tokens.output_total == 1000 * 128
    assert derived.tokens.input_total == 1151879 - 128000
    assert derived.throughput == from_stdout.throughput
    assert (
        "tokens.output_total = num_requests x output_len "
        "(exact: vllm bench throughput forces ignore_eos)"
    ) in derived.notes
    assert "tokens.input_total = total_num_tokens - tokens.output_total" in derived.notes
    assert not any("stdout" in note for note in derived.notes)


def test_vllm_throughput_stdout_wins_over_derivation(throughput_report: dict[str, Any]) -> None:
    stdout = (
        "Total num prompt tokens:  1000\nTotal num output tokens:  5\n"  # an earlier run
        "Throughput: 27.92 requests/s, 32159.88 total tokens/s, 3573.70 output tokens/s\n"
        "Total num prompt tokens:  1024000\n"
        "Total num output tokens:  127879\n"
    )
    parsed = parse_vllm_throughput(throughput_report, input_len=1024, output_len=128, stdout=stdout)
    assert parsed.tokens.input_total == 1024000
    assert parsed.tokens.output_total == 127879
    assert parsed.throughput.output_tok_per_s == _exact(127879 / 35.81726437201723)


def test_vllm_throughput_flags_stdout_that_disagrees_with_the_total(
    throughput_report: dict[str, Any],
) -> None:
    stdout = "Total num prompt tokens:  1024000\nTotal num output tokens:  128000\n"
    parsed = parse_vllm_throughput(
        throughput_report, input_len=None, output_len=None, stdout=stdout
    )
    assert parsed.tokens.output_total == 128000
    assert any(
        "(1024000 + 128000) differ from the report's total_num_tokens (1151879)" in note
        for note in parsed.notes
    )


def test_vllm_throughput_without_lengths_leaves_output_null(
    throughput_report: dict[str, Any],
) -> None:
    parsed = parse_vllm_throughput(throughput_report, input_len=None, output_len=None)
    assert parsed.tokens.output_total is None
    assert parsed.tokens.input_total is None
    assert parsed.throughput.output_tok_per_s is None  # null, never zero
    assert parsed.throughput.total_tok_per_s == 32159.882118186633
    assert any(note.startswith("tokens.output_total unknown") for note in parsed.notes)

    only_input = parse_vllm_throughput(throughput_report, input_len=1024, output_len=None)
    assert only_input.tokens.input_total == 1024000
    assert "tokens.input_total = num_requests x input_len" in only_input.notes


def test_vllm_throughput_refuses_bad_arguments(throughput_report: dict[str, Any]) -> None:
    with pytest.raises(BenchConfigError, match="output_len must be an integer of at least 0"):
        parse_vllm_throughput(throughput_report, input_len=1024, output_len=-1)


# --------------------------------------------------------------------------- vLLM latency


def test_vllm_latency(latency_report: dict[str, Any]) -> None:
    parsed = parse_vllm_latency(latency_report, batch_size=8, input_len=32, output_len=128)
    stats = parsed.latency.batch_latency_s
    assert stats is not None
    assert parsed.latency.percentile_method == "numpy_linear"
    assert stats.count == 30
    assert stats.mean == _exact(0.844703472964612)
    assert stats.std == _exact(0.0045923803876862035)
    assert stats.min == 0.8412315883784066
    assert stats.max == 0.866612504268251
    # vLLM's own np.percentile figures, and p95 (which vLLM does not report) from numpy
    assert stats.p50 == _exact(0.8436246704331117)
    assert stats.p90 == _exact(0.8475969907268477)
    assert stats.p95 == _exact(0.8489770092753466)
    assert stats.p99 == _exact(0.8615694691634654)
    assert parsed.latency.e2el_ms is None
    assert parsed.latency.ttft_ms is None

    assert parsed.tokens.requests_completed == 30 * 8
    assert parsed.tokens.input_total == 30 * 8 * 32
    assert parsed.tokens.output_total == 30 * 8 * 128
    assert parsed.duration_s == _exact(25.341104188938356)
    assert parsed.throughput.output_tok_per_s == _exact(30720 / 25.341104188938356)
    assert parsed.throughput.total_tok_per_s == _exact((30720 + 7680) / 25.341104188938356)
    assert parsed.throughput.requests_per_s == _exact(240 / 25.341104188938356)
    assert parsed.tool_version is None
    assert not any("differs" in note for note in parsed.notes)


def test_vllm_latency_notes_a_summary_that_disagrees(latency_report: dict[str, Any]) -> None:
    latency_report["avg_latency"] = 0.9
    latency_report["percentiles"]["99"] = 0.5
    parsed = parse_vllm_latency(latency_report, batch_size=8, input_len=32, output_len=128)
    assert parsed.latency.batch_latency_s is not None
    assert parsed.latency.batch_latency_s.mean == _exact(0.844703472964612)  # from the samples
    assert any(note.startswith("avg_latency 0.9 differs") for note in parsed.notes)
    assert any(note.startswith("percentiles['99'] 0.5 differs") for note in parsed.notes)


def test_vllm_latency_refuses_a_zero_batch(latency_report: dict[str, Any]) -> None:
    with pytest.raises(BenchConfigError, match="batch_size must be an integer of at least 1"):
        parse_vllm_latency(latency_report, batch_size=0, input_len=32, output_len=128)


# --------------------------------------------------------------------------- vLLM serve


def test_vllm_serve(serve_report: dict[str, Any]) -> None:
    parsed = parse_vllm_serve(serve_report)
    assert parsed.tokens.input_total == 204800
    assert parsed.tokens.output_total == 25600
    assert parsed.tokens.requests_completed == 200
    assert parsed.tokens.requests_failed == 0
    assert parsed.throughput.requests_per_s == 14.498371083583665
    assert parsed.throughput.output_tok_per_s == 1855.7914986987091
    assert parsed.throughput.total_tok_per_s == 16702.123488288384
    assert parsed.throughput.output_tok_per_s == _exact(25600 / 13.79465312668522)
    assert parsed.duration_s == 13.79465312668522
    assert parsed.tool_version is None
    assert parsed.latency.percentile_method == "numpy_linear"
    assert parsed.latency.ttft_ms == Stats(
        count=200,
        mean=135.21213206904,
        std=49.90325816549352,
        p50=126.61170437494862,
        p90=205.59432618957499,
        p95=224.56489823150932,
        p99=293.9242167674003,
    )
    assert parsed.latency.tpot_ms is not None
    assert parsed.latency.tpot_ms.mean == 14.501535075785
    assert parsed.latency.tpot_ms.p99 == 15.11026269856833
    assert parsed.latency.itl_ms is not None
    assert parsed.latency.itl_ms.p99 == 77.90779344307857  # prefill stalls in the pooled ITL
    assert parsed.latency.itl_ms.std == 9.643417213091912
    assert parsed.latency.e2el_ms == Stats(
        count=200,
        mean=1976.9070866937352,
        std=63.99464757165273,
        p50=1979.1242384266811,
        p90=2058.3997247597645,
        p95=2082.3415336201087,
        p99=2142.293775680001,
    )
    assert parsed.latency.batch_latency_s is None


def test_vllm_serve_default_percentiles(serve_report: dict[str, Any]) -> None:
    """A default run: p99 only, and no E2EL unless asked for."""
    for key in list(serve_report):
        if key.endswith("_e2el_ms") or key.startswith(("p50_", "p90_", "p95_")):
            del serve_report[key]
    parsed = parse_vllm_serve(serve_report)
    assert parsed.latency.e2el_ms is None
    assert parsed.latency.ttft_ms is not None
    assert parsed.latency.ttft_ms.p50 == 126.61170437494862  # the median
    assert parsed.latency.ttft_ms.p90 is None
    assert parsed.latency.ttft_ms.p95 is None
    assert parsed.latency.ttft_ms.p99 == 293.9242167674003


def test_vllm_serve_all_zero_metric_is_null(serve_report: dict[str, Any]) -> None:
    for key in list(serve_report):
        if key.endswith("_ttft_ms"):
            serve_report[key] = 0.0
    parsed = parse_vllm_serve(serve_report)
    assert parsed.latency.ttft_ms is None
    assert parsed.latency.tpot_ms is not None
    assert any(note.startswith("latency.ttft_ms is null") for note in parsed.notes)


def test_vllm_serve_without_metrics_has_no_method(serve_report: dict[str, Any]) -> None:
    for key in list(serve_report):
        if key.endswith("_ms"):
            del serve_report[key]
    del serve_report["failed"]
    del serve_report["total_output_tokens"]
    del serve_report["output_throughput"]
    parsed = parse_vllm_serve(serve_report)
    assert parsed.latency.percentile_method is None
    assert parsed.latency.ttft_ms is None
    assert parsed.tokens.requests_failed is None
    assert parsed.tokens.output_total is None
    assert parsed.throughput.output_tok_per_s is None
    assert parsed.tokens.requests_completed == 200


@pytest.mark.parametrize("key", ["request_goodput", "request_goodput:"])
def test_vllm_serve_goodput_either_spelling(serve_report: dict[str, Any], key: str) -> None:
    serve_report.pop("request_goodput")
    serve_report[key] = 12.25
    parsed = parse_vllm_serve(serve_report)
    assert "request_goodput = 12.25 req/s (not part of the result schema)" in parsed.notes
    assert parsed.throughput.requests_per_s == 14.498371083583665


def test_vllm_serve_null_goodput_is_silent(serve_report: dict[str, Any]) -> None:
    assert serve_report["request_goodput"] is None
    assert parse_vllm_serve(serve_report).notes == ()


# --------------------------------------------------------------------------- trtllm-bench


def test_trtllm_throughput(trt_throughput_report: dict[str, Any]) -> None:
    parsed = parse_trtllm(trt_throughput_report)
    assert parsed.tool_version == "1.1.0"
    assert parsed.tokens.requests_completed == 1000
    assert parsed.tokens.output_total == 128000
    assert parsed.tokens.input_total == 1024000
    assert parsed.throughput.output_tok_per_s == 9341.882486735016
    assert parsed.throughput.total_tok_per_s == 84076.94238061515
    assert parsed.throughput.requests_per_s == 72.98345692761731
    assert parsed.duration_s == _exact(13.701735188999999)
    assert parsed.throughput.output_tok_per_s == pytest.approx(128000 / 13.701735189, rel=1e-9)
    assert parsed.latency.percentile_method == "nearest_rank"
    assert parsed.latency.e2el_ms == Stats(
        count=1000,
        mean=10088.832315893998,
        min=6523.905057999999,
        max=13550.187509,
        p50=10146.296554999999,
        p90=12347.3441,
        p95=12593.567954,
        p99=13053.908706,
    )
    assert parsed.latency.ttft_ms is None
    assert parsed.latency.tpot_ms is None
    assert any("counts the first token" in note for note in parsed.notes)
    assert "latency.ttft_ms and tpot_ms are null: not a streaming run" in parsed.notes


def test_trtllm_latency_streaming(trt_latency_report: dict[str, Any]) -> None:
    parsed = parse_trtllm(trt_latency_report)
    assert parsed.tokens.requests_completed == 100
    assert parsed.tokens.output_total == 12517  # round(125.17 * 100): some stopped at EOS
    assert parsed.tokens.input_total == 12800
    assert parsed.duration_s == _exact(81.025751036)
    assert parsed.throughput.output_tok_per_s == 154.48175228192153
    assert parsed.throughput.total_tok_per_s == 312.4562213406893
    assert parsed.latency.percentile_method == "nearest_rank"
    assert parsed.latency.ttft_ms == Stats(
        count=100,
        mean=14.24723588,
        min=12.988124,
        max=15.872176999999999,
        p50=14.153395,
        p90=15.015478,
        p95=15.201896999999999,
        p99=15.872176999999999,
    )
    assert parsed.latency.tpot_ms is not None
    assert parsed.latency.tpot_ms.mean == 6.407841808619594
    assert parsed.latency.tpot_ms.p50 == 6.405966889763779
    assert parsed.latency.tpot_ms.max == 6.518045645669291
    assert parsed.latency.e2el_ms is not None
    assert parsed.latency.e2el_ms.min == 391.971884
    assert parsed.latency.e2el_ms.p99 == 842.8745849999999
    assert parsed.latency.itl_ms is None
    assert not any("streaming" in note for note in parsed.notes)


def test_trtllm_older_report(trt_throughput_report: dict[str, Any]) -> None:
    """Older trtllm-bench: no p90, no total throughput, no machine block, no version."""
    del trt_throughput_report["performance"]["request_latency_percentiles_ms"]["p90"]
    del trt_throughput_report["performance"]["system_total_throughput_tok_s"]
    del trt_throughput_report["machine"]
    trt_throughput_report["engine"]["version"] = None
    parsed = parse_trtllm(trt_throughput_report)
    assert parsed.latency.e2el_ms is not None
    assert parsed.latency.e2el_ms.p90 is None
    assert parsed.latency.e2el_ms.p95 == 12593.567954
    assert parsed.throughput.total_tok_per_s is None
    assert parsed.tool_version is None
    assert any(note.startswith("throughput.total_tok_per_s is null") for note in parsed.notes)


def test_trtllm_rounds_the_output_total(trt_latency_report: dict[str, Any]) -> None:
    trt_latency_report["request_info"]["avg_output_length"] = 12517 / 100 - 1e-9
    assert parse_trtllm(trt_latency_report).tokens.output_total == 12517


# --------------------------------------------------------------------------- errors


Parser = Callable[[Mapping[str, Any]], Parsed]


def _throughput(report: Mapping[str, Any]) -> Parsed:
    return parse_vllm_throughput(report, input_len=1024, output_len=128)


def _latency(report: Mapping[str, Any]) -> Parsed:
    return parse_vllm_latency(report, batch_size=8, input_len=32, output_len=128)


PARSERS: dict[str, tuple[str, Parser]] = {
    "vllm_throughput.json": (TOOL_VLLM_THROUGHPUT, _throughput),
    "vllm_latency.json": (TOOL_VLLM_LATENCY, _latency),
    "vllm_serve.json": (TOOL_VLLM_SERVE, parse_vllm_serve),
    "trtllm_throughput.json": (TOOL_TRTLLM, parse_trtllm),
    "trtllm_latency.json": (TOOL_TRTLLM, parse_trtllm),
}


def _delete(report: dict[str, Any], path: tuple[str, ...]) -> None:
    target = report
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


def _set(report: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    target = report
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.mark.parametrize(
    ("fixture", "path", "expected"),
    [
        (
            "vllm_throughput.json",
            ("elapsed_time",),
            "vllm bench throughput report: missing key 'elapsed_time'; expected the JSON "
            "written by --output-json (keys: elapsed_time, num_requests, total_num_tokens, "
            "requests_per_second, tokens_per_second)",
        ),
        ("vllm_throughput.json", ("tokens_per_second",), "missing key 'tokens_per_second'"),
        ("vllm_latency.json", ("latencies",), "vllm bench latency report: missing key 'latencies'"),
        ("vllm_latency.json", ("percentiles",), "missing key 'percentiles'"),
        ("vllm_serve.json", ("duration",), "vllm bench serve report: missing key 'duration'"),
        ("vllm_serve.json", ("completed",), "written by --save-result"),
        (
            "trtllm_throughput.json",
            ("performance", "total_latency_ms"),
            "trtllm-bench report: missing key 'performance.total_latency_ms'; expected the "
            "JSON written by --report_json",
        ),
        (
            "trtllm_latency.json",
            ("request_info", "avg_output_length"),
            "missing key 'request_info.avg_output_length'",
        ),
        ("trtllm_latency.json", ("engine",), "missing key 'engine'"),
        (
            "trtllm_latency.json",
            ("performance", "request_latency_percentiles_ms"),
            "missing key 'performance.request_latency_percentiles_ms'",
        ),
    ],
)
def test_missing_key(fixture: str, path: tuple[str, ...], expected: str) -> None:
    report = _load(fixture)
    _delete(report, path)
    with pytest.raises(NativeReportError) as info:
        PARSERS[fixture][1](report)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("fixture", "path", "value", "expected"),
    [
        (
            "vllm_throughput.json",
            ("num_requests",),
            "1000",
            "vllm bench throughput report: 'num_requests' is a string ('1000'), not an integer "
            "count; expected the JSON written by --output-json",
        ),
        ("vllm_throughput.json", ("num_requests",), 999.5, "'num_requests' is a number (999.5)"),
        ("vllm_throughput.json", ("elapsed_time",), True, "'elapsed_time' is a boolean (true)"),
        ("vllm_throughput.json", ("elapsed_time",), 0, "'elapsed_time' is 0, but it is a dur"),
        ("vllm_throughput.json", ("elapsed_time",), -3.5, "'elapsed_time' is -3.5, a negative"),
        ("vllm_throughput.json", ("elapsed_time",), math.nan, "not a finite number"),
        ("vllm_throughput.json", ("total_num_tokens",), None, "'total_num_tokens' is null"),
        (
            "vllm_throughput.json",
            ("total_num_tokens",),
            2**64,
            "'total_num_tokens' is 18446744073709551616, too large to be a count",
        ),
        pytest.param(
            "vllm_throughput.json",
            ("elapsed_time",),
            10**5000,  # str() of it would raise ValueError (Python's digit limit)
            "'elapsed_time' is an integer of 16610 bits, too large to be a measurement",
            id="huge-int",
        ),
        ("vllm_latency.json", ("latencies",), 0.84, "'latencies' is a number (0.84), not a list"),
        ("vllm_latency.json", ("latencies",), [], "'latencies' is an empty list"),
        ("vllm_latency.json", ("latencies", "2"), "x", "'latencies[2]' is a string ('x')"),
        ("vllm_latency.json", ("percentiles",), [1, 2], "'percentiles' is a list, not a JSON obj"),
        ("vllm_latency.json", ("percentiles", "50"), "a", "'percentiles.50' is a string ('a')"),
        ("vllm_serve.json", ("completed",), 1.5, "'completed' is a number (1.5), not an integer"),
        ("vllm_serve.json", ("mean_ttft_ms",), "fast", "'mean_ttft_ms' is a string ('fast')"),
        ("vllm_serve.json", ("failed",), -1, "'failed' is -1, not a count of at least 0"),
        ("trtllm_latency.json", ("engine", "version"), 1.1, "'engine.version' is a number (1.1)"),
        ("trtllm_latency.json", ("request_info",), [], "'request_info' is a list, not a JSON obj"),
        ("trtllm_latency.json", ("request_info", "num_requests"), 0, "not a count of at least 1"),
        (
            "trtllm_latency.json",
            ("streaming_metrics", "ttft_percentiles", "p99"),
            "15.8",
            "'streaming_metrics.ttft_percentiles.p99' is a string ('15.8'), not a number",
        ),
        (
            "trtllm_throughput.json",
            ("request_info", "avg_output_length"),
            1e306,
            "request_info.avg_output_length x num_requests is inf, too large",
        ),
    ],
)
def test_wrong_type(fixture: str, path: tuple[str, ...], value: object, expected: str) -> None:
    report = _load(fixture)
    if path[0] == "latencies" and len(path) == 2:
        report["latencies"][int(path[1])] = value
    else:
        _set(report, path, value)
    with pytest.raises(NativeReportError) as info:
        PARSERS[fixture][1](report)
    assert expected in str(info.value)
    assert PARSERS[fixture][0] in str(info.value)
    assert "expected the JSON written by" in str(info.value)


@pytest.mark.parametrize("fixture", sorted(PARSERS))
@pytest.mark.parametrize("report", [[], "report", 3, None])
def test_report_that_is_not_an_object(fixture: str, report: Any) -> None:
    with pytest.raises(NativeReportError, match="not a JSON object"):
        PARSERS[fixture][1](report)


def test_error_names_the_source(serve_report: dict[str, Any]) -> None:
    del serve_report["duration"]
    with pytest.raises(NativeReportError, match=r"vllm bench serve report /runs/a\.json: missing"):
        parse_vllm_serve(serve_report, source="/runs/a.json")


def test_native_report_error_is_a_bench_error() -> None:
    assert issubclass(NativeReportError, BenchError)


def test_parsed_is_frozen(serve_report: dict[str, Any]) -> None:
    parsed = parse_vllm_serve(serve_report)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.duration_s = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- loading


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(NativeReportError) as info:
        load_native_report(path, TOOL_VLLM_THROUGHPUT)
    message = str(info.value)
    assert f"vllm bench throughput report {path} does not exist" in message
    assert f"--output-json {path}" in message


def test_load_missing_file_names_the_flag_for_a_subcommand(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    with pytest.raises(NativeReportError, match=f"was given --report_json {path}"):
        load_native_report(path, "trtllm-bench latency")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(NativeReportError, match="is a directory"):
        load_native_report(tmp_path, TOOL_TRTLLM)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("  \n", "is empty"),
        ('{"elapsed_time": 12.3, "num_req', "is not valid JSON (Unterminated string"),
        ('{"a": 1}\n{"a": 2}\n', "more than one JSON document (written with --append-result?)"),
        ('{"duration": ' + "1" * 5000 + "}", "is not a benchmark report JSON: Exceeds the limit"),
    ],
)
def test_load_bad_json(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text)
    with pytest.raises(NativeReportError) as info:
        load_native_report(path, TOOL_VLLM_SERVE)
    assert expected in str(info.value)
    assert f"vllm bench serve report {path}" in str(info.value)


def test_load_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(NativeReportError, match="is not UTF-8 text"):
        load_native_report(path, "some tool")


# --------------------------------------------------------------------------- properties

_KEYS = [
    "elapsed_time",
    "num_requests",
    "total_num_tokens",
    "requests_per_second",
    "tokens_per_second",
    "avg_latency",
    "std_latency",
    "latencies",
    "percentiles",
    "duration",
    "completed",
    "failed",
    "mean_ttft_ms",
    "p99_ttft_ms",
    "request_goodput:",
    "engine",
    "version",
    "request_info",
    "num_requests",
    "avg_output_length",
    "avg_input_length",
    "performance",
    "total_latency_ms",
    "request_throughput_req_s",
    "system_output_throughput_tok_s",
    "request_latency_percentiles_ms",
    "streaming_metrics",
    "ttft_percentiles",
    "p50",
    "average",
    "50",
]

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=0, max_value=10**6)
    | st.sampled_from([2**63, -(2**63) - 1, 10**400])
    | st.integers(min_value=4301, max_value=4400).map(lambda digits: 10**digits)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=0.0, max_value=1e6)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=25,
)
_REPORTS = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=10), _JSON, max_size=10)


def _nearly_valid(fixture: str) -> st.SearchStrategy[dict[str, Any]]:
    """The fixture with some of its values, top level or nested, replaced by arbitrary JSON."""
    base = _load(fixture)
    paths: list[tuple[str, ...]] = []
    for key, value in base.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, inner) for inner in value]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        report = copy.deepcopy(base)
        for path in draw(st.lists(st.sampled_from(paths), max_size=4, unique=True)):
            target: Any = report
            for key in path[:-1]:
                target = target.get(key) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                continue
            if draw(st.booleans()):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(_JSON)
        return report

    return build()


_STDOUT = st.lists(
    st.sampled_from(
        [
            "Total num prompt tokens:  ",
            "Total num output tokens:  ",
            "Throughput: ",
            "\n",
            " ",
            "1000",
            "99999999999999999999999999",
            "-5",
            "x",
        ]
    ),
    max_size=12,
).map("".join)
_LEN = st.none() | st.integers(min_value=0, max_value=10**6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=_REPORTS, stdout=_STDOUT, input_len=_LEN, output_len=_LEN)
def test_vllm_throughput_raises_only_native_report_error(
    report: dict[str, Any], stdout: str, input_len: int | None, output_len: int | None
) -> None:
    message = ""
    parsed: Parsed | None = None
    try:
        parsed = parse_vllm_throughput(
            report, input_len=input_len, output_len=output_len, stdout=stdout
        )
    except NativeReportError as exc:
        message = str(exc)
    if parsed is None:
        assert message.startswith("vllm bench throughput report")
    else:
        assert parsed.duration_s is not None
        assert parsed.duration_s > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=_nearly_valid("vllm_throughput.json"), stdout=_STDOUT, output_len=_LEN)
def test_vllm_throughput_nearly_valid_reports(
    report: dict[str, Any], stdout: str, output_len: int | None
) -> None:
    try:
        parsed = parse_vllm_throughput(report, input_len=1024, output_len=output_len, stdout=stdout)
    except NativeReportError:
        return
    assert parsed.throughput.total_tok_per_s is not None
    assert parsed.throughput.total_tok_per_s >= 0
    if parsed.tokens.output_total is None:
        assert parsed.throughput.output_tok_per_s is None


_NEARLY_VALID = {fixture: _nearly_valid(fixture) for fixture in PARSERS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("fixture", sorted(PARSERS))
def test_every_parser_raises_only_native_report_error(fixture: str, data: st.DataObject) -> None:
    tool, parser = PARSERS[fixture]
    report = data.draw(_NEARLY_VALID[fixture] | _REPORTS)
    message = ""
    parsed: Parsed | None = None
    try:
        parsed = parser(report)
    except NativeReportError as exc:
        message = str(exc)
    if parsed is None:
        assert message.startswith(f"{tool} report")
