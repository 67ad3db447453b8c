"""The simulated host's start-up wait, against a stand-in ``dockerd`` (no engine needed): a
dockerd that exits is reported at once, one that never answers after ``start_timeout``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gpuroute.testing import topology
from gpuroute.testing.engine import EngineStartError, SimulatedGPUHost


def stand_in_dockerd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> SimulatedGPUHost:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dockerd = bin_dir / "dockerd"
    dockerd.write_text(f"#!/bin/sh\n{body}\n")
    dockerd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(SimulatedGPUHost, "unavailable", staticmethod(lambda: None))
    return SimulatedGPUHost(topology("h100-sxm-8"), toolkit=False, start_timeout=1.0)


def test_a_dockerd_that_exits_is_reported_at_once_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = stand_in_dockerd(tmp_path, monkeypatch, "echo 'no such option' >&2; exit 3")
    started = time.monotonic()
    with pytest.raises(EngineStartError, match="dockerd exited at start-up:\nno such option"):
        host.start()
    assert time.monotonic() - started < 1.0, "not after the whole start_timeout"
    assert host.root is None, "what it wrote is removed"


def test_a_dockerd_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = stand_in_dockerd(tmp_path, monkeypatch, "echo starting; exec sleep 60")
    started = time.monotonic()
    with pytest.raises(EngineStartError, match="dockerd did not answer within 1s:\nstarting"):
        host.start()
    assert 1.0 <= time.monotonic() - started < 15.0
    assert host.root is None
