"""The bench and campaign commands, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpuroute.bench.result import Result
from gpuroute.cli import main
from gpuroute.testing import topology
from tests.conftest import run_cli

STAND_INS = Path(__file__).resolve().parent.parent / "gpuroute" / "testing" / "image"


def test_a_tiny_transformers_benchmark_runs_on_a_cpu_only_machine(tmp_path: Path) -> None:
    run = run_cli(
        "bench", "transformers", "--tiny", "--input-len", "16", "--output-len", "8",
        "--num-prompts", "4", "--output", "r.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == "gpuroute.bench.result/1"
    result = Result.model_validate(data)
    assert result.tokens.output_total == 32
    assert result.throughput.output_tok_per_s is not None
    assert result.throughput.output_tok_per_s > 0
    assert data["energy"]["gpu_energy_j"] is None
    assert data["energy"]["j_per_output_token"] is None
    assert data["energy"]["unavailable_reason"] == "no GPU was routed to this run (gpus: none)"
    assert "32 out" in run.stdout
    # Before the wait, stderr says what happens; stdout carries the summary alone.
    starting = "transformers generate: loading a tiny random model and running 4 prompts"
    assert f"{starting} (subprocess, GPUs: none)" in run.stderr
    assert "loading" not in run.stdout
    assert (tmp_path / "r.json.native" / "transformers-report.json").exists()


def test_the_same_run_on_the_simulated_host_measures_exactly_the_routed_uuids(
    tmp_path: Path,
) -> None:
    run = run_cli(
        "bench", "transformers", "--tiny", "--input-len", "16", "--output-len", "8",
        "--num-prompts", "4", "--simulate", "h100-sxm-8", "--gpus", "6,GPU-2513ead0",
        "--output", "r.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = Result.load(tmp_path / "r.json")
    h100 = topology("h100-sxm-8")
    routed = [h100.gpus[6].uuid, h100.gpus[1].uuid]
    assert h100.gpus[1].uuid.startswith("GPU-2513ead0")
    assert [g.uuid for g in result.energy.per_gpu] == routed
    assert [(g.nvml_index, g.energy_j is not None) for g in result.energy.per_gpu] == [
        (6, True),
        (1, True),
    ]
    assert result.energy.j_per_output_token is not None
    assert result.routing.cuda_visible_devices == ",".join(routed)
    assert result.environment.simulated_host == "h100-sxm-8"
    assert "J per output token" in run.stdout
    assert "running 4 prompts (subprocess, GPUs: 6, 1)" in run.stderr


def test_a_wrong_request_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench", "vllm", "--simulate", "h100-sxm-8", "--gpus", "9", "--model", "m",
         "--input-len", "8", "--output-len", "8", "--execution", "subprocess"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuroute: error: ")
    assert "index 9 is out of range; this host has indices 0-7" in err


def test_a_failed_benchmark_exits_1_and_still_writes_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "t.json"
    code = main(
        ["bench", "trtllm", "--simulate", "h100-sxm-8", "--gpus", "0,1", "--model", "m",
         "--input-len", "8", "--output-len", "8", "--num-requests", "3",
         "--execution", "subprocess", "--output", str(out), "--", "--dataset", "/nonexistent"]
    )  # fmt: skip
    assert code == 1
    result = Result.load(out)
    assert result.status == "failed"
    assert "FileNotFoundError" in (result.error or "")
    assert [g.nvml_index for g in result.energy.per_gpu] == [0, 1]
    assert "failed" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_result_and_its_native_directory_follow_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    """The result was written 0600 whatever the umask, and FILE.native/ was left 0777."""
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "t.json"
    previous = os.umask(umask)
    try:
        main(
            ["bench", "trtllm", "--simulate", "h100-sxm-8", "--gpus", "0", "--model", "m",
             "--input-len", "8", "--output-len", "8", "--num-requests", "3",
             "--execution", "subprocess", "--output", str(out)]
        )  # fmt: skip
    finally:
        os.umask(previous)
    assert Result.load(out).routing.spec == "0"
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    native = tmp_path / "t.json.native"
    assert stat.S_IMODE(native.stat().st_mode) == 0o777 & ~umask
    assert not native.stat().st_mode & stat.S_IWOTH


def test_campaign_report_of_an_empty_directory_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["campaign", "report", str(tmp_path)]) == 2
    assert "run the campaign first: gpuroute campaign run FILE" in capsys.readouterr().err
