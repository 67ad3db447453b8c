"""The pytest plugin (gpuroute.testing.pytest_plugin): a user's test suite run with it, and
the project's own tests using its fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpuroute
from gpuroute.host import Host, close_default_hosts, default_host
from gpuroute.testing import FakeNVML, topology

pytest_plugins = ["pytester"]

PLUGIN = "gpuroute.testing.pytest_plugin"

USER_TESTS = """
import os

import pytest

import gpuroute
from gpuroute.testing import topology

H100 = topology("h100-sxm-8")


def test_plan_with_defaults(gpuroute_nvml):
    plan = gpuroute.plan("3,1")
    assert plan.uuids == (H100.gpus[3].uuid, H100.gpus[1].uuid)


def test_acquire_on_the_host(gpuroute_host, gpuroute_lease_dir):
    assert os.environ["GPUROUTE_LEASE_DIR"] == str(gpuroute_lease_dir)
    with gpuroute_host.acquire("any:2") as lease:
        assert len(lease.devices) == 2
        assert sorted(p.name for p in gpuroute_lease_dir.iterdir()) == sorted(
            f"dev-{d.uuid}.{lease.id}.json" for d in lease.devices
        )
    assert list(gpuroute_lease_dir.iterdir()) == []


def test_module_level_acquire_uses_the_lease_dir(gpuroute_nvml, gpuroute_lease_dir):
    with gpuroute.acquire("0") as lease:
        assert [d.uuid for d in lease.devices] == [H100.gpus[0].uuid]
        assert len(list(gpuroute_lease_dir.iterdir())) == 1


@pytest.mark.gpuroute_topology("a100-mig-4")
def test_marker_chooses_the_topology(gpuroute_nvml, gpuroute_topology):
    assert gpuroute_topology == topology("a100-mig-4")
    plan = gpuroute.plan("1:0")
    assert plan.devices[0].is_mig
    with pytest.raises(gpuroute.GpurouteError, match="not in MIG mode"):
        gpuroute.plan("0:1")
"""


def run_user_tests(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The user's tests, run by pytest in a process of its own (as a user runs them, with
    modules imported afresh) with only this plugin loaded: an installed gpuroute's entry point
    would load it a second time beside ``-p``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess("-p", PLUGIN, "--strict-markers", *args)


NO_ENGINE = """
from gpuroute.testing.engine import SimulatedGPUHost

SimulatedGPUHost.unavailable = staticmethod(lambda: "no dockerd here")
"""


def test_a_users_tests_run_on_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = run_user_tests(pytester)
    result.assert_outcomes(passed=4)


def test_the_documented_example_passes(pytester: pytest.Pytester) -> None:
    """docs/simulated-host.md's example, as a user's test file."""
    doc = (Path(__file__).parent.parent / "docs" / "simulated-host.md").read_text()
    section = doc.split("## Testing your own code", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_user=example)
    result = run_user_tests(pytester)
    result.assert_outcomes(passed=1)


def test_the_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_nothing(): pass")
    result = run_user_tests(pytester, "--fixtures")
    for name in ("topology", "lease_dir", "nvml", "host", "engine", "docker"):
        result.stdout.fnmatch_lines([f"gpuroute_{name} *"])
    markers = run_user_tests(pytester, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.gpuroute_topology(name_or_inventory)*"])


def test_a_bad_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.gpuroute_topology("h100-sxm-8", "a100-mig-4")
        def test_two(gpuroute_topology):
            pass
        """
    )
    result = run_user_tests(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*gpuroute_topology takes one topology name or Inventory*"])


def test_no_engine_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NO_ENGINE)
    pytester.makepyfile(test_user="def test_in_docker(gpuroute_docker): pass")
    result = run_user_tests(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no private Docker Engine*: no dockerd here*"])


def test_no_engine_fails_where_it_is_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(NO_ENGINE)
    monkeypatch.setenv("GPUROUTE_REQUIRE_ENGINE", "1")
    pytester.makepyfile(test_user="def test_in_docker(gpuroute_docker): pass")
    result = run_user_tests(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no dockerd here (GPUROUTE_REQUIRE_ENGINE=1)*"])


def test_the_tests_that_use_the_ray_cluster_run_one_after_another(
    pytester: pytest.Pytester,
) -> None:
    """So that one cluster serves them all (where none can start, each is skipped)."""
    pytester.makeconftest(
        "from gpuroute.testing.ray_cluster import LocalRayCluster\n"
        "LocalRayCluster.unavailable = staticmethod(lambda: 'no Ray here')\n"
    )
    pytester.makepyfile(
        test_a="def test_one(gpuroute_ray_cluster): pass\ndef test_two(): pass\n",
        test_b="def test_three(gpuroute_ray_cluster): pass\ndef test_four(): pass\n",
    )
    result = run_user_tests(pytester, "-v", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    ran = [line.split()[0] for line in result.outlines if " SKIPPED " in line or " PASSED " in line]
    assert ran == [
        "test_a.py::test_one",
        "test_b.py::test_three",
        "test_a.py::test_two",
        "test_b.py::test_four",
    ]
    result.stdout.fnmatch_lines(["*no local Ray cluster*: no Ray here*"])


def test_a_ray_cluster_that_fails_to_start_is_tried_once(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from gpuroute.testing.ray_cluster import LocalRayCluster, RayClusterError\n"
        "STARTS = []\n"
        "def start(self):\n"
        "    STARTS.append(self)\n"
        "    raise RayClusterError('the head node did not listen in time')\n"
        "LocalRayCluster.unavailable = staticmethod(lambda: None)\n"
        "LocalRayCluster.start = start\n"
    )
    pytester.makepyfile(
        test_a="import conftest\n"
        "def test_one(gpuroute_ray_cluster): pass\n"
        "def test_two(gpuroute_ray_cluster): pass\n"
        "def test_started_once(): assert len(conftest.STARTS) == 1\n"
    )
    result = run_user_tests(pytester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*did not start earlier in this session: the head node*"])


@pytest.mark.engine
def test_a_users_container_runs_on_the_simulated_host(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        import gpuroute
        from gpuroute.testing.engine import IMAGE

        @pytest.mark.gpuroute_topology("a100-mig-4")
        def test_in_docker(gpuroute_nvml, gpuroute_docker):
            gpu = gpuroute_nvml.inventory.gpus[3]
            with gpuroute.launch(["nvidia-smi", "-L"], gpus="3", image=IMAGE,
                                 docker_kwargs={"network_mode": "none"}) as run:
                assert run.wait() == 0
                assert f"GPU 0: {gpu.name} (UUID: {gpu.uuid})" in run.logs()
        """
    )
    result = run_user_tests(pytester)
    result.assert_outcomes(passed=1)


def test_the_package_imports_without_pytest(tmp_path: Path) -> None:
    """``gpuroute.testing`` is shipped for tests, examples and demos: pytest is the plugin's
    alone."""
    blocker = tmp_path / "pytest.py"
    blocker.write_text("raise ImportError('no pytest here')\n")
    code = "import gpuroute, gpuroute.testing, gpuroute.testing.engine; print('ok')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


# -- the project's own tests on the plugin's fixtures -----------------------------------


def test_the_host_fixture_leases_from_the_fake(
    gpuroute_host: Host, gpuroute_nvml: FakeNVML, gpuroute_lease_dir: Path
) -> None:
    assert gpuroute_host.inventory == topology("h100-sxm-8")
    assert gpuroute_host.nvml is gpuroute_nvml
    with gpuroute_host.acquire("any:2") as first, gpuroute_host.acquire("any:6") as rest:
        taken = {d.uuid for d in first.devices} | {d.uuid for d in rest.devices}
        assert taken == {g.uuid for g in topology("h100-sxm-8").gpus}
        assert len(list(gpuroute_lease_dir.iterdir())) == 8
        with pytest.raises(gpuroute.NoFreeDeviceError):
            gpuroute_host.acquire("any:1")


@pytest.mark.gpuroute_topology("workstation-mixed")
def test_the_marker_reaches_the_default_host(gpuroute_nvml: FakeNVML) -> None:
    assert gpuroute_nvml.inventory == topology("workstation-mixed")
    assert gpuroute.plan("all").uuids == tuple(g.uuid for g in topology("workstation-mixed").gpus)


def test_close_default_hosts_makes_the_next_call_read_anew(gpuroute_nvml: FakeNVML) -> None:
    first = default_host()
    assert default_host() is first
    close_default_hosts()
    assert default_host() is not first
