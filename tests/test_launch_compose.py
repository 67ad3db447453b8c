"""Compose services on the simulated GPU host: whatever GPU settings the user's files hold, the
container sees exactly the plan's GPUs, or the launch is refused naming the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuroute
from gpuroute import CallerContext, ComposeConflictError, Inventory, LaunchError
from gpuroute.backends.compose import COMPOSE_V1
from gpuroute.testing import TOPOLOGIES
from gpuroute.testing.engine import IMAGE, IMAGE_CUDA_ALL, SimulatedGPUHost
from tests.test_launch_container import PROBE, expect, observe, plans

pytestmark = pytest.mark.engine


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


def service(image: str = IMAGE, extra: str = "") -> str:
    """A compose file with one service ``app``; ``extra`` holds more of its settings."""
    lines = [
        'version: "3.8"',
        "services:",
        "  app:",
        f"    image: {image}",
        "    network_mode: none",
    ]
    lines += ["    " + line for line in textwrap.dedent(extra).splitlines()]
    return "\n".join(lines) + "\n"


def run_service(
    tmp_path: Path, spec: str, inventory: Inventory, files: list[Path] | None = None
) -> tuple[int, str, list[str]]:
    with gpuroute.launch(
        PROBE,
        gpus=spec,
        compose_service="app",
        compose_files=files,
        cwd=tmp_path,
        inventory=inventory,
        context=CallerContext(),
        compose=COMPOSE_V1,
    ) as handle:
        return handle.wait(timeout=120), handle.logs(), handle.notes


COUNT_ALL = """\
    deploy:
      resources:
        reservations:
          devices:
            - driver: nvidia
              count: all
              capabilities: [gpu]
"""


class TestConflictingReservations:
    def test_count_all_is_replaced_by_the_plan(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        code, logs, notes = run_service(tmp_path, "1", h100)
        assert code == 0, logs
        assert observe(logs) == ([h100.gpus[1].uuid], [h100.gpus[1].uuid])
        assert any("count" in n and "docker-compose.yml" in n for n in notes)

    def test_other_device_ids_are_replaced(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        write(
            tmp_path,
            "docker-compose.yml",
            service(
                extra="""\
            deploy:
              resources:
                reservations:
                  devices:
                    - driver: nvidia
                      device_ids: ["0", "1"]
                      capabilities: [gpu]
            """
            ),
        )
        _, logs, _ = run_service(tmp_path, "6,3", h100)
        assert observe(logs) == (
            [h100.gpus[3].uuid, h100.gpus[6].uuid],
            [h100.gpus[6].uuid, h100.gpus[3].uuid],
        )

    def test_a_gpus_key_is_refused_by_compose_v1(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra="gpus: all\n"))
        with pytest.raises(LaunchError, match="gpus"):
            run_service(tmp_path, "1", h100)

    @pytest.mark.parametrize("spec", ["2", "none"])
    def test_runtime_nvidia_with_its_own_visible_devices(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path, spec: str
    ) -> None:
        write(
            tmp_path,
            "docker-compose.yml",
            service(
                IMAGE_CUDA_ALL,
                extra="""\
            runtime: nvidia
            environment:
              NVIDIA_VISIBLE_DEVICES: all
            """,
            ),
        )
        _, logs, notes = run_service(tmp_path, spec, h100)
        wanted = [h100.gpus[2].uuid] if spec == "2" else []
        assert observe(logs) == (wanted, wanted)
        assert any("runtime: nvidia" in n for n in notes)

    def test_privileged_is_refused_naming_the_file_that_sets_it(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        base = write(tmp_path, "docker-compose.yml", service())
        override = write(
            tmp_path,
            "debug.yml",
            """\
            version: "3.8"
            services:
              app:
                privileged: true
            """,
        )
        with pytest.raises(ComposeConflictError) as err:
            run_service(tmp_path, "1", h100, files=[base, override])
        assert str(override) in str(err.value)
        assert "privileged: true" in str(err.value)

    def test_gpu_device_nodes_are_refused(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        write(
            tmp_path,
            "docker-compose.yml",
            service(extra='devices: ["/dev/nvidia0:/dev/nvidia0"]\n'),
        )
        with pytest.raises(ComposeConflictError, match="/dev/nvidia0"):
            run_service(tmp_path, "1", h100)


class TestComposeBasics:
    @pytest.mark.parametrize("name", sorted(TOPOLOGIES))
    @settings(
        max_examples=2, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def test_sampled_plans(
        self,
        engine: SimulatedGPUHost,
        tmp_path_factory: pytest.TempPathFactory,
        name: str,
        data: st.DataObject,
    ) -> None:
        plan = data.draw(plans(name))
        engine.use(plan.inventory)
        directory = tmp_path_factory.mktemp("compose")
        write(directory, "compose.yaml", service(extra=COUNT_ALL))
        _, logs, _ = run_service(directory, plan.spec, plan.inventory)
        assert observe(logs) == expect(plan)

    def test_the_callers_gpu_variables_do_not_leak(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
        write(
            tmp_path,
            "docker-compose.yml",
            service(
                extra="""\
            environment:
              - CUDA_VISIBLE_DEVICES
              - CUDA_DEVICE_ORDER
            """
            ),
        )
        _, logs, _ = run_service(tmp_path, "4,5", h100)
        assert observe(logs)[1] == [h100.gpus[4].uuid, h100.gpus[5].uuid]

    @pytest.mark.parametrize("command", [["true"], ["sleep", "5"]])
    def test_verify(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path, command: list[str]
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        with gpuroute.launch(
            command,
            gpus="0",
            compose_service="app",
            cwd=tmp_path,
            inventory=h100,
            compose=COMPOSE_V1,
            verify=True,
        ) as handle:
            assert handle.wait(timeout=60) == 0

    def test_verify_catches_a_mis_pin(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        engine.configure_toolkit(accept_nvidia_visible_devices_envvar_when_unprivileged=False)
        write(tmp_path, "docker-compose.yml", service())
        with pytest.raises(gpuroute.VerificationError):
            gpuroute.launch(
                ["sleep", "30"],
                gpus="0",
                compose_service="app",
                cwd=tmp_path,
                inventory=h100,
                compose=COMPOSE_V1,
                verify=True,
            )

    def test_unknown_service_lists_the_services(
        self, engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
    ) -> None:
        write(tmp_path, "docker-compose.yml", service())
        with pytest.raises(LaunchError, match=r"no service 'web'.*services: app"):
            gpuroute.launch(
                ["true"],
                gpus="0",
                compose_service="web",
                cwd=tmp_path,
                inventory=h100,
                compose=COMPOSE_V1,
            )

    def test_no_compose_file(self, h100: Inventory, tmp_path: Path) -> None:
        with pytest.raises(LaunchError, match="no compose file given"):
            gpuroute.launch(
                ["true"],
                gpus="0",
                compose_service="app",
                cwd=tmp_path,
                inventory=h100,
                compose=COMPOSE_V1,
            )


def test_values_stay_off_the_command_line(h100: Inventory, tmp_path: Path) -> None:
    from gpuroute.backends.compose import prepare

    write(tmp_path, "docker-compose.yml", service())
    plan = gpuroute.plan("0", h100, context=CallerContext())
    run = prepare(
        plan, "app", ["env"], cwd=tmp_path, compose=COMPOSE_V1, env={"HF_TOKEN": "secret-value"}
    )
    try:
        assert "secret-value" not in " ".join(run.argv)
        assert run.argv[run.argv.index("HF_TOKEN") - 1] == "-e"
        assert run.env["HF_TOKEN"] == "secret-value"
        assert run.env["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        run.cleanup()


def test_a_leased_compose_run_holds_its_lease_through_the_container(
    engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, "docker-compose.yml", service(extra=COUNT_ALL))
    with gpuroute.launch(
        ["sleep", "20"],
        gpus="any:1",
        compose_service="app",
        cwd=project,
        inventory=h100,
        compose=COMPOSE_V1,
        lease=True,
        lease_dir=tmp_path / "leases",
    ) as run:
        assert run.lease is not None
        assert run.lease.record.container_id
    assert sorted(p.name for p in (tmp_path / "leases").iterdir()) == ["lock"]
