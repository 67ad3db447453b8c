"""Shared fixtures: a clean GPU environment for every test, and the simulated hosts."""

from __future__ import annotations

import os

import pytest

from gpuroute import CallerContext, Inventory
from gpuroute.testing import TOPOLOGIES, topology

_GPU_VARS = ("CUDA_", "NVIDIA_", "GPUROUTE_")


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
