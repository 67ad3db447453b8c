"""The bench and campaign commands, as a user runs them."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
import yaml

from gpuroute.bench.campaign import run_campaign
from gpuroute.bench.result import Result
from gpuroute.bench.runners.registry import load_runner
from gpuroute.cli import main
from gpuroute.errors import BenchConfigError
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
    summary = run.stdout.splitlines()
    assert summary[0] == "transformers generate: ok on the SIMULATED host h100-sxm-8"
    assert any(line.startswith("  GPU energy (simulated) ") for line in summary), summary


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


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *hidden: str) -> None:
    """Make ``hidden`` look not installed to the dependency check, as after a plain install."""

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name in hidden else importlib.util.find_spec(name, package)

    monkeypatch.setattr("gpuroute.bench.runners.registry.find_spec", find_spec)


@pytest.mark.parametrize(
    ("hidden", "missing"),
    [
        (("torch",), "torch, which is"),
        (("torch", "transformers"), "torch and transformers, which are"),
    ],
)
def test_a_runner_without_its_modules_names_its_extra_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hidden: tuple[str, ...],
    missing: str,
) -> None:
    """A plain install ran the worker into a ModuleNotFoundError traceback (exit 1)."""
    _hide_modules(monkeypatch, *hidden)
    out = tmp_path / "r.json"
    code = main(
        ["bench", "transformers", "--tiny", "--input-len", "8", "--output-len", "4",
         "--num-prompts", "2", "--output", str(out)]
    )  # fmt: skip
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err == (
        f"gpuroute: error: the transformers runner (execution 'subprocess') needs {missing} "
        f"not installed: pip install 'gpuroute[transformers]'\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing ran: no result, no native directory


def test_a_runner_in_a_container_needs_nothing_here(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_modules(monkeypatch, "torch", "transformers")
    runner = load_runner("transformers")
    runner.require("container")  # the image brings them
    assert runner.needs("container") == {}
    with pytest.raises(BenchConfigError, match=r"pip install 'gpuroute\[transformers\]'"):
        runner.require("inprocess")


@pytest.mark.parametrize(
    ("runner", "hidden", "message"),
    [
        ("vllm", ("matplotlib",), r"needs matplotlib, which is not installed: .*\[plots\]'$"),
        ("transformers", ("torch", "matplotlib"), r"needs torch and matplotlib, .*\[bench\]'$"),
    ],
)
def test_a_campaign_names_the_extra_for_its_runs_and_plots_before_it_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: str,
    hidden: tuple[str, ...],
    message: str,
) -> None:
    """It ran every experiment before it said that the plots need matplotlib."""
    _hide_modules(monkeypatch, *hidden)
    grid = {"runner": runner, "model": "org/m" if runner == "vllm" else "tiny", "gpus": ["0"]}
    fixed = {"input_len": 8, "output_len": 4, "num_prompts": 2}
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump({"name": "sweep", "grid": grid, "fixed": fixed}))
    with pytest.raises(BenchConfigError, match=message):
        run_campaign(file, tmp_path / "out")
    assert not (tmp_path / "out").exists()
