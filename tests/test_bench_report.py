"""Campaign reports (grouping, table, plots, summary files) and the progress line."""

from __future__ import annotations

import io
import json
import statistics
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from gpuroute.bench.progress import Progress, format_duration
from gpuroute.bench.report import (
    Row,
    config_key,
    gpu_labels,
    render_table,
    summarize,
    write_plots,
    write_summary,
)
from gpuroute.bench.result import (
    Energy,
    EnergyWindow,
    Environment,
    GPUEnergy,
    Isolation,
    Latency,
    Result,
    RoutedDevice,
    Routing,
    RunnerInfo,
    Stats,
    Throughput,
    Timing,
    Tokens,
    Workload,
    derive_energy,
)
from gpuroute.errors import BenchError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# -- building results -----------------------------------------------------------------------

_GPUS = {
    0: ("GPU-00000000-0000-0000-0000-000000000000", "0000:18:00.0"),
    1: ("GPU-11111111-1111-1111-1111-111111111111", "0000:2a:00.0"),
    2: ("GPU-22222222-2222-2222-2222-222222222222", "0000:3a:00.0"),
}


def _device(ordinal: int, label: str) -> tuple[RoutedDevice, dict[str, object]]:
    if ":" in label:
        gpu, mig = (int(part) for part in label.split(":"))
        uuid, bus = _GPUS[gpu]
        mig_uuid = f"MIG-{gpu}{mig}aaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        device = RoutedDevice(
            cuda_ordinal=ordinal,
            uuid=mig_uuid,
            gpu_uuid=uuid,
            nvml_index=gpu,
            pci_bus_id=bus,
            name="NVIDIA A100-SXM4-40GB",
            mig_profile="3g.20gb",
        )
    else:
        uuid, bus = _GPUS[int(label)]
        device = RoutedDevice(
            cuda_ordinal=ordinal,
            uuid=uuid,
            gpu_uuid=uuid,
            nvml_index=int(label),
            pci_bus_id=bus,
            name="NVIDIA H100 80GB HBM3",
        )
    planned: dict[str, object] = {
        "request_position": ordinal,
        "label": label,
        "uuid": device.uuid,
        "gpu_index": device.nvml_index,
        "gpu_uuid": device.gpu_uuid,
        "pci_bus_id": bus,
        "name": device.name,
        "mig_profile": device.mig_profile,
        "container_ordinal": ordinal,
    }
    return device, planned


def make_result(
    *,
    config: str | None = "transformers tiny gpus=0,1 in=16 out=8 n=4",
    repeat: int = 0,
    gpus: Sequence[str] = ("0", "1"),
    runner: str = "transformers",
    tok_per_s: float | None = 100.0,
    energy_j: float | None = 50.0,
    ttft_p50_ms: float | None = 12.0,
    status: str = "ok",
    error: str | None = None,
    unavailable_reason: str | None = None,
    output_tokens: int = 32,
) -> Result:
    """A valid result, as a runner would write it: routing, timing, tokens, energy, labels."""
    routed = [_device(i, label) for i, label in enumerate(gpus)]
    devices = [d for d, _ in routed]
    spec = ",".join(gpus)
    failed = status == "failed"
    duration = None if failed or tok_per_s is None else output_tokens / tok_per_s
    tokens = (
        Tokens()
        if failed
        else Tokens(
            input_total=64, output_total=output_tokens, requests_completed=4, requests_failed=0
        )
    )
    measured = not failed and energy_j is not None
    start = 1_700_000_000.0 + 100 * repeat
    energy = Energy(
        method="nvml_total_energy_counter" if measured else "none",
        unavailable_reason=None if measured else (unavailable_reason or None),
        window=EnergyWindow(
            start_unix_s=start,
            end_unix_s=start + (duration or 1.0),
            duration_s=duration or 1.0,
            includes=["generate"],
            excludes=["model_load", "warmup"],
        )
        if measured
        else None,
        per_gpu=[
            GPUEnergy(
                uuid=d.gpu_uuid,
                nvml_index=d.nvml_index,
                name=d.name,
                method="nvml_total_energy_counter",
                energy_j=energy_j / len(devices),
                avg_power_w=energy_j / len(devices) / (duration or 1.0),
            )
            for d in devices
        ]
        if measured and energy_j is not None
        else [],
        gpu_energy_j=energy_j if measured else None,
    )
    energy = derive_energy(energy, tokens)
    labels = {"campaign": "smoke", "experiment": f"exp-{abs(hash(config)) % 1000}-{repeat}"}
    labels["repeat"] = str(repeat)
    if config is not None:
        labels["config"] = config
    return Result(
        run_id=f"run-{config}-{repeat}",
        status=status,  # type: ignore[arg-type]
        error=error,
        started_at="2024-01-01T00:00:00Z",
        ended_at="2024-01-01T00:01:00Z",
        runner=RunnerInfo(
            name=runner,  # type: ignore[arg-type]
            mode="generate",
            execution="inprocess",
            tool="transformers",
            tool_version="4.56.0",
            argv=["gpuroute", "bench", runner],
        ),
        routing=Routing(
            spec=spec,
            devices=devices,
            cuda_visible_devices=",".join(d.uuid for d in devices),
            cuda_device_order="PCI_BUS_ID",
            nvidia_visible_devices=None,
            plan={"spec": spec, "devices": [p for _, p in routed]},
        ),
        workload=Workload(model="tiny", input_len=16, output_len=8, num_requests=4),
        timing=Timing(measured_window="generate_only", duration_s=duration),
        tokens=tokens,
        throughput=Throughput(output_tok_per_s=None if failed else tok_per_s),
        latency=Latency(
            percentile_method="numpy_linear",
            ttft_ms=Stats(count=4, mean=ttft_p50_ms, p50=ttft_p50_ms)
            if ttft_p50_ms is not None and not failed
            else None,
        ),
        energy=energy,
        isolation=Isolation(checked=True),
        labels=labels,
    )


CFG_A = "transformers tiny gpus=0,1 in=16 out=8 n=4"
CFG_B = "transformers tiny gpus=1:0 in=16 out=8 n=4"
CFG_C = "vllm tiny gpus=2 in=16 out=8 n=4"


def campaign() -> list[Result]:
    """Three configurations, interleaved: A with energy and a failure, B (MIG) with energy,
    C without energy (no NVML permission)."""
    return [
        make_result(config=CFG_A, repeat=0, tok_per_s=100.0, energy_j=32.0, ttft_p50_ms=10.0),
        make_result(config=CFG_B, repeat=0, gpus=["1:0"], tok_per_s=40.0, energy_j=16.0),
        make_result(config=CFG_A, repeat=1, tok_per_s=110.0, energy_j=48.0, ttft_p50_ms=14.0),
        make_result(
            config=CFG_C,
            repeat=0,
            gpus=["2"],
            runner="vllm",
            tok_per_s=300.0,
            energy_j=None,
            ttft_p50_ms=None,
            unavailable_reason="NVML energy counter not permitted",
        ),
        make_result(config=CFG_A, repeat=2, status="failed", error="CUDA out of memory on cuda:1"),
        make_result(config=CFG_A, repeat=3, tok_per_s=120.0, energy_j=40.0, ttft_p50_ms=12.0),
        make_result(
            config=CFG_C,
            repeat=1,
            gpus=["2"],
            runner="vllm",
            tok_per_s=320.0,
            energy_j=None,
            ttft_p50_ms=None,
            unavailable_reason="NVML energy counter not permitted",
        ),
    ]


def _by_config(rows: Sequence[Row]) -> dict[str, Row]:
    return {row.config: row for row in rows}


# -- summarize ------------------------------------------------------------------------------


def test_helper_builds_valid_results_that_survive_a_round_trip(tmp_path: Path) -> None:
    for result in campaign():
        again = Result.load(result.write(tmp_path / f"{result.run_id}.json"))
        assert again == result


def test_rows_are_grouped_by_config_in_first_seen_order() -> None:
    rows = summarize(campaign())
    assert [row.config for row in rows] == [CFG_A, CFG_B, CFG_C]
    assert [row.runner for row in rows] == ["transformers", "transformers", "vllm"]
    assert [row.gpus for row in rows] == ["0,1", "1:0", "2"]


def test_means_and_sample_std_are_over_ok_repeats_only() -> None:
    a = _by_config(summarize(campaign()))[CFG_A]
    assert (a.repeats_ok, a.repeats_failed) == (3, 1)
    assert a.output_tok_per_s_mean == pytest.approx(110.0)
    assert a.output_tok_per_s_std == pytest.approx(statistics.stdev([100.0, 110.0, 120.0]))
    assert a.output_tok_per_s_std == pytest.approx(10.0)
    assert a.j_per_output_token_mean == pytest.approx((1.0 + 1.5 + 1.25) / 3)
    assert a.j_per_output_token_std == pytest.approx(statistics.stdev([1.0, 1.5, 1.25]))
    assert a.gpu_energy_j_mean == pytest.approx(40.0)
    assert a.ttft_ms_p50_mean == pytest.approx(12.0)
    assert a.energy_note is None


def test_a_single_repeat_has_a_mean_but_no_std() -> None:
    b = _by_config(summarize(campaign()))[CFG_B]
    assert b.repeats_ok == 1
    assert b.output_tok_per_s_mean == pytest.approx(40.0)
    assert b.output_tok_per_s_std is None
    assert b.j_per_output_token_mean == pytest.approx(0.5)
    assert b.j_per_output_token_std is None


def test_unmeasured_figures_stay_none_and_say_why() -> None:
    c = _by_config(summarize(campaign()))[CFG_C]
    assert c.output_tok_per_s_mean == pytest.approx(310.0)
    assert c.j_per_output_token_mean is None
    assert c.j_per_output_token_std is None
    assert c.gpu_energy_j_mean is None
    assert c.ttft_ms_p50_mean is None
    assert c.energy_note == "NVML energy counter not permitted"


def test_energy_missing_in_some_repeats_only_averages_the_measured_ones() -> None:
    results = [
        make_result(repeat=0, energy_j=32.0),
        make_result(repeat=1, energy_j=None, unavailable_reason="counter reset"),
    ]
    (row,) = summarize(results)
    assert row.gpu_energy_j_mean == pytest.approx(32.0)
    assert row.j_per_output_token_std is None
    assert row.energy_note is None


def test_a_config_whose_repeats_all_failed_has_no_figures_not_zeros() -> None:
    results = [make_result(repeat=i, status="failed", error=f"boom {i}") for i in range(2)]
    (row,) = summarize(results)
    assert (row.repeats_ok, row.repeats_failed) == (0, 2)
    assert row.output_tok_per_s_mean is None
    assert row.j_per_output_token_mean is None
    assert row.gpu_energy_j_mean is None
    assert row.energy_note is None  # the runs failed; energy was not the problem
    assert row.gpus == "0,1"


def test_partial_runs_are_counted_as_not_ok_and_not_averaged() -> None:
    results = [
        make_result(repeat=0, tok_per_s=100.0),
        make_result(repeat=1, tok_per_s=1.0, status="partial", error="2 of 4 requests failed"),
    ]
    (row,) = summarize(results)
    assert (row.repeats_ok, row.repeats_failed) == (1, 1)
    assert row.output_tok_per_s_mean == pytest.approx(100.0)


def test_without_a_config_label_the_runner_model_and_spec_group() -> None:
    results = [
        make_result(config=None, repeat=0, gpus=["0"], tok_per_s=10.0),
        make_result(config=None, repeat=1, gpus=["1"], tok_per_s=20.0),
        make_result(config=None, repeat=2, gpus=["0"], tok_per_s=30.0),
    ]
    assert config_key(results[0]) == "transformers tiny gpus=0"
    rows = summarize(results)
    assert [(r.config, r.repeats_ok) for r in rows] == [
        ("transformers tiny gpus=0", 2),
        ("transformers tiny gpus=1", 1),
    ]
    assert rows[0].output_tok_per_s_mean == pytest.approx(20.0)


def test_gpu_labels_fall_back_to_nvml_indices_without_plan_labels() -> None:
    result = make_result(gpus=["1", "0"])
    assert gpu_labels(result) == "1,0"
    bare = result.model_copy(update={"routing": result.routing.model_copy(update={"plan": {}})})
    assert gpu_labels(bare) == "1,0"


def test_summarize_of_nothing_is_empty() -> None:
    assert summarize([]) == []


# -- the table ------------------------------------------------------------------------------


def test_table_has_units_aligned_columns_dashes_and_a_failure_footer() -> None:
    text = render_table(summarize(campaign()))
    lines = text.splitlines()
    header = lines[0]
    for unit in ("out tok/s", "J/out tok", "GPU energy J", "TTFT p50 ms", "gpus", "failed"):
        assert unit in header
    assert set(lines[1]) <= {"-", " "}
    a_line, b_line, c_line = lines[2:5]
    assert a_line.startswith(CFG_A)
    assert " 110.0 ± 10.0 " in a_line
    assert " 1.25 ± 0.25 " in a_line
    assert " 0.500 " in b_line
    assert " 0,1 " in a_line
    assert "1:0" in b_line
    # numbers are right-aligned: every data line ends at the same column as the header
    assert len(a_line) == len(b_line) == len(header)
    # C measured no energy and no TTFT: dashes, not zeros
    c_cells = c_line.split()
    assert c_cells[-3:] == ["-", "-", "-"]
    assert "NVML energy counter not permitted" in text
    assert lines[-1] == "1 of 7 experiments failed"


def test_table_columns_line_up_under_their_headers() -> None:
    lines = render_table(summarize(campaign())).splitlines()
    header = lines[0]
    end = header.index("out tok/s") + len("out tok/s")
    for line in lines[2:5]:
        assert line[end - 1] != " "  # a right-aligned number ends under its header
        assert line[end] == " "


def test_table_of_no_rows_still_has_headers_and_footer() -> None:
    text = render_table([])
    assert text.splitlines()[0].startswith("config")
    assert text.splitlines()[-1] == "0 of 0 experiments failed"


# -- the summary files ----------------------------------------------------------------------


def test_write_summary_writes_markdown_and_json(tmp_path: Path) -> None:
    results = campaign()
    md_path = write_summary(results, tmp_path / "report")
    assert md_path == tmp_path / "report" / "summary.md"
    md = md_path.read_text()
    assert md.startswith("# Campaign smoke\n")
    assert "```\n" + render_table(summarize(results)) + "```" in md
    assert "## Failures" in md
    assert "CUDA out of memory on cuda:1" in md
    assert f"`{CFG_A}` repeat 2" in md

    data = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [d["config"] for d in data] == [CFG_A, CFG_B, CFG_C]
    assert data[0]["output_tok_per_s_mean"] == pytest.approx(110.0)
    assert data[2]["j_per_output_token_mean"] is None
    assert data[2]["energy_note"] == "NVML energy counter not permitted"
    assert set(data[0]) == {
        "config",
        "runner",
        "gpus",
        "repeats_ok",
        "repeats_failed",
        "attempts_failed",
        "output_tok_per_s_mean",
        "output_tok_per_s_std",
        "j_per_output_token_mean",
        "j_per_output_token_std",
        "gpu_energy_j_mean",
        "ttft_ms_p50_mean",
        "energy_note",
        "simulated_host",
    }


def test_write_summary_without_failures_says_so(tmp_path: Path) -> None:
    md = write_summary([make_result()], tmp_path).read_text()
    assert "No run failed." in md


# -- plots ----------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_write_plots_writes_two_real_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    paths = write_plots(campaign(), tmp_path / "plots")
    assert [p.name for p in paths] == ["throughput_vs_energy.png", "throughput_by_config.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        width, height = _png_size(path)
        assert 400 <= width <= 3000
        assert 150 <= height <= 3000
        assert path.stat().st_size > 10_000  # drawn, not blank
        pixels = imread(path)
        assert pixels.shape[:2] == (height, width)
        assert pixels.std() > 0.01  # more than one colour


_NO_GLOBAL_STATE = """
import sys
import matplotlib
from tests.test_bench_report import campaign
from gpuroute.bench.report import write_plots

def settings():
    # reading "backend" would itself resolve the backend (and import pyplot)
    return {k: matplotlib.rcParams[k] for k in list(matplotlib.rcParams) if k != "backend"}

before = settings()
write_plots(campaign(), sys.argv[1])
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert settings() == before, "rcParams changed"
"""


def test_plots_do_not_touch_pyplot_or_the_global_settings(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _NO_GLOBAL_STATE, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "throughput_vs_energy.png").exists()


def _texts(path: Path, results: Sequence[Result], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the scatter plot draws, by drawing it again and collecting them."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from gpuroute.bench import report

    captured: list[Figure] = []
    original = report._new_figure

    def spy(width: float, height: float) -> Figure:
        figure = original(width, height)
        captured.append(figure)
        return figure

    monkeypatch.setattr(report, "_new_figure", spy)
    report.write_plots(results, path)
    scatter = captured[0]
    return [t.get_text() for t in scatter.findobj(Text) if t.get_text()]


def test_configs_without_energy_are_left_out_of_the_scatter_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    texts = _texts(tmp_path, campaign(), monkeypatch)
    notes = [t for t in texts if t.startswith("no energy measured:")]
    assert notes == [f"no energy measured: {CFG_C}"]
    legend = [t for t in texts if t.startswith(("transformers", "vllm"))]
    assert legend == [f"{CFG_A} (n=3)", f"{CFG_B} (n=1)"]
    assert any("J/token" in t for t in texts)
    assert any("tokens/s" in t for t in texts)


def test_plots_with_no_energy_at_all_still_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    results = [make_result(repeat=i, energy_j=None, unavailable_reason="no NVML") for i in (0, 1)]
    results.append(make_result(config=CFG_C, status="failed", error="engine not found"))
    texts = _texts(tmp_path, results, monkeypatch)
    assert f"no energy measured: {CFG_A}\nno successful run: {CFG_C}" in texts
    assert "nothing to plot" in texts
    for path in (tmp_path / "throughput_vs_energy.png", tmp_path / "throughput_by_config.png"):
        assert _png_size(path)[0] > 0


def test_write_plots_without_matplotlib_says_to_install_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(BenchError, match=r"pip install 'gpuroute\[plots\]'"):
        write_plots(campaign(), tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


# -- progress -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_numbers_keep_about_three_significant_figures() -> None:
    from gpuroute.bench.report import _fmt, _fmt_spread

    assert [_fmt(v) for v in (1234.56, 12.345, 0.5, 0.01234, 0.0, None)] == [
        "1234.6",
        "12.35",
        "0.500",
        "0.0123",
        "0.00",
        "-",
    ]
    assert _fmt_spread(0.01234, 0.00056) == "0.0123 ± 0.0006"
    assert _fmt_spread(None, 1.0) == "-"


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(45.4) == "45s"
    assert format_duration(80) == "1m20s"
    assert format_duration(3600 + 5 * 60 + 9) == "1h05m"
    assert format_duration(-3) == "0s"


def test_progress_on_a_log_writes_one_line_per_event() -> None:
    clock = FakeClock()
    out = io.StringIO()
    progress = Progress(4, out, label="smoke", clock=clock)
    progress.started("a")
    clock.now += 10
    progress.finished("a", ok=True, seconds=10.0)
    progress.started("b")
    progress.finished("b", ok=False, seconds=20.0)
    progress.close()
    text = out.getvalue()
    assert "\r" not in text
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines == [
        "smoke [..........] 0/4 done, 0 failed, 1 running | started a",
        "smoke [##........] 1/4 done, 0 failed, 0 running, ~30s left | finished a in 10s",
        "smoke [##........] 1/4 done, 0 failed, 1 running, ~30s left | started b",
        "smoke [#####.....] 2/4 done, 1 failed, 0 running, ~30s left | FAILED b after 20s",
    ]
    assert text.endswith("\n")


def test_progress_on_a_tty_rewrites_one_line() -> None:
    clock = FakeClock()
    out = FakeTTY()
    progress = Progress(2, out, clock=clock)
    progress.started("a")
    progress.finished("a", ok=True, seconds=5.0)
    progress.started("b")
    progress.finished("b", ok=True, seconds=5.0)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 4
    assert text.count("\n") == 1  # only close() ends the line
    assert text.endswith("campaign [##########] 2/2 done, 0 failed, 0 running\n")
    # every redraw clears what the previous one left
    assert all(chunk.startswith("\x1b[K") for chunk in text.split("\r")[1:])


def test_a_failure_on_a_tty_stays_on_screen() -> None:
    out = FakeTTY()
    progress = Progress(3, out, clock=FakeClock())
    progress.started("x")
    progress.finished("x", ok=False, seconds=3.0)
    kept, status = out.getvalue().split("\n")
    assert kept.split("\r") == [
        "",
        "\x1b[Kcampaign [..........] 0/3 done, 0 failed, 1 running",
        "\x1b[Kcampaign: FAILED x after 3s",
    ]
    assert status == "campaign [###.......] 1/3 done, 1 failed, 0 running, ~6s left"


def test_eta_is_absent_until_something_finished_then_uses_mean_duration() -> None:
    clock = FakeClock()
    progress = Progress(8, io.StringIO(), clock=clock)
    progress.started("a")
    progress.started("b")
    assert progress.eta_seconds() is None
    assert "left" not in progress.status_line()
    clock.now += 60
    progress.finished("a", ok=True, seconds=60.0)
    progress.started("c")
    clock.now += 20
    progress.finished("b", ok=True, seconds=100.0)
    # mean 80s; c has run 20s (60 left); 5 not started; two workers at once
    assert progress.eta_seconds() == pytest.approx((60 + 5 * 80) / 2)
    assert progress.status_line() == (
        "campaign [##........] 2/8 done, 0 failed, 1 running, ~3m50s left"
    )


def test_skipped_experiments_count_as_done_but_not_towards_the_mean() -> None:
    clock = FakeClock()
    out = io.StringIO()
    progress = Progress(8, out, clock=clock)
    progress.skipped(4)
    assert progress.eta_seconds() is None
    assert out.getvalue() == (
        "campaign [#####.....] 4/8 done (4 skipped), 0 failed, 0 running"
        " | skipped 4 already finished\n"
    )
    progress.started("e")
    progress.finished("e", ok=True, seconds=30.0)
    assert progress.eta_seconds() == pytest.approx(3 * 30.0)
    assert progress.status_line().endswith("5/8 done (4 skipped), 0 failed, 0 running, ~1m30s left")
    progress.skipped(0)
    assert out.getvalue().count("\n") == 3


def test_progress_is_thread_safe() -> None:
    import threading

    total = 400
    out = io.StringIO()
    progress = Progress(total, out, clock=FakeClock())

    def work(start: int) -> None:
        for i in range(start, total, 8):
            progress.started(f"exp-{i}")
            progress.finished(f"exp-{i}", ok=i % 5 != 0, seconds=1.0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert progress.done == total
    assert progress.failed == total // 5
    assert progress.running == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 * total
    assert all(line.startswith("campaign [") for line in lines)
    assert lines[-1].startswith(f"campaign [##########] {total}/{total} done")


def test_close_is_idempotent_and_silences_later_events() -> None:
    out = FakeTTY()
    with Progress(1, out) as progress:
        progress.started("a")
    progress.close()
    progress.finished("a", ok=True, seconds=1.0)
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().endswith("\n")


def test_default_stream_is_stderr_at_construction(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(1)
    progress.skipped(1)
    assert "1/1 done" in capsys.readouterr().err


# -- terminal output, simulated hosts, repeats and attempts ---------------------------------


def _simulated(result: Result, host: str = "h100-sxm-8") -> Result:
    return result.model_copy(update={"environment": Environment(simulated_host=host)})


def _attempt(result: Result, attempt: int) -> Result:
    labels = {**result.labels, "attempt": str(attempt)}
    return result.model_copy(update={"labels": labels, "run_id": f"{result.run_id}-{attempt}"})


def test_the_terminal_table_fits_its_width_and_wide_shows_every_column() -> None:
    rows = summarize(campaign())
    wide = render_table(rows)
    assert max(len(line) for line in wide.splitlines()) > 80
    narrow = render_table(rows, wide=False, width=80)
    lines = narrow.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for header in ("config", "gpus", "ok", "failed", "out tok/s", "J/out tok", "TTFT p50 ms"):
        assert header in lines[0]
    assert "runner" not in lines[0]
    assert "GPU energy J" not in lines[0]
    # the words all configurations share are said once, below the table
    assert lines[2].startswith("transformers gpus=0,1  0,1 ")
    assert lines[4].startswith("vllm gpus=2  ")
    assert lines[5:7] == ["", "every config: tiny in=16 out=8 n=4"]
    assert " 110.0 ± 10.0 " in lines[2]
    assert lines[-1] == wide.splitlines()[-1]
    # narrower still: the configurations are cut, and the notes wrapped
    cut = render_table(rows, wide=False, width=64).splitlines()
    assert all(len(line) <= 64 for line in cut), cut
    assert cut[2].startswith("trans…  0,1 ")
    # not a terminal and no COLUMNS: the default columns, nothing cut
    uncut = render_table(rows, wide=False, width=None).splitlines()
    assert uncut[2] == lines[2]
    assert max(len(line) for line in uncut) > 64


def test_simulated_hosts_are_marked_in_the_table_and_the_files(tmp_path: Path) -> None:
    results = [_simulated(r) for r in campaign()] + [make_result(config="real", gpus=["2"])]
    rows = summarize(results)
    assert [row.simulated_host for row in rows] == ["h100-sxm-8"] * 3 + [None]
    text = render_table(rows)
    a_line, b_line, c_line, real_line = text.splitlines()[2:6]
    assert " 1.25 ± 0.25* " in a_line
    assert " 40.00* " in a_line  # the total energy too
    assert "0.500*" in b_line
    assert c_line.split()[-3:] == ["-", "-", "-"]  # nothing measured: nothing to mark
    assert "*" not in real_line
    assert "* simulated host h100-sxm-8: its GPUs and their energy are simulated" in text
    assert "simulated" not in render_table(summarize(campaign()))
    write_summary(results, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())[0]["simulated_host"] == "h100-sxm-8"
    assert "* simulated host h100-sxm-8" in (tmp_path / "summary.md").read_text()


def _png_title(path: Path) -> str:
    data = path.read_bytes()
    at = 8
    while at < len(data):
        (size,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + size]
        if kind in (b"tEXt", b"iTXt"):
            key, _, value = body.partition(b"\0")
            if key == b"Title":
                return value.lstrip(b"\0").decode("latin-1" if kind == b"tEXt" else "utf-8")
        at += 12 + size
    raise AssertionError(f"{path.name} has no title")


def test_plots_of_a_simulated_host_say_so(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    real = write_plots(campaign(), tmp_path / "real")
    for path in real:
        assert "SIMULATED" not in _png_title(path)
    simulated = write_plots([_simulated(r) for r in campaign()], tmp_path / "sim")
    for path in simulated:
        assert "SIMULATED host h100-sxm-8" in _png_title(path), path.name


def test_gpus_shows_every_set_the_repeats_used() -> None:
    config = "transformers tiny gpus=any:2"
    results = [
        make_result(config=config, repeat=0, gpus=["0", "1"]),
        make_result(config=config, repeat=1, gpus=["1", "2"]),
        make_result(config=config, repeat=2, gpus=["0", "1"]),
        make_result(config="fixed", repeat=0, gpus=["1:0"]),
        make_result(config="fixed", repeat=1, gpus=["1:0"]),
    ]
    rows = _by_config(summarize(results))
    assert rows[config].gpus == "0,1 | 1,2"
    assert rows["fixed"].gpus == "1:0"
    assert " 0,1 | 1,2 " in render_table(list(rows.values()))


def test_repeats_are_counted_as_experiments_and_failed_attempts_apart() -> None:
    """The progress line counts experiments (an experiment failed when its last attempt
    did); so does the table, and it counts the failed attempts, retries included, apart."""
    retried = make_result(config=CFG_A, repeat=0, status="failed", error="boom")
    gave_up = make_result(config=CFG_A, repeat=1, status="failed", error="boom")
    results = [
        _attempt(retried, 0),
        _attempt(make_result(config=CFG_A, repeat=0), 1),  # the retry succeeded
        _attempt(gave_up, 0),
        _attempt(gave_up, 1),
        _attempt(make_result(config=CFG_A, repeat=2), 0),
    ]
    (row,) = summarize(results)
    assert (row.repeats_ok, row.repeats_failed, row.attempts_failed) == (2, 1, 3)
    text = render_table([row])
    assert text.splitlines()[-1] == "1 of 3 experiments failed; 3 failed attempts, retries included"
    progress = Progress(3, io.StringIO(), label="smoke")
    for name, ok in (("retried", True), ("gave_up", False), ("third", True)):
        progress.started(name)
        progress.finished(name, ok, 1.0)
    assert ", 1 failed," in progress.status_line()  # the same count as the table's


def test_failed_rows_are_coloured_only_when_asked() -> None:
    rows = summarize(campaign())
    assert "\x1b[" not in render_table(rows)
    coloured = render_table(rows, colour=True).splitlines()
    assert coloured[2].startswith("\x1b[33m" + CFG_A)  # some repeats failed: yellow
    assert "\x1b[" not in coloured[3]
    failed_only = summarize([make_result(status="failed", error="boom")])
    assert render_table(failed_only, colour=True).splitlines()[2].startswith("\x1b[1;31m")
