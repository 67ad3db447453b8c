"""Local processes: the environment a child really receives."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import gpuroute
from gpuroute import CallerContext, ContextError, Inventory, LaunchError

PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def child_env(handle: gpuroute.Launch) -> dict[str, str]:
    assert handle.wait(timeout=60) == 0, handle.logs()
    data: dict[str, str] = json.loads(handle.logs())
    return data


def test_a_child_sees_the_plans_uuids_in_order(h100: Inventory) -> None:
    with gpuroute.launch(PRINT_ENV, gpus="3,1", inventory=h100, context=CallerContext()) as h:
        env = child_env(h)
    assert env["CUDA_VISIBLE_DEVICES"] == f"{h100.gpus[3].uuid},{h100.gpus[1].uuid}"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_index_form_and_extra_env(workstation: Inventory) -> None:
    with gpuroute.launch(
        PRINT_ENV,
        gpus="1",
        inventory=workstation,
        local_ids="index",
        env={"RUN": "x"},
        context=CallerContext(),
    ) as h:
        env = child_env(h)
    assert (env["CUDA_VISIBLE_DEVICES"], env["RUN"]) == ("1", "x")


def test_the_callers_mask_is_replaced_not_merged(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    with gpuroute.launch(PRINT_ENV, gpus="5", inventory=h100) as h:  # context from the env
        env = child_env(h)
    assert env["CUDA_VISIBLE_DEVICES"] == h100.gpus[5].uuid
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    with pytest.raises(ContextError, match="outside this process's allocation"):
        gpuroute.launch(PRINT_ENV, gpus="4", inventory=h100)


def test_an_empty_mask_sends_gpu_work_to_containers(
    h100: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ContextError, match="reserves its GPUs for containers"):
        gpuroute.launch(PRINT_ENV, gpus="0", inventory=h100)
    with gpuroute.launch(PRINT_ENV, gpus="none", inventory=h100) as h:
        assert child_env(h)["CUDA_VISIBLE_DEVICES"] == ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent has not collected it


def test_stop_kills_the_whole_process_group(h100: Inventory, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time, pathlib; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"pathlib.Path({str(pidfile)!r}).write_text(str(p.pid)); time.sleep(60)"
    )
    with gpuroute.launch(
        [sys.executable, "-c", script], gpus="0", inventory=h100, context=CallerContext()
    ) as h:
        with pytest.raises(gpuroute.LaunchTimeout):
            h.wait(timeout=1.0)
        assert pidfile.exists()
        grandchild = int(pidfile.read_text())
        assert _alive(grandchild)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"command": []}, "needs a command"),
        ({"verify": True}, "verify=True"),
        ({"command": ["/no/such/program"]}, "cannot start '/no/such/program'"),
        ({"env": {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}}, "CUDA_DEVICE_ORDER"),
    ],
)
def test_local_misuse(h100: Inventory, kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {
        "command": ["true"],
        "gpus": "0",
        "inventory": h100,
        "context": CallerContext(),
        **kwargs,
    }
    with pytest.raises(LaunchError, match=fragment):
        gpuroute.launch(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (["A=B"], r"env must be a mapping of names to values, not a list"),
        (["AB"], r"not a list"),  # dict() read it as {"A": "B"}
        ([("A", "B")], r"not a list"),
        ("A=B", r"not a str"),
        ({"A": 10**5000}, r"env\['A'\] is of type int"),
        ({"A": 1}, r"env\['A'\] is of type int: values must be strings"),
        ({1: "x"}, r"env has a key of type int: names must be strings"),
        ({"A=B": "x"}, r"env key 'A=B' .*'='"),
        ({"": "x"}, r"env key '' "),
        ({"A": "x\0y"}, r"env\['A'\] contains a NUL"),
    ],
)
@pytest.mark.parametrize("where", [{}, {"image": "img"}, {"compose_service": "app"}])
def test_env_must_map_strings_to_strings(
    h100: Inventory, env: object, fragment: str, where: dict[str, str]
) -> None:
    """launch(env=[...]) raised dict()'s ValueError, or read ["AB"] as {"A": "B"}."""
    with pytest.raises(LaunchError, match=fragment):
        gpuroute.launch(
            ["true"],
            gpus="0",
            inventory=h100,
            context=CallerContext(),
            env=env,  # type: ignore[arg-type]
            docker_host="unix:///nonexistent/docker.sock",
            **where,  # type: ignore[arg-type]
        )


def test_close_stops_what_the_process_left_behind(h100: Inventory, tmp_path: Path) -> None:
    """The leader exits at once; its background child must still be stopped."""
    pidfile = tmp_path / "bg.pid"
    script = f"sleep 60 & echo $! > {pidfile}; exit 0"
    with gpuroute.launch(
        ["sh", "-c", script], gpus="0", inventory=h100, context=CallerContext()
    ) as h:
        assert h.wait(timeout=30) == 0
        background = int(pidfile.read_text())
        assert _alive(background)
    deadline = time.monotonic() + 5
    while _alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(background)
