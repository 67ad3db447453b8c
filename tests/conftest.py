"""Shared fixtures: a clean GPU environment for every test, and the simulated hosts."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import gpuroute
from gpuroute import CallerContext, Inventory
from gpuroute.testing import TOPOLOGIES, topology
from gpuroute.testing.compose import (
    V2_PLUGIN,
    VARIANTS,
    ComposeVariant,
    ComposeVariantMissing,
)
from gpuroute.testing.compose import compose_variant as find_compose_variant

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


def shared_tmp_base() -> Path:
    """A directory every user can reach: the temporary directory if each of its ancestors
    lets others through (``TMPDIR`` may lie in a 0700 home), else ``/tmp``."""
    base = Path(tempfile.gettempdir()).resolve()
    for path in (base, *base.parents):
        if not path.stat().st_mode & stat.S_IXOTH:
            return Path("/tmp")  # world-traversable by definition (mode 1777)
    return base


@pytest.fixture(scope="session")
def other_user_env() -> Iterator[dict[str, str]]:
    """The environment for a subprocess run as another user (``setpriv --reuid``): gpuroute
    is imported from a world-readable copy of this checkout's package, so that the test does
    not depend on where the checkout lies (a clone in a 0700 home directory is unreadable to
    that user, and so is a ``PYTHONPATH`` or an editable install that points into it)."""
    root = Path(tempfile.mkdtemp(prefix="gpuroute-pkg-", dir=shared_tmp_base()))
    try:
        package = Path(gpuroute.__file__).resolve().parent
        shutil.copytree(package, root / "gpuroute", ignore=shutil.ignore_patterns("__pycache__"))
        for path in (root, *root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        inherited = os.environ.get("PYTHONPATH")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), *([inherited] if inherited else [])])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        yield env
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


PLUGIN = "gpuroute.testing.pytest_plugin"
"""gpuroute's pytest plugin, whose fixtures these tests use too."""


def pytest_configure(config: pytest.Config) -> None:
    # An installed gpuroute loads its plugin through the ``pytest11`` entry point ``gpuroute``
    # (``-p gpuroute`` where autoloading is off); a checkout that is not installed, or whose
    # install predates the entry point, loads it here. Registering it twice is an error.
    manager = config.pluginmanager
    if not manager.has_plugin("gpuroute") and not manager.has_plugin(PLUGIN):
        manager.import_plugin(PLUGIN)
    config.addinivalue_line(
        "markers", "engine: needs the private Docker Engine of the simulated GPU host"
    )
    config.addinivalue_line(
        "markers",
        f"compose_variants(*names): run a test that takes `compose_variant` on each of these "
        f"Compose variants ({', '.join(VARIANTS)}); without it, on {V2_PLUGIN} alone",
    )


TOGETHER = {
    # one Ray cluster serves them, and no two clusters compete for the CPU
    "ray": (
        "tests/test_examples.py::test_ray_campaign",
        "tests/test_ray.py::",
        "tests/test_ray_campaign.py::",
    ),
    # torch and transformers are imported into the worker's own process once, not twice
    "torch-in-process": (
        "tests/test_bench_runners.py::test_transformers_in_process_",
        "tests/test_bench_runners.py::test_an_in_process_run_",
    ),
}
"""Tests that one pytest-xdist worker runs, one after another (see below)."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n``, pytest-xdist hands out tests one by one (as ``--dist load`` does),
    except each group in ``TOGETHER``: one worker gets all of a group, the largest groups
    first."""
    if config.getoption("dist") != "load":  # another mode asked for by name
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupsTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            for group, prefixes in TOGETHER.items():
                if nodeid.startswith(prefixes):
                    return group
            return nodeid

    return GroupsTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Engine tests are skipped where no private engine can run, unless GPUROUTE_REQUIRE_ENGINE=1
    (CI sets it): then they run and fail, so that no engine test is ever skipped there."""
    from gpuroute.testing.engine import SimulatedGPUHost

    if os.environ.get(REQUIRE_ENGINE_VAR) == "1":
        return
    reason = SimulatedGPUHost.unavailable()
    for item in items:
        if "engine" in item.keywords and reason is not None:
            item.add_marker(pytest.mark.skipif(True, reason=f"no private engine: {reason}"))
        variant = getattr(getattr(item, "callspec", None), "params", {}).get("compose_variant")
        missing = _missing_compose_variant(str(variant)) if variant is not None else None
        if missing is not None:
            item.add_marker(pytest.mark.skipif(True, reason=f"Compose {variant}: {missing}"))


_MISSING_VARIANTS: dict[str, str | None] = {}


def _missing_compose_variant(name: str) -> str | None:
    """Why a Compose variant cannot run here (None if it can), found once per session."""
    if name not in _MISSING_VARIANTS:
        with tempfile.TemporaryDirectory() as config:
            try:
                find_compose_variant(name, Path(config))
                _MISSING_VARIANTS[name] = None
            except ComposeVariantMissing as exc:
                _MISSING_VARIANTS[name] = str(exc)
    return _MISSING_VARIANTS[name]


@pytest.fixture
def engine(
    gpuroute_engine: SimulatedGPUHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimulatedGPUHost]:
    """The simulated 8 x H100 host (the plugin's session engine), with DOCKER_HOST pointing at
    its engine. Checks that each test leaves no container behind."""
    gpuroute_engine.use(topology("h100-sxm-8"))
    gpuroute_engine.configure_toolkit()
    monkeypatch.setenv("DOCKER_HOST", gpuroute_engine.base_url)
    yield gpuroute_engine
    client = gpuroute_engine.client()
    try:
        left = client.containers.list(all=True)
        for container in left:
            container.remove(force=True)
    finally:
        client.close()
    assert not left, f"containers left behind: {[c.name for c in left]}"


# -- the Compose variants (gpuroute.testing.compose) -------------------------------------

"""Read once, before the autouse fixture above takes GPUROUTE_* out of each test's view."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``compose_variant`` runs once per variant its ``compose_variants``
    marker names (ids ``v1``, ``v2-plugin``, ``v2-standalone``); on ``v2-plugin`` without it."""
    if "compose_variant" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("compose_variants")
    names = marker.args if marker else (V2_PLUGIN,)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: no Compose variant {unknown}")
    metafunc.parametrize("compose_variant", names, indirect=True)


@pytest.fixture(scope="session")
def get_compose_variant(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], ComposeVariant]:
    """``get(name)``: that Compose variant, found once per session. Where one is missing, its
    tests were marked to skip at collection, except under GPUROUTE_REQUIRE_ENGINE=1 (CI),
    where every variant must run: a missing one fails the test."""
    found: dict[str, ComposeVariant | str] = {}

    def get(name: str) -> ComposeVariant:
        if name not in found:
            try:
                found[name] = find_compose_variant(name, tmp_path_factory.mktemp("docker-config"))
            except ComposeVariantMissing as exc:
                found[name] = str(exc)
        variant = found[name]
        if isinstance(variant, str):
            pytest.fail(f"Compose variant {name} must run here: {variant}")
        return variant

    return get


@pytest.fixture
def compose_variant(
    request: pytest.FixtureRequest,
    get_compose_variant: Callable[[str], ComposeVariant],
    monkeypatch: pytest.MonkeyPatch,
) -> ComposeVariant:
    """The Compose variant this test runs on, with its environment (DOCKER_CONFIG for the
    plugin) set; pass ``compose_variant.command`` as gpuroute's ``compose=``."""
    variant = get_compose_variant(str(request.param))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    for key, value in variant.env.items():
        monkeypatch.setenv(key, value)
    return variant
