"""pytest fixtures for code that embeds gpuroute, tested on machines with no GPU.

Installed with gpuroute, this plugin is loaded by pytest through the ``pytest11`` entry point
``gpuroute``; where plugin autoloading is off, load it with ``-p gpuroute``. Every name
starts with ``gpuroute_``:

* ``gpuroute_topology``: the simulated host's GPUs, an Inventory (default ``h100-sxm-8``;
  choose another with ``@pytest.mark.gpuroute_topology("a100-mig-4")``, or override the
  fixture);
* ``gpuroute_nvml``: a ``FakeNVML`` of that topology, installed as this process's NVML, so
  that ``gpuroute.plan(...)`` and ``gpuroute.acquire(...)`` with their defaults use it;
* ``gpuroute_lease_dir``: a fresh lease directory of the test's own, set as
  ``GPUROUTE_LEASE_DIR``;
* ``gpuroute_host``: a ``gpuroute.Host`` on that NVML and lease directory, with a caller
  outside any container and without a parent ``CUDA_VISIBLE_DEVICES`` mask;
* ``gpuroute_engine`` (one per session): the simulated GPU host, a private Docker Engine
  (``gpuroute.testing.engine.SimulatedGPUHost``); tests that use it are skipped where it
  cannot run, or fail there under ``GPUROUTE_REQUIRE_ENGINE=1``;
* ``gpuroute_ray_cluster``: a real two-node Ray cluster on this machine, each node a
  simulated GPU host of its own (``gpuroute.testing.ray_cluster``), this process connected to
  it; the tests that use it run one after another, and one cluster serves them all (stopped
  after the last); skipped or failed like ``gpuroute_engine`` where it cannot run;
* ``gpuroute_docker``: that engine simulating ``gpuroute_topology``, with ``DOCKER_HOST``
  pointing at it for one test.

Nothing else in gpuroute imports this module: ``gpuroute.testing`` works without pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gpuroute.core.context import CallerContext
from gpuroute.core.inventory import Inventory
from gpuroute.host import Host, close_default_hosts
from gpuroute.leases import LEASE_DIR_ENV
from gpuroute.testing import FakeNVML, topology

if TYPE_CHECKING:
    from gpuroute.testing.engine import SimulatedGPUHost
    from gpuroute.testing.ray_cluster import LocalRayCluster

__all__ = [
    "DEFAULT_TOPOLOGY",
    "RAY_CLUSTER_FIXTURE",
    "REQUIRE_ENGINE_ENV",
    "gpuroute_docker",
    "gpuroute_engine",
    "gpuroute_host",
    "gpuroute_lease_dir",
    "gpuroute_nvml",
    "gpuroute_ray_cluster",
    "gpuroute_topology",
]

DEFAULT_TOPOLOGY = "h100-sxm-8"
"""The topology of ``gpuroute_topology`` when no marker chooses one."""

REQUIRE_ENGINE_ENV = "GPUROUTE_REQUIRE_ENGINE"
"""Set to ``1`` (as CI does) to make a test that needs the private engine fail, rather than be
skipped, where the engine cannot run."""

_CALLER_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "GPUROUTE_INVENTORY")
"""What would make the default host read another mask, order or inventory than the fake's."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gpuroute_topology(name_or_inventory): the simulated host of the gpuroute_* fixtures "
        f"(a gpuroute.testing topology name or an Inventory; default {DEFAULT_TOPOLOGY})",
    )
    config.stash[_REQUIRE_ENGINE] = os.environ.get(REQUIRE_ENGINE_ENV) == "1"


_REQUIRE_ENGINE = pytest.StashKey[bool]()
"""Read at start-up, before any fixture takes GPUROUTE_* variables out of a test's view."""


@pytest.fixture
def gpuroute_topology(request: pytest.FixtureRequest) -> Inventory:
    """The simulated host's GPUs: the ``gpuroute_topology`` marker's topology, else
    ``h100-sxm-8``."""
    marker = request.node.get_closest_marker("gpuroute_topology")
    if marker is None:
        return topology(DEFAULT_TOPOLOGY)
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(
            f"{request.node.nodeid}: gpuroute_topology takes one topology name or Inventory, "
            f"as in @pytest.mark.gpuroute_topology({'a100-mig-4'!r})"
        )
    chosen = marker.args[0]
    if isinstance(chosen, Inventory):
        return chosen
    if not isinstance(chosen, str):
        raise pytest.UsageError(
            f"{request.node.nodeid}: gpuroute_topology takes a topology name or an Inventory, "
            f"not {chosen!r}"
        )
    return topology(chosen)


@pytest.fixture
def gpuroute_lease_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh lease directory of this test's own, set as ``GPUROUTE_LEASE_DIR``."""
    path = tmp_path / "gpuroute-leases"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # a private directory, whatever the umask: not writable by others
    monkeypatch.setenv(LEASE_DIR_ENV, str(path))
    return path


@pytest.fixture
def gpuroute_nvml(
    gpuroute_topology: Inventory, gpuroute_lease_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeNVML]:
    """A ``FakeNVML`` of ``gpuroute_topology``, installed as this process's NVML for the test:
    ``gpuroute.plan``, ``gpuroute.acquire`` and a ``gpuroute.Host()`` read it by default. The
    caller's ``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER`` and ``GPUROUTE_INVENTORY`` are
    unset for the test, and leases go to ``gpuroute_lease_dir``."""
    fake = FakeNVML(gpuroute_topology)
    for name in _CALLER_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("gpuroute.nvml.load_pynvml", lambda: fake)
    close_default_hosts()  # none may answer from another NVML
    yield fake
    close_default_hosts()  # none may answer from another NVML


@pytest.fixture
def gpuroute_host(gpuroute_nvml: FakeNVML, gpuroute_lease_dir: Path) -> Iterator[Host]:
    """A ``gpuroute.Host`` on ``gpuroute_nvml`` and ``gpuroute_lease_dir``, for a caller outside
    any container and without a parent mask; closed after the test."""
    with Host(nvml=gpuroute_nvml, lease_dir=gpuroute_lease_dir, context=CallerContext()) as host:
        yield host


@pytest.fixture(scope="session")
def gpuroute_engine(request: pytest.FixtureRequest) -> Iterator[SimulatedGPUHost]:
    """The simulated GPU host (a private Docker Engine with the stand-in NVIDIA toolkit), one
    for the session, simulating ``h100-sxm-8`` until a test chooses otherwise. Where it cannot
    run, a test that uses it is skipped with the reason, or fails under
    ``GPUROUTE_REQUIRE_ENGINE=1``."""
    from gpuroute.testing.engine import SimulatedGPUHost

    reason = SimulatedGPUHost.unavailable()
    if reason is not None:
        message = f"no private Docker Engine for the simulated GPU host: {reason}"
        if request.config.stash.get(_REQUIRE_ENGINE, False):
            pytest.fail(f"{message} ({REQUIRE_ENGINE_ENV}=1)", pytrace=False)
        pytest.skip(message)
    with SimulatedGPUHost(topology(DEFAULT_TOPOLOGY)) as engine:
        yield engine


RAY_CLUSTER_FIXTURE = "gpuroute_ray_cluster"


class _RayClusters:
    """The session's Ray cluster: started by the first test that asks for it, stopped right
    after the last of the tests that run one after another with it (an idle cluster keeps
    costing CPU), and at the end of the session whatever happens."""

    def __init__(self) -> None:
        self.cluster: LocalRayCluster | None = None
        self.failed: str | None = None

    def get(self) -> LocalRayCluster:
        from gpuroute.testing.ray_cluster import LocalRayCluster, RayClusterError

        if self.failed is not None:  # once is enough: each test would wait as long again
            pytest.fail(f"the Ray cluster did not start earlier in this session: {self.failed}")
        if self.cluster is None:
            cluster = LocalRayCluster()
            try:
                cluster.start()  # stops what it started if it fails
            except RayClusterError as exc:
                self.failed = str(exc)
                raise
            self.cluster = cluster
        return self.cluster

    def stop(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()


_RAY_CLUSTERS = pytest.StashKey[_RayClusters]()


def _uses_ray_cluster(item: pytest.Item | None) -> bool:
    return item is not None and RAY_CLUSTER_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that use the Ray cluster run one after another (from where the first of
    them is), so that one cluster serves them all; the order is otherwise kept."""
    users = [item for item in items if _uses_ray_cluster(item)]
    if users:
        first = items.index(users[0])
        rest = [item for item in items if not _uses_ray_cluster(item)]
        items[:] = rest[:first] + users + rest[first:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last of a run of tests that use the Ray cluster, stop it (also when the
    test's own teardown fails)."""
    try:
        return (yield)
    finally:
        clusters = item.config.stash.get(_RAY_CLUSTERS, None)
        if clusters and clusters.cluster is not None and not _uses_ray_cluster(nextitem):
            clusters.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    clusters = session.config.stash.get(_RAY_CLUSTERS, None)
    if clusters is not None:
        clusters.stop()


@pytest.fixture
def gpuroute_ray_cluster(request: pytest.FixtureRequest) -> LocalRayCluster:
    """A Ray cluster of two simulated GPU hosts on this machine (``DEFAULT_NODES``: a head of
    4 H100s, a worker of 2 A100s and MIG devices), this process connected to it. One cluster
    serves the tests that use it, which run one after another; it is stopped after the last
    of them, also on failure. (Under pytest-xdist a worker starts one for each run of such
    tests it is given: keep them in one module and use ``--dist loadfile``, or any
    scheduling that gives them to one worker together, for one cluster.) Where it cannot
    run, a test that uses it is skipped with the reason, or fails under
    ``GPUROUTE_REQUIRE_ENGINE=1``; where it fails to start, the tests after it fail at
    once."""
    from gpuroute.testing.ray_cluster import LocalRayCluster

    reason = LocalRayCluster.unavailable()
    if reason is not None:
        message = f"no local Ray cluster of simulated GPU hosts: {reason}"
        if request.config.stash.get(_REQUIRE_ENGINE, False):
            pytest.fail(f"{message} ({REQUIRE_ENGINE_ENV}=1)", pytrace=False)
        pytest.skip(message)
    clusters = request.config.stash.setdefault(_RAY_CLUSTERS, _RayClusters())
    return clusters.get()


@pytest.fixture
def gpuroute_docker(
    gpuroute_engine: SimulatedGPUHost,
    gpuroute_topology: Inventory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SimulatedGPUHost]:
    """``gpuroute_engine`` simulating ``gpuroute_topology`` with a default toolkit, and
    ``DOCKER_HOST`` pointing at it for this test. Containers the test leaves are removed."""
    gpuroute_engine.use(gpuroute_topology)
    gpuroute_engine.configure_toolkit()
    monkeypatch.setenv("DOCKER_HOST", gpuroute_engine.base_url)
    yield gpuroute_engine
    client = gpuroute_engine.client()
    try:
        for container in client.containers.list(all=True):
            container.remove(force=True)
    finally:
        client.close()
