"""Shared fixtures: a clean GPU environment for every test, and the simulated hosts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gpuroute import CallerContext, Inventory
from gpuroute.testing import TOPOLOGIES, topology

if TYPE_CHECKING:
    from gpuroute.testing.engine import SimulatedGPUHost

_GPU_VARS = ("CUDA_", "NVIDIA_", "GPUROUTE_")


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``gpuroute`` command in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gpuroute", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=300,
    )


@pytest.fixture(autouse=True)
def clean_gpu_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the caller's own CUDA_*, NVIDIA_* or GPUROUTE_* variables."""
    for name in list(os.environ):
        if name.startswith(_GPU_VARS):
            monkeypatch.delenv(name)


@pytest.fixture
def h100() -> Inventory:
    return topology("h100-sxm-8")


@pytest.fixture
def a100() -> Inventory:
    return topology("a100-mig-4")


@pytest.fixture
def workstation() -> Inventory:
    return topology("workstation-mixed")


@pytest.fixture(params=sorted(TOPOLOGIES))
def any_topology(request: pytest.FixtureRequest) -> Inventory:
    return topology(request.param)


@pytest.fixture
def no_context() -> CallerContext:
    """A caller with no parent mask, outside any container."""
    return CallerContext()


# -- the simulated GPU host (a private Docker Engine) ------------------------------------

REQUIRE_ENGINE_VAR = "GPUROUTE_REQUIRE_ENGINE"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engine: needs the private Docker Engine of the simulated GPU host"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine tests are skipped where no private engine can run, unless GPUROUTE_REQUIRE_ENGINE=1
    (CI sets it): then they run and fail, so that no engine test is ever skipped there."""
    from gpuroute.testing.engine import SimulatedGPUHost

    reason = SimulatedGPUHost.unavailable()
    if reason is None or os.environ.get(REQUIRE_ENGINE_VAR) == "1":
        return
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(pytest.mark.skipif(True, reason=f"no private engine: {reason}"))


@pytest.fixture(scope="session")
def _sim_host() -> Iterator[SimulatedGPUHost]:
    from gpuroute.testing.engine import SimulatedGPUHost

    with SimulatedGPUHost(topology("h100-sxm-8")) as host:
        yield host


@pytest.fixture
def engine(
    _sim_host: SimulatedGPUHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatedGPUHost]:
    """The simulated 8 x H100 host, with DOCKER_HOST pointing at its engine. Checks that each
    test leaves no container behind."""
    _sim_host.use(topology("h100-sxm-8"))
    _sim_host.configure_toolkit()
    monkeypatch.setenv("DOCKER_HOST", _sim_host.base_url)
    yield _sim_host
    client = _sim_host.client()
    try:
        left = client.containers.list(all=True)
        for container in left:
            container.remove(force=True)
    finally:
        client.close()
    assert not left, f"containers left behind: {[c.name for c in left]}"
