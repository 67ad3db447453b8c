"""The gpuroute command: output, JSON, snapshots, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import gpuroute
from gpuroute import Inventory
from gpuroute.cli import main
from gpuroute.testing import topology_path
from gpuroute.testing.engine import IMAGE, SimulatedGPUHost
from tests.conftest import run_cli


def test_plan_explains(capsys: pytest.CaptureFixture[str], h100: Inventory) -> None:
    assert main(["plan", "3,1", "--simulate", "h100-sxm-8"]) == 0
    out = capsys.readouterr().out
    assert "CUDA_VISIBLE_DEVICES=1,0" in out
    assert f"NVIDIA_VISIBLE_DEVICES={h100.gpus[3].uuid},{h100.gpus[1].uuid}" in out


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "1:0", "--simulate", "a100-mig-4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["container_env"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0"}
    assert data["devices"][0]["mig_profile"] == "3g.40gb"


def test_plan_local_target_and_index_ids(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "1,0", "--simulate", "workstation-mixed", "--target", "local"]
    assert main([*args, "--local-ids", "index", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["local_env"]["CUDA_VISIBLE_DEVICES"] == "1,0"


def test_ls_nests_mig_devices(capsys: pytest.CaptureFixture[str], a100: Inventory) -> None:
    assert main(["ls", "--inventory", topology_path("a100-mig-4")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("1 "))
    assert lines[row + 1].startswith("  1:0")
    mig = a100.gpus[1].mig_devices[0].uuid
    assert f" {mig[:12]} " in lines[row + 1]  # short, as docker shortens ids
    assert mig not in out
    assert "3/7 slices" in lines[row + 1]
    assert main(["ls", "--inventory", topology_path("a100-mig-4"), "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert mig in lines[row + 1]
    assert a100.gpus[1].pci_bus_id in lines[row]


def test_ls_json_is_the_snapshot(capsys: pytest.CaptureFixture[str], h100: Inventory) -> None:
    assert main(["ls", "--simulate", "h100-sxm-8", "--json"]) == 0
    assert Inventory.from_dict(json.loads(capsys.readouterr().out)) == h100


def test_inventory_save_then_plan_from_it(tmp_path: Path, a100: Inventory) -> None:
    snap = tmp_path / "host.json"
    assert main(["inventory", "save", str(snap), "--simulate", "a100-mig-4"]) == 0
    assert Inventory.load(snap) == a100
    env = {"PATH": "", "GPUROUTE_INVENTORY": str(snap)}
    result = run_cli("plan", "2:3", env=env)
    assert result.returncode == 0, result.stderr
    assert a100.gpus[2].mig_devices[3].uuid in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "9", "--simulate", "h100-sxm-8"], "index 9 is out of range"),
        (["plan", "0,,1", "--simulate", "h100-sxm-8"], "is empty"),
        (["plan", "1", "--simulate", "a100-mig-4"], "MIG mode is on"),
        (["plan", "0", "--simulate", "nope"], "no simulated topology named 'nope'"),
        (["ls", "--inventory", "/nonexistent/host.json"], "cannot read inventory snapshot"),
        (["plan", "0", "--capabilities", "gpu", "--simulate", "h100-sxm-8"], "capability"),
    ],
)
def test_user_errors_are_one_message_and_status_2(args: list[str], fragment: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("gpuroute: error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_a_local_plan_under_an_empty_mask_is_refused_with_the_container_way() -> None:
    result = run_cli(
        "plan",
        "3,1",
        "--simulate",
        "h100-sxm-8",
        "--target",
        "local",
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": ""},
    )
    assert result.returncode == 2
    assert "reserves its GPUs for containers" in result.stderr


def test_demo_plans_on_the_snapshot_it_is_given(tmp_path: Path) -> None:
    result = run_cli("demo", env={"GPUROUTE_INVENTORY": topology_path("workstation-mixed")})
    assert result.returncode == 0, result.stderr
    assert "Example request: GPUs '1,0'" in result.stdout
    assert "CUDA_VISIBLE_DEVICES=1,0" in result.stdout


def _has_nvidia_driver() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_has_nvidia_driver(), reason="this machine has a real NVIDIA driver")
def test_demo_without_a_driver_uses_the_simulated_host() -> None:
    result = run_cli("demo", env={"PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "simulated host 'h100-sxm-8'" in result.stdout
    assert "CUDA_VISIBLE_DEVICES=1,0" in result.stdout


def test_topologies_lists_the_simulated_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topologies"]) == 0
    assert "a100-mig-4" in capsys.readouterr().out


@pytest.mark.engine
@pytest.mark.skipif(_has_nvidia_driver(), reason="this machine has a real NVIDIA driver")
def test_demo_launches_a_pinned_container_on_the_simulated_host(h100: Inventory) -> None:
    result = run_cli("demo", env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    assert f"cuda:0 {h100.gpus[3].uuid}" in result.stdout
    assert f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[1].uuid})" in result.stdout
    assert "Verified" in result.stdout


class TestRun:
    @pytest.mark.engine
    def test_a_pinned_verified_container(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        result = run_cli(
            "run",
            "--gpus",
            "3,1",
            "--image",
            IMAGE,
            "--simulate",
            "h100-sxm-8",
            "--network",
            "none",
            "--verify",
            "--",
            "sh",
            "-c",
            "nvidia-smi -L; exit 3",
            env={**os.environ},
        )
        assert result.returncode == 3, result.stderr
        assert result.stdout.splitlines() == [
            f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[1].uuid})",
            f"GPU 1: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[3].uuid})",
        ]

    def test_a_local_process(self, h100: Inventory) -> None:
        code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
        result = run_cli(
            "run",
            "--gpus",
            "2",
            "--simulate",
            "h100-sxm-8",
            "--explain",
            "--",
            sys.executable,
            "-c",
            code,
            env={"PATH": os.environ["PATH"]},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == h100.gpus[2].uuid
        assert "Routing plan for '2'" in result.stderr

    def test_errors(self) -> None:
        result = run_cli("run", "--gpus", "9", "--simulate", "h100-sxm-8", "--", "true")
        assert (result.returncode, "index 9 is out of range" in result.stderr) == (2, True)
        result = run_cli("run", "--gpus", "1", "--simulate", "h100-sxm-8", "-e", "X", "--", "true")
        assert "--env 'X' is not KEY=VALUE" in result.stderr


def test_health_lists_and_clears_marks(
    capsys: pytest.CaptureFixture[str], h100: Inventory, tmp_path: Path
) -> None:
    from gpuroute import Host
    from gpuroute.limits import Policy
    from gpuroute.testing import FakeNVML

    fake = FakeNVML(h100)
    fake.inject_xid(5, 79)
    Host(nvml=fake, lease_dir=tmp_path, policy=Policy(), environ={}).live_state(h100)
    where = ["--lease-dir", str(tmp_path), "--simulate", "h100-sxm-8"]
    assert main(["health", *where]) == 0
    out = capsys.readouterr().out
    assert h100.gpus[5].uuid not in out  # shortened, to a prefix a spec takes
    (short,) = [line.split()[1] for line in out.splitlines()[1:]]
    assert h100.gpus[5].uuid.startswith(short)
    assert "Xid 79" in out
    assert main(["plan", short, "--simulate", "h100-sxm-8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["devices"][0]["uuid"] == h100.gpus[5].uuid
    assert main(["health", *where, "--wide"]) == 0
    assert h100.gpus[5].uuid in capsys.readouterr().out
    assert main(["health", *where, "clear", "5"]) == 0
    assert "Cleared the health mark of GPU 5 (it had Xid 79)" in capsys.readouterr().out
    assert main(["health", *where]) == 0
    assert "No GPU is marked unhealthy" in capsys.readouterr().out
    assert main(["health", *where, "clear", "all"]) == 2
    assert "not one GPU" in capsys.readouterr().err


def test_plan_and_run_take_allow_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "3", "--simulate", "h100-sxm-8", "--allow-unhealthy"]) == 0
    assert "CUDA_VISIBLE_DEVICES=0" in capsys.readouterr().out


def test_version_prints_the_package_version() -> None:
    from gpuroute.version import __version__

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"gpuroute {__version__}\n"


@pytest.fixture
def no_driver(tmp_path: Path) -> dict[str, str]:
    """An environment in which NVML cannot load, as on a machine without an NVIDIA driver:
    a file that is no library comes first on the loader path as libnvidia-ml.so.1."""
    libs = tmp_path / "no-driver"
    libs.mkdir()
    (libs / "libnvidia-ml.so.1").write_text("not a library\n")
    return {"PATH": "", "LD_LIBRARY_PATH": str(libs)}


def test_doctor_without_a_driver_fails_and_points_at_the_simulated_host(
    no_driver: dict[str, str], tmp_path: Path
) -> None:
    result = run_cli("doctor", "--lease-dir", str(tmp_path / "leases"), env=no_driver)
    assert result.returncode == 1, result.stderr
    assert "[FAIL] GPU inventory" in result.stdout
    last = result.stdout.rstrip().splitlines()[-1]
    assert "`gpuroute doctor --simulate h100-sxm-8`" in last
    assert "gpuroute topologies" in last


def test_leases_and_limits_without_a_driver_and_without_leases(
    no_driver: dict[str, str], tmp_path: Path
) -> None:
    where = ["--lease-dir", str(tmp_path / "none-yet")]
    result = run_cli("leases", *where, env=no_driver)
    assert (result.returncode, result.stderr) == (0, "")
    assert "No leases" in result.stdout
    result = run_cli("leases", *where, "--json", env=no_driver)
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
    result = run_cli("limits", *where, env=no_driver)
    assert result.returncode == 0, result.stderr
    assert "your limit: none" in result.stdout


def test_leases_and_limits_without_a_driver_show_uuids_and_say_so(
    no_driver: dict[str, str], tmp_path: Path, h100: Inventory
) -> None:
    from gpuroute import Host
    from gpuroute.limits import Policy
    from gpuroute.testing import FakeNVML

    host = Host(nvml=FakeNVML(h100), lease_dir=tmp_path, policy=Policy(), environ={})
    with host.acquire("3"):
        result = run_cli("leases", "--lease-dir", str(tmp_path), env=no_driver)
        assert result.returncode == 0, result.stderr
        assert f" {h100.gpus[3].uuid[:12]} " in result.stdout
        assert result.stderr.count("\n") == 1
        assert "inventory cannot be read" in result.stderr
        result = run_cli("leases", "--lease-dir", str(tmp_path), "--wide", env=no_driver)
        assert result.returncode == 0, result.stderr
        assert h100.gpus[3].uuid in result.stdout
        result = run_cli("leases", "--lease-dir", str(tmp_path), "--json", env=no_driver)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["devices"] == [h100.gpus[3].uuid]
        result = run_cli("limits", "--lease-dir", str(tmp_path), env=no_driver)
        assert result.returncode == 0, result.stderr
        assert "inventory cannot be read" in result.stderr


def test_listings_answer_in_json_when_there_is_nothing(tmp_path: Path) -> None:
    where = ["--lease-dir", str(tmp_path / "none-yet"), "--simulate", "h100-sxm-8"]
    result = run_cli("health", *where, "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr
    (tmp_path / "none-yet").mkdir()
    result = run_cli("health", *where, "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr
    result = run_cli("leases", *where, "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr
    result = run_cli("topologies", "--json")
    assert result.returncode == 0, result.stderr
    assert "a100-mig-4" in json.loads(result.stdout)


@pytest.mark.parametrize("name", ["h100-sxm-8", "a100-mig-4", "workstation-mixed"])
def test_ls_fits_80_columns_with_short_uuids_that_plan_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpuroute.testing import topology

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["ls", "--simulate", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    shown = [line.split()[1] for line in lines[1:] if line.strip() and line.split()[0][0].isdigit()]
    devices = topology(name).devices()
    assert len(shown) == len(devices)
    for short, device in zip(shown, devices, strict=True):
        assert device.uuid.startswith(short)
        assert len(short) < len(device.uuid)
        status = main(["plan", short, "--simulate", name, "--json"])
        out, err = capsys.readouterr()
        if device.mig is None and device.gpu.mig_mode:  # found, and refused as a whole GPU
            assert status == 2
            assert f"names GPU {device.gpu.index} as a whole" in err
            continue
        assert status == 0, err
        assert [d["uuid"] for d in json.loads(out)["devices"]] == [device.uuid]
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["ls", "--simulate", name]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 60 for line in narrow), narrow
    assert "…" in narrow[1]  # the name was cut
    assert main(["ls", "--simulate", name, "--wide"]) == 0
    wide = capsys.readouterr().out
    assert all(d.uuid in wide for d in devices)
    assert max(len(line) for line in wide.splitlines()) > 80


@pytest.mark.parametrize(
    ("name", "spec"), [("h100-sxm-8", "7,3,1,0,2,4,5,6"), ("a100-mig-4", "1:0,2:2")]
)
def test_plan_fits_the_terminal_with_short_uuids_that_plan_accepts(
    name: str, spec: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpuroute.testing import topology

    flags = ["--simulate", name, "--allow-multiple-mig"]
    plan = gpuroute.plan(spec, inventory=topology(name), allow_multiple_mig=True)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plan", spec, *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("") + 1 : lines.index("", lines.index("") + 1)]
    assert table[0].split()[:3] == ["cuda", "host", "uuid"]
    assert all(len(line) <= 80 for line in table), table
    shown = [line.split()[2] for line in table[1:]]
    assert len(shown) == len(plan.devices)
    for short, device in zip(shown, plan.devices, strict=True):
        assert device.uuid.startswith(short)
        assert len(short) < len(device.uuid)
        assert main(["plan", short, *flags, "--json"]) == 0
        assert [d["uuid"] for d in json.loads(capsys.readouterr().out)["devices"]] == [device.uuid]
    # the environments are what gets set: never shortened
    assert any(plan.host_env["NVIDIA_VISIBLE_DEVICES"] in line for line in lines)
    assert main(["plan", spec, *flags, "--wide"]) == 0
    wide = capsys.readouterr().out
    assert all(d.uuid in wide and d.gpu.pci_bus_id in wide for d in plan.devices)


def test_colour_only_on_request_or_a_terminal_and_never_with_no_color(
    no_driver: dict[str, str], tmp_path: Path
) -> None:
    where = ["--lease-dir", str(tmp_path / "leases")]
    plain = run_cli("doctor", *where, env=no_driver)
    assert "[FAIL] GPU inventory" in plain.stdout
    assert "\x1b[" not in plain.stdout  # a pipe: no colour
    forced = run_cli("doctor", *where, env={**no_driver, "FORCE_COLOR": "1"})
    assert "\x1b[1;31m[FAIL]\x1b[0m GPU inventory" in forced.stdout
    for value in ("1", "0", "false"):  # any value that is not empty
        refused = run_cli(
            "doctor", *where, env={**no_driver, "FORCE_COLOR": "1", "NO_COLOR": value}
        )
        assert "\x1b[" not in refused.stdout
        assert refused.stdout == plain.stdout


def test_colour_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from gpuroute.term import colour_enabled

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    assert colour_enabled(Terminal())
    assert not colour_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "")  # empty: as if unset
    assert colour_enabled(Terminal())
    monkeypatch.setenv("NO_COLOR", "yes")
    assert not colour_enabled(Terminal())


def test_ls_colours_unhealthy_devices_only_when_asked(a100: Inventory) -> None:
    from gpuroute.cli import _ls
    from gpuroute.nvml import read_state
    from gpuroute.testing import FakeNVML

    fake = FakeNVML(a100)
    fake.add_ecc_errors(3, 2)
    state = read_state(a100, fake)
    plain = _ls(a100, state, width=80).splitlines()
    assert "\x1b[" not in "\n".join(plain)
    coloured = _ls(a100, state, width=80, colour=True).splitlines()
    row3 = next(i for i, line in enumerate(plain) if line.startswith("3 "))
    assert coloured[row3] == f"\x1b[1;31m{plain[row3]}\x1b[0m"
    assert "UNHEALTHY" in plain[row3]
    assert all(c == p for i, (c, p) in enumerate(zip(coloured, plain, strict=True)) if i != row3)


# -- --simulate TOPOLOGY: the whole simulated host, the same on every command -------------

THIS_CHECKOUT = {"PYTHONPATH": str(Path(gpuroute.__file__).resolve().parent.parent)}
"""The gpuroute under test, for a command run in another directory."""


def test_every_listing_command_runs_on_the_simulated_host(tmp_path: Path, a100: Inventory) -> None:
    """No driver needed: the topology's GPUs, a fake NVML (live state) and leases of its own."""
    sim = ["--simulate", "a100-mig-4"]
    env = {"PATH": "", "GPUROUTE_LEASE_DIR": str(tmp_path / "not-this")}
    result = run_cli("ls", *sim, "--wide", env=env)
    assert result.returncode == 0, result.stderr
    assert a100.gpus[2].mig_devices[1].uuid in result.stdout
    assert "idle" in result.stdout  # read through the simulated host's NVML
    result = run_cli("plan", "1:0", *sim, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host_env"]["NVIDIA_VISIBLE_DEVICES"] == (
        a100.gpus[1].mig_devices[0].uuid
    )
    result = run_cli("leases", *sim, env=env)
    assert result.returncode == 0, result.stderr
    assert "No leases in the lease directory of the simulated host 'a100-mig-4'" in result.stdout
    result = run_cli("limits", *sim, env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli("health", *sim, "--json", env=env)
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr
    result = run_cli("inventory", "save", str(tmp_path / "a100.json"), *sim, env=env)
    assert result.returncode == 0, result.stderr
    assert Inventory.load(tmp_path / "a100.json") == a100
    assert not (tmp_path / "not-this").exists()  # the simulated host's leases are its own


def test_a_local_run_leases_on_the_simulated_host_s_own_lease_directory(
    h100: Inventory, tmp_path: Path
) -> None:
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    result = run_cli(
        "run",
        "--simulate",
        "h100-sxm-8",
        "--gpus",
        "any:2",
        "--lease",
        "--",
        sys.executable,
        "-c",
        code,
        env={"PATH": os.environ["PATH"], "GPUROUTE_LEASE_DIR": str(tmp_path / "not-this")},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().split(",")) == 2
    assert all(uuid in {g.uuid for g in h100.gpus} for uuid in result.stdout.strip().split(","))
    assert not (tmp_path / "not-this").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["plan", "0"],
        ["leases"],
        ["limits"],
        ["health"],
        ["doctor"],
        ["demo"],
        ["inventory", "save", "x.json"],
        ["run", "--gpus", "0", "--image", IMAGE, "--simulate", "h100", "--", "true"],
        [
            *("bench", "transformers", "--tiny", "--input-len", "1", "--output-len", "1"),
            *("--num-prompts", "1"),
        ],
        ["campaign", "run", "campaign.yaml"],
    ],
    ids=lambda args: args[0],
)
def test_an_unknown_topology_is_one_line_naming_the_known_ones(
    args: list[str], tmp_path: Path
) -> None:
    if "--simulate" not in args:
        args = [*args, "--simulate", "h100"]
    result = run_cli(*args, cwd=tmp_path, env={"PATH": os.environ["PATH"], **THIS_CHECKOUT})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gpuroute: error: no simulated topology named 'h100'")
    assert "h100-sxm-8, a100-mig-4, workstation-mixed" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory for the command's TMPDIR (a private engine's socket path
    must fit in 108 bytes), checked empty afterwards by the tests."""
    path = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _on_the_simulated_host(tmp: Path) -> dict[str, str]:
    """A user's environment in which the system engine cannot be reached: whatever runs in a
    container must run in the simulated host's private engine."""
    return {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp),
        "DOCKER_HOST": f"unix://{tmp}/no-system-engine.sock",
        **THIS_CHECKOUT,
    }


@pytest.mark.engine
def test_run_image_simulate_runs_in_the_private_engine_on_exactly_the_planned_gpus(
    h100: Inventory, short_tmp: Path
) -> None:
    result = run_cli(
        "run",
        "--simulate",
        "h100-sxm-8",
        "--gpus",
        "3,1",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        "nvidia-smi -L; cuda-devices",
        env=_on_the_simulated_host(short_tmp),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[1].uuid})",
        f"GPU 1: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[3].uuid})",
        f"cuda:0 {h100.gpus[3].uuid}",
        f"cuda:1 {h100.gpus[1].uuid}",
    ]
    assert "private Docker Engine of the simulated host 'h100-sxm-8'" in result.stderr
    assert list(short_tmp.iterdir()) == []  # the engine stopped, its files removed


@pytest.mark.engine
def test_doctor_simulate_takes_a_topology_and_checks_its_private_engine(
    a100: Inventory, short_tmp: Path
) -> None:
    result = run_cli("doctor", "--simulate", "a100-mig-4", env=_on_the_simulated_host(short_tmp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checking the simulated GPU host 'a100-mig-4'" in result.stdout
    assert f"[info] GPU inventory: given: {len(a100.gpus)} GPU(s)" in result.stdout
    assert "[ ok ] NVIDIA Container Toolkit: a container of gpuroute-sim:latest" in result.stdout
    assert "[ ok ] GPU health" in result.stdout
    assert list(short_tmp.iterdir()) == []


@pytest.mark.engine
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_work_and_the_private_engine(
    signum: signal.Signals, short_tmp: Path
) -> None:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gpuroute", "run", "--simulate", "h100-sxm-8", "--gpus", "2"),
            *(
                "--image",
                IMAGE,
                "--",
                "sh",
                "-c",
                "trap 'exit 143' TERM; echo ready; sleep 120 & wait",
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_on_the_simulated_host(short_tmp),
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum, err
    assert f"{signum.name}: stopping the work" in err
    assert list(short_tmp.iterdir()) == []


@pytest.mark.engine
def test_run_compose_service_simulate_runs_in_the_private_engine(
    h100: Inventory, short_tmp: Path
) -> None:
    project = short_tmp / "project"
    project.mkdir()
    (project / "compose.yaml").write_text(
        "services:\n  app:\n    image: gpuroute-sim:latest\n    network_mode: none\n"
    )
    result = run_cli(
        "run",
        "--simulate",
        "h100-sxm-8",
        "--gpus",
        "2",
        "--compose-service",
        "app",
        "--",
        "nvidia-smi",
        "-L",
        env=_on_the_simulated_host(short_tmp),
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {h100.gpus[2].uuid})"
    ]
    assert sorted(p.name for p in short_tmp.iterdir()) == ["project"]
