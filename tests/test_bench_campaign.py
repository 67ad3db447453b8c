"""Campaigns: the grid, the store, resuming after a kill, retries, parallel disjoint runs."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gpuroute.bench.campaign import expand, load_campaign, read_results, run_campaign
from gpuroute.bench.progress import Progress
from gpuroute.bench.result import Result
from gpuroute.errors import BenchConfigError, BenchError
from gpuroute.testing import topology_path
from gpuroute.testing.engine import IMAGE_VLLM, SimulatedGPUHost

STAND_INS = Path(__file__).resolve().parent.parent / "gpuroute" / "testing" / "image"


@pytest.fixture
def stand_ins_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in ``vllm`` and ``trtllm-bench`` as local tools."""
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")


def write_campaign(path: Path, **overrides: object) -> Path:
    campaign: dict[str, object] = {
        "name": "sweep",
        "host": {"simulate": "h100-sxm-8"},
        "execution": "subprocess",
        "energy": {"interval_s": 0.02},
        "retry": {"attempts": 1, "backoff_s": 0},
        "grid": {"runner": "vllm", "model": "org/m", "gpus": ["0", "1", "2,3", "4"]},
        "fixed": {"input_len": 8, "output_len": 4, "num_prompts": 5},
    }
    campaign.update(overrides)
    path.write_text(yaml.safe_dump(campaign))
    return path


def quiet() -> Progress:
    return Progress(1, io.StringIO())


def test_the_grid_expands_with_stable_ids(tmp_path: Path) -> None:
    campaign = load_campaign(
        write_campaign(
            tmp_path / "c.yaml",
            repeats=2,
            grid={"runner": "vllm", "model": ["a", "b"], "gpus": "0", "input_len": [8, 16]},
            fixed={"output_len": 4},
        )
    )
    experiments = expand(campaign)
    assert len(experiments) == 2 * 2 * 2
    assert len({e.id for e in experiments}) == 8
    assert expand(campaign) == experiments  # the same ids every time: resuming relies on it
    assert experiments[0].config == "vllm a gpus=0 input_len=8 output_len=4"
    assert {e.repeat for e in experiments} == {0, 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grid": {"runner": "vllm", "gpus": "0"}}, "the grid needs 'model'"),
        (
            {"grid": {"runner": "vllm", "model": "m", "gpus": "0", "batch": [1]}},
            "batch is not a parameter of the vllm runner; it takes: ",
        ),
        ({"grid": {"runner": "tgi", "model": "m", "gpus": "0"}}, "no runner named 'tgi'"),
        ({"repeats": 0}, "repeats: Input should be greater than or equal to 1"),
        ({"paralel": 2}, "paralel: Extra inputs are not permitted"),
        (
            {"grid": {"runner": "vllm", "model": "m", "gpus": "0", "input_len": [8]}},
            "input_len is both in grid and in fixed",
        ),
        ({"grid": {"runner": "vllm", "model": [], "gpus": "0"}}, "grid.model is an empty list"),
        (
            {"execution": "inprocess", "max_parallel": 2},
            "execution 'inprocess' runs one experiment at a time",
        ),
    ],
)
def test_a_bad_campaign_file_names_the_problem(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(BenchConfigError, match=message.replace("(", r"\(")):
        load_campaign(write_campaign(tmp_path / "c.yaml", **overrides))


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(BenchConfigError, match="not valid YAML"):
        load_campaign(bad)


def test_a_campaign_killed_midway_resumes_without_repeating_anything(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    file = write_campaign(tmp_path / "c.yaml")
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "gpuroute",
        "campaign",
        "run",
        str(file),
        "--output-dir",
        str(out),
    ]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.exists() and store.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    assert 1 <= len(before) < 4, "killed before the end, after a result was stored"

    second = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    results = read_results(out)
    experiments = [r.labels["experiment"] for r in results]
    assert len(experiments) == len(set(experiments)) == 4, "each experiment ran exactly once"
    assert all(r.status == "ok" for r in results)
    assert [r.run_id for r in results[: len(before)]] == [r["run_id"] for r in before]
    # Energy of each run is that of its own GPUs.
    by_config = {r.labels["config"]: [g.nvml_index for g in r.energy.per_gpu] for r in results}
    assert by_config["vllm org/m gpus=2,3 input_len=8 num_prompts=5 output_len=4"] == [2, 3]
    assert "skipped" in second.stderr
    for name in (
        "summary.md",
        "summary.json",
        "throughput_vs_energy.png",
        "throughput_by_config.png",
    ):
        assert (out / name).stat().st_size > 0
    assert (out / "throughput_vs_energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The native reports of every attempt are kept.
    assert len(list((out / "native").glob("*/vllm-throughput.json"))) == 4


def test_disjoint_gpu_sets_run_at_the_same_time_and_overlapping_ones_do_not(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    file = write_campaign(
        tmp_path / "c.yaml",
        max_parallel=3,
        grid={"runner": "vllm", "model": "m", "gpus": ["0,1", "2", "1,3"]},
    )
    results = read_results(run_campaign(file, tmp_path / "out", progress=quiet()))
    assert all(r.status == "ok" for r in results)
    window = {
        r.routing.spec: (r.energy.window.start_unix_s, r.energy.window.end_unix_s)  # type: ignore[union-attr]
        for r in results
    }

    def overlap(a: str, b: str) -> bool:
        return window[a][0] < window[b][1] and window[b][0] < window[a][1]

    assert overlap("0,1", "2")
    assert not overlap("0,1", "1,3"), "GPU 1 is shared: these two ran one after the other"


class Timeline(Progress):
    """Records which configurations were started and finished, in order."""

    def __init__(self) -> None:
        super().__init__(1, io.StringIO())
        self.events: list[tuple[str, str]] = []

    def started(self, name: str) -> None:
        self.events.append(("start", name))
        super().started(name)

    def finished(self, name: str, ok: bool, seconds: float) -> None:
        self.events.append(("end", name))
        super().finished(name, ok, seconds)


def test_any_n_experiments_start_largest_first_and_only_when_their_gpus_are_free(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    """Three any:4 and three any:1 on 8 GPUs, 8 at once allowed: two any:4 first, and never
    more GPUs asked for than the host has (an experiment started early would only wait on
    its lease, holding a worker and polling)."""
    file = write_campaign(
        tmp_path / "c.yaml",
        max_parallel=8,
        repeats=3,
        grid={"runner": "vllm", "model": "m", "gpus": ["any:1", "any:4"]},
    )
    timeline = Timeline()
    results = read_results(run_campaign(file, tmp_path / "out", progress=timeline))
    assert len(results) == 6
    assert all(r.status == "ok" for r in results)
    asked = 0
    most = 0
    for event, config in timeline.events:
        gpus = 4 if "gpus=any:4" in config else 1
        asked += gpus if event == "start" else -gpus
        most = max(most, asked)
    assert most <= 8
    assert [config for event, config in timeline.events[:2]] == [
        "vllm m gpus=any:4 input_len=8 num_prompts=5 output_len=4"
    ] * 2
    assert sorted(len(r.routing.devices) for r in results) == [1, 1, 1, 4, 4, 4]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"grid": {"runner": "vllm", "model": "m", "gpus": "0", "batch_size": [8, "x"]}},
            r"batch_size=x.*batch_size: Input should be a valid integer",
        ),
        (
            {"grid": {"runner": "transformers", "model": "m", "gpus": "0", "seed": 1.5}},
            r"seed: Input should be a valid integer",
        ),
        (
            {"grid": {"runner": "vllm", "model": "m", "gpus": "0", "extra_args": "--x"}},
            r"extra_args: 'str' instances are not allowed as a Sequence",
        ),
        (
            {"grid": {"runner": "vllm", "model": "m", "gpus": "0", "batch_size": [8, 0]}},
            r"batch_size=0.*--batch-size must be at least 1, not 0",
        ),
        ({"grid": {"runner": "vllm", "model": ["m", 7], "gpus": "0"}}, r"model: Input should"),
        ({"grid": {"runner": "vllm", "model": "m", "gpus": 1.5}}, r"gpus"),
        ({"repeats": 100_000_000}, r"repeats: Input should be less than or equal to 1000"),
        ({"repeats": "2"}, r"repeats: Input should be a valid integer"),
        ({"timeout_s": float("nan")}, r"timeout_s: Input should be a finite number"),
        ({"lease_wait_s": float("inf")}, r"lease_wait_s: Input should be a finite number"),
        (
            {
                "grid": {
                    "runner": "vllm",
                    "model": "m",
                    "gpus": "0",
                    "input_len": list(range(1, 1001)),
                    "output_len": list(range(1, 1001)),
                },
                "fixed": {},
            },
            r"1000000 experiments.*at most 100000",
        ),
    ],
)
def test_bad_values_are_refused_before_any_experiment_runs(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    """A string in a numeric parameter aborted a running campaign with a pydantic traceback;
    repeats: 100000000 hung expanding 10**8 experiments. Both are refused when the file is
    read, naming the key, and nothing runs."""
    file = write_campaign(tmp_path / "c.yaml", **overrides)
    started = time.monotonic()
    with pytest.raises(BenchConfigError, match=message):
        load_campaign(file)
    with pytest.raises(BenchConfigError, match=message):
        run_campaign(file, tmp_path / "out", progress=quiet())
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out" / "results.jsonl").exists()


BILLION_LAUGHS = """\
name: lol
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
grid: {runner: vllm, model: *i, gpus: "0"}
"""


def test_hostile_campaign_files_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A billion-laughs file (MemoryError), /dev/zero (MemoryError), a FIFO (hangs), a file
    nested 100000 deep (RecursionError), a huge or non-UTF-8 file: each a BenchConfigError
    naming the file."""
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(BILLION_LAUGHS)
    with pytest.raises(BenchConfigError, match=r"laughs.yaml.*alias \*a.*line 3"):
        load_campaign(laughs)
    with pytest.raises(BenchConfigError, match=r"/dev/zero is not a regular file"):
        load_campaign("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(BenchConfigError, match=r"fifo.yaml is not a regular file"):
        load_campaign(fifo)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\ngrid: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(BenchConfigError, match=r"deep.yaml .*nested"):
        load_campaign(deep)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "#" * (2 << 20) + "\n")
    with pytest.raises(BenchConfigError, match=r"huge.yaml is larger than 1 MiB"):
        load_campaign(huge)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(BenchConfigError, match=r"latin.yaml is not UTF-8"):
        load_campaign(latin)
    with pytest.raises(BenchConfigError, match=r"cannot read the campaign file"):
        load_campaign(tmp_path / "missing.yaml")


def test_failures_are_retried_recorded_and_retried_again_on_request(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    file = write_campaign(
        tmp_path / "c.yaml",
        retry={"attempts": 2, "backoff_s": 0},
        grid={"runner": "vllm", "model": "m", "gpus": ["0", "1"]},
        fixed={"input_len": 8, "output_len": 4, "num_prompts": 5, "tensor_parallel_size": 2},
    )
    out = tmp_path / "out"
    run_campaign(file, out, progress=quiet())
    results = read_results(out)
    assert len(results) == 4, "two experiments, two attempts each, all recorded"
    assert all(r.status == "failed" for r in results)
    assert all("must equal the number of routed GPUs, 1" in (r.error or "") for r in results)
    assert sorted(r.labels["attempt"] for r in results) == ["0", "0", "1", "1"]
    summary = (out / "summary.md").read_text()
    assert "must equal the number of routed GPUs" in summary

    run_campaign(file, out, progress=quiet())
    assert len(read_results(out)) == 4, "out of attempts: not run again by default"
    run_campaign(file, out, retry_failed=True, progress=quiet())
    assert len(read_results(out)) == 6


def test_retries_wait_the_backoff_and_stop_at_the_first_success(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    file = write_campaign(
        tmp_path / "c.yaml",
        retry={"attempts": 3, "backoff_s": 0.3},
        grid={"runner": "vllm", "model": "m", "gpus": ["0", "1,2"]},
        fixed={"input_len": 8, "output_len": 4, "num_prompts": 5, "tensor_parallel_size": 2},
    )
    out = tmp_path / "out"
    run_campaign(file, out, progress=quiet())
    results = read_results(out)
    by_gpus: dict[str, list[Result]] = {}
    for r in results:
        gpus = r.labels["config"].split("gpus=")[1].split()[0]
        by_gpus.setdefault(gpus, []).append(r)
    assert [(r.status, r.labels["attempt"]) for r in by_gpus["1,2"]] == [("ok", "0")]
    failed = sorted(by_gpus["0"], key=lambda r: r.labels["attempt"])
    assert [(r.status, r.labels["attempt"]) for r in failed] == [
        ("failed", "0"),
        ("failed", "1"),
        ("failed", "2"),
    ]
    for before, after in itertools.pairwise(failed):
        assert before.ended_at is not None
        gap = dt.datetime.fromisoformat(after.started_at) - dt.datetime.fromisoformat(
            before.ended_at
        )
        assert gap.total_seconds() >= 0.3, "each retry waits the backoff"


def test_a_torn_last_line_is_skipped_and_the_store_goes_on(
    tmp_path: Path, stand_ins_on_path: None
) -> None:
    file = write_campaign(tmp_path / "c.yaml", grid={"runner": "vllm", "model": "m", "gpus": "0"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"schema": "gpuroute.bench.result/1", "run_id"')
    run_campaign(file, out, progress=quiet())
    results = read_results(out)
    assert [r.status for r in results] == ["ok"]


def test_two_runs_of_one_campaign_directory_are_refused(tmp_path: Path) -> None:
    import fcntl

    file = write_campaign(tmp_path / "c.yaml")
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".campaign.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BenchError, match="another run of this campaign"):
            run_campaign(file, out, progress=quiet())


@pytest.mark.engine
def test_a_resumed_container_campaign_removes_what_a_killed_run_left(
    engine: SimulatedGPUHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign on a host described by a snapshot (no NVML here, so no energy), whose
    containers run on the engine DOCKER_HOST names."""
    monkeypatch.setenv("GPUROUTE_INVENTORY", topology_path("h100-sxm-8"))
    leases = tmp_path / "leases"
    leases.mkdir(mode=0o1777)
    out = tmp_path / "out"
    out.mkdir()
    file = write_campaign(
        tmp_path / "c.yaml",
        host={},
        execution="container",
        images={"vllm": IMAGE_VLLM},
        network="none",
        lease_dir=str(leases),
        grid={"runner": "vllm", "model": "m", "gpus": "5"},
    )
    client = engine.client()
    try:
        orphan = client.containers.create(
            IMAGE_VLLM,
            ["sleep", "300"],
            entrypoint=["sh", "-c", 'exec "$@"', "--"],
            network_mode="none",
            labels={"gpuroute.campaign.dir": str(out.resolve())},
        )
        orphan.start()
        results = read_results(run_campaign(file, out, progress=quiet()))
        assert [r.status for r in results] == ["ok"], results[0].error
        assert client.containers.list(all=True) == [], "the orphan and the run's container are gone"
    finally:
        client.close()
    result = results[0]
    assert [d.nvml_index for d in result.routing.devices] == [5]
    assert result.energy.method == "none"
    assert result.energy.unavailable_reason is not None
    assert "NVML" in result.energy.unavailable_reason


def test_the_campaign_command_fits_80_columns_and_counts_as_its_progress_line_does(
    tmp_path: Path,
    stand_ins_on_path: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gpuroute.cli import main

    file = write_campaign(
        tmp_path / "c.yaml",
        retry={"attempts": 3, "backoff_s": 0},
        grid={"runner": "vllm", "model": "some-org/a-long-model-name", "gpus": ["0", "1,2"]},
        fixed={"input_len": 8, "output_len": 4, "num_prompts": 5, "tensor_parallel_size": 2},
    )
    out = tmp_path / "out"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert main(["campaign", "run", str(file), "--output-dir", str(out)]) == 1
    printed, progress = capsys.readouterr()
    lines = printed.splitlines()
    assert [line for line in lines if len(line) > 80 and str(out) not in line] == []
    assert "\x1b[" not in printed
    # one experiment failed (three attempts), one succeeded: both say 1 failed
    assert progress.splitlines()[-1].startswith("sweep [##########] 2/2 done, 1 failed,")
    assert "1 of 2 experiments failed; 3 failed attempts, retries included" in lines
    assert any(line.startswith("* simulated host h100-sxm-8: ") for line in lines)
    assert "GPU energy J" not in lines[0]

    assert main(["campaign", "report", str(out), "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert "runner" in wide[0]
    assert "GPU energy J" in wide[0]
    configs = {r.labels["config"] for r in read_results(out)}
    assert all(any(line.startswith(config) for line in wide) for config in configs)
    assert max(len(line) for line in wide) > 80
