"""Compose services on the simulated GPU host: whatever GPU settings the user's files hold, the
container sees exactly the plan's GPUs, or the launch is refused naming the file.

Each test takes the Compose variant it runs on from the ``compose_variant`` fixture (see
``gpuroute.testing.compose``): ``v1`` (``docker-compose`` 1.x), ``v2-plugin`` (``docker
compose``: the modern binary as the docker CLI's plugin) or ``v2-standalone`` (the same binary
by its path). Every test runs on ``v2-plugin``, what most users have. To keep the module's
time reasonable, only a representative subset runs on all three (``@every_compose``):
routing (``test_count_all_is_replaced_by_the_plan``), verification (``test_verify``, both
the check inside the running container and the twin run), conflict refusal
(``test_privileged_is_refused_...``, ``test_gpu_device_nodes_are_refused``), the argv
(``test_values_stay_off_the_command_line``) and cleanup (``test_a_leased_compose_run_...``,
stopped on leaving its ``with``; the ``engine`` fixture checks after every test that no
container is left). Where the generations differ, each one's behaviour has its own test: v2
replaces a service's ``gpus:`` key with the plan and takes the project from a top-level
``name:``, v1 refuses both keys with a clear error; without ``name:`` both name the project
after the directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuroute
from gpuroute import CallerContext, ComposeConflictError, Inventory, LaunchError
from gpuroute.backends.compose import COMPOSE_V1
from gpuroute.testing import TOPOLOGIES
from gpuroute.testing.compose import V1, V2_PLUGIN, VARIANTS, ComposeVariant
from gpuroute.testing.engine import IMAGE, IMAGE_CUDA_ALL, UNTIL_STOPPED, SimulatedGPUHost
from tests.test_launch_container import (
    ALL_CAPS,
    CAPS,
    ENDS_WHILE_PROBED,
    PROBE,
    PROBE_SECONDS,
    SHORT_JOBS,
    containers_created,
    expect,
    gpu_node,
    image_with_all_capabilities,
    mis_pinned_short_jobs,
    observe,
    plans,
)

pytestmark = pytest.mark.engine
every_compose = pytest.mark.compose_variants(*VARIANTS)


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


def verified_app(
    command: Sequence[str], gpus: str, cwd: Path, inventory: Inventory, variant: ComposeVariant
) -> gpuroute.Launch:
    """``command`` in service ``app`` of the compose file in ``cwd``, verified."""
    return gpuroute.launch(
        command,
        gpus=gpus,
        compose_service="app",
        cwd=cwd,
        inventory=inventory,
        compose=variant.command,
        verify=True,
    )


def run_service(
    tmp_path: Path,
    spec: str,
    inventory: Inventory,
    compose: ComposeVariant,
    files: list[Path] | None = None,
) -> tuple[int, str, list[str]]:
    with gpuroute.launch(
        PROBE,
        gpus=spec,
        compose_service="app",
        compose_files=files,
        cwd=tmp_path,
        inventory=inventory,
        context=CallerContext(),
        compose=compose.command,
    ) as handle:
        return handle.wait(timeout=120), handle.logs(), handle.notes


def container_labels(engine: SimulatedGPUHost, name: str) -> dict[str, str]:
    """The labels of the container ``name`` once Compose has created it."""
    import docker.errors

    client = engine.client()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                return dict(client.containers.get(name).labels)
            except docker.errors.NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


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
    @every_compose
    def test_count_all_is_replaced_by_the_plan(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        code, logs, notes = run_service(tmp_path, "1", h100, compose_variant)
        assert code == 0, logs
        assert observe(logs) == ([h100.gpus[1].uuid], [h100.gpus[1].uuid])
        assert any("count" in n and "docker-compose.yml" in n for n in notes)
        # Compose v2 reads `count: all` as -1; the note says what the file says.
        assert any("'count': 'all'" in n for n in notes), notes

    def test_other_device_ids_are_replaced(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
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
        _, logs, _ = run_service(tmp_path, "6,3", h100, compose_variant)
        assert observe(logs) == (
            [h100.gpus[3].uuid, h100.gpus[6].uuid],
            [h100.gpus[6].uuid, h100.gpus[3].uuid],
        )

    @pytest.mark.compose_variants(V1)
    def test_a_gpus_key_is_refused_by_compose_v1(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra="gpus: all\n"))
        with pytest.raises(LaunchError, match="gpus") as err:
            run_service(tmp_path, "1", h100, compose_variant)
        assert "Compose v1" in str(err.value)
        assert f"service 'app' in {tmp_path / 'docker-compose.yml'}" in str(err.value)
        assert "docker compose" in str(err.value)

    @pytest.mark.parametrize(
        ("gpus", "shown"),
        [
            ("gpus: all\n", "`gpus: all`"),
            ("gpus:\n  - count: 2\n", "`gpus: [{'count': 2}]`"),
            (
                'gpus:\n  - driver: nvidia\n    device_ids: ["0", "5"]\n'
                "    capabilities: [gpu, utility]\n",
                "`gpus: [{'driver': 'nvidia', 'device_ids': ['0', '5']}]`",
            ),
        ],
        ids=["all", "count", "device_ids"],
    )
    def test_a_gpus_key_is_replaced_by_the_plan_with_compose_v2(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
        gpus: str,
        shown: str,
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=gpus + textwrap.dedent(COUNT_ALL)))
        code, logs, notes = run_service(tmp_path, "3", h100, compose_variant)
        assert code == 0, logs
        assert observe(logs) == ([h100.gpus[3].uuid], [h100.gpus[3].uuid])
        assert any(shown in n and "docker-compose.yml" in n for n in notes), notes

    @pytest.mark.parametrize("spec", ["2", "none"])
    def test_runtime_nvidia_with_its_own_visible_devices(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
        spec: str,
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
        _, logs, notes = run_service(tmp_path, spec, h100, compose_variant)
        wanted = [h100.gpus[2].uuid] if spec == "2" else []
        assert observe(logs) == (wanted, wanted)
        assert any("runtime: nvidia" in n for n in notes)

    @every_compose
    def test_privileged_is_refused_naming_the_file_that_sets_it(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
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
            run_service(tmp_path, "1", h100, compose_variant, files=[base, override])
        assert str(override) in str(err.value)
        assert "privileged: true" in str(err.value)

    @every_compose
    def test_gpu_device_nodes_are_refused(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(
            tmp_path,
            "docker-compose.yml",
            service(extra='devices: ["/dev/nvidia0:/dev/nvidia0"]\n'),
        )
        with pytest.raises(ComposeConflictError, match="/dev/nvidia0"):
            run_service(tmp_path, "1", h100, compose_variant)


class TestGpuDeviceNodesByWhatTheyAre:
    """In compose files too, a GPU device node is what it is, whatever its path, and through
    whatever setting it comes: ``devices`` (also inherited through ``extends``), bind mounts
    (short and long syntax, a named volume that binds), device cgroup rules."""

    @pytest.mark.parametrize(
        ("extra", "fragment"),
        [
            ('devices: ["{node}:/dev/x"]\n', "maps GPU devices"),
            ('devices: ["/dev/./nvidia0:/dev/nvidia0"]\n', "/dev/nvidia0"),
            ('volumes: ["{node}:/dev/x"]\n', "bind-mounts"),
            ('volumes: ["{dir}:/data:ro"]\n', "which holds the GPU device node"),
            (
                "volumes:\n  - type: bind\n    source: {node}\n    target: /dev/x\n",
                "bind-mounts",
            ),
            ('device_cgroup_rules: ["c 195:* rwm"]\n', "device_cgroup_rules"),
            ('device_cgroup_rules: ["a *:* rwm"]\n', "device_cgroup_rules"),
        ],
        ids=["devices", "dot-spelling", "volume", "directory", "long-syntax", "cgroup", "all"],
    )
    def test_refused(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
        extra: str,
        fragment: str,
    ) -> None:
        node = gpu_node(tmp_path / "nodes")
        extra = extra.format(node=node, dir=tmp_path / "nodes")
        write(tmp_path, "docker-compose.yml", service(extra=extra))
        with pytest.raises(ComposeConflictError, match=fragment) as err:
            run_service(tmp_path, "1", h100, compose_variant)
        assert "service 'app'" in str(err.value)
        assert str(tmp_path / "docker-compose.yml") in str(err.value)

    @pytest.mark.compose_variants(V1, V2_PLUGIN)
    def test_through_extends_and_a_named_volume(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        node = gpu_node(tmp_path / "nodes")
        write(
            tmp_path,
            "base.yml",
            f"""\
            version: "3.8"
            services:
              gpu-base:
                image: {IMAGE}
                devices: ["{node}:/dev/x"]
            """,
        )
        write(
            tmp_path,
            "docker-compose.yml",
            service(extra="extends:\n  file: base.yml\n  service: gpu-base\n"),
        )
        with pytest.raises(ComposeConflictError, match=str(node)):
            run_service(tmp_path, "1", h100, compose_variant)
        write(
            tmp_path,
            "docker-compose.yml",
            service(extra='volumes: ["gpus:/mnt"]\n')
            + f"volumes:\n  gpus:\n    driver_opts: {{type: none, o: bind, device: {node}}}\n",
        )
        with pytest.raises(ComposeConflictError, match="bind-mounts"):
            run_service(tmp_path, "1", h100, compose_variant)


GPU_HELPER = """\
    runtime: nvidia
    environment:
      NVIDIA_VISIBLE_DEVICES: all
"""


RUNS = json.dumps(list(UNTIL_STOPPED))
"""A service's command (flow YAML) that runs until the launch ends and then stops at once."""


def with_dependency(how: str, helper: str = "", image: str = IMAGE) -> str:
    """Service ``app`` that pulls in service ``helper`` by ``how``; ``helper`` has the
    settings ``helper``. (The tests name the project ``deps`` with COMPOSE_PROJECT_NAME,
    which Compose v1 reads too.)"""
    pulls = {
        "depends_on": "depends_on: [helper]",
        "network_mode": "network_mode: service:helper",
        "volumes_from": "volumes_from: [helper]",
        "links": "links: [helper]",
        "transitive": "depends_on: [middle]",
    }[how]
    text = textwrap.dedent(
        f"""\
        services:
          app:
            image: {IMAGE}
            {pulls}
        """
    )
    if how not in ("network_mode", "links"):
        text += "    network_mode: none\n"
    if how == "transitive":
        text += f"  middle:\n    image: {IMAGE}\n    network_mode: none\n"
        text += f"    command: {RUNS}\n    depends_on: [helper]\n"
    text += f"  helper:\n    image: {image}\n    command: {RUNS}\n"
    if how != "links":
        text += "    network_mode: none\n"
    text += textwrap.indent(textwrap.dedent(helper), "    ")
    return text


def project_containers(engine: SimulatedGPUHost) -> dict[str, tuple[str, str]]:
    """The containers of project ``deps``: name -> (id, status)."""
    client = engine.client()
    try:
        found = client.containers.list(
            all=True, filters={"label": "com.docker.compose.project=deps"}
        )
        return {c.name: (c.id, c.status) for c in found}
    finally:
        client.close()


@pytest.fixture
def deps_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "deps")


@pytest.mark.usefixtures("deps_project")
class TestDependencies:
    """Every service ``compose run`` starts with the one gpuroute runs gets no GPU (or the
    launch is refused), and is stopped and removed when the launch ends; a service that was
    already running is left as it is."""

    @pytest.mark.parametrize(
        ("how", "helper"),
        [
            ("depends_on", GPU_HELPER),
            ("network_mode", COUNT_ALL),
            ("volumes_from", "gpus: all\n"),
            ("links", GPU_HELPER),
            ("transitive", COUNT_ALL),
            ("depends_on", "privileged: true\n"),
            ("depends_on", 'devices: ["/dev/nvidia0"]\n'),
        ],
        ids=[
            "depends_on",
            "network_mode",
            "volumes_from",
            "links",
            "transitive",
            "privileged",
            "devices",
        ],
    )
    def test_a_dependency_that_asks_for_gpus_is_refused(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
        how: str,
        helper: str,
    ) -> None:
        write(tmp_path, "compose.yaml", with_dependency(how, helper))
        with pytest.raises(ComposeConflictError) as err:
            run_service(tmp_path, "1", h100, compose_variant)
        message = str(err.value)
        assert "service 'helper', which `compose run app` starts with it" in message
        assert str(tmp_path / "compose.yaml") in message
        assert project_containers(engine) == {}

    @every_compose
    def test_dependencies_get_no_gpu_and_end_with_the_launch(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        # helper: an image that bakes NVIDIA_VISIBLE_DEVICES=all, pulled in three ways
        body = with_dependency("network_mode", image=IMAGE_CUDA_ALL).replace(
            "network_mode: service:helper",
            "network_mode: service:helper\n    depends_on: [helper]\n    volumes_from: [helper]",
        )
        write(tmp_path, "compose.yaml", body)
        with gpuroute.launch(
            PROBE,
            gpus="1",
            compose_service="app",
            cwd=tmp_path,
            inventory=h100,
            context=CallerContext(),
            compose=compose_variant.command,
        ) as handle:
            assert handle.wait(timeout=120) == 0, handle.logs()
            assert observe(handle.logs()) == ([h100.gpus[1].uuid], [h100.gpus[1].uuid])
            (helper,) = [name for name in project_containers(engine) if "helper" in name]
            client = engine.client()
            try:
                env = client.containers.get(helper).attrs["Config"]["Env"]
            finally:
                client.close()
            assert "NVIDIA_VISIBLE_DEVICES=void" in env
            assert any("'helper'" in n and "no GPU" in n for n in handle.notes)
        assert project_containers(engine) == {}

    def test_a_dependency_already_running_is_left_as_it_is(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        import subprocess

        write(tmp_path, "compose.yaml", with_dependency("depends_on"))
        up = subprocess.run(
            [*compose_variant.command, "up", "-d", "helper"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        (ours,) = project_containers(engine).values()
        with gpuroute.launch(
            ["true"],
            gpus="1",
            compose_service="app",
            cwd=tmp_path,
            inventory=h100,
            compose=compose_variant.command,
        ) as handle:
            assert handle.wait(timeout=120) == 0, handle.logs()
            assert any("already running: left as it is" in n for n in handle.notes)
        assert list(project_containers(engine).values()) == [(ours[0], "running")]
        subprocess.run(
            [*compose_variant.command, "down", "-t", "0"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )


class TestDriverCapabilities:
    """The service's (or its image's) driver capabilities are kept unless the caller
    chooses; a note says what was kept, or old -> new."""

    VIDEO = "environment:\n  NVIDIA_DRIVER_CAPABILITIES: compute,video,utility\n"

    def launch(
        self, tmp_path: Path, h100: Inventory, compose: ComposeVariant, **kwargs: object
    ) -> tuple[str, list[str]]:
        with gpuroute.launch(
            CAPS,
            gpus="2",
            compose_service="app",
            cwd=tmp_path,
            inventory=h100,
            compose=compose.command,
            **kwargs,  # type: ignore[arg-type]
        ) as handle:
            assert handle.wait(timeout=120) == 0, handle.logs()
            return handle.logs().strip().splitlines()[-1], handle.notes  # after compose's own

    @pytest.mark.compose_variants(V1, V2_PLUGIN)
    def test_the_services_capabilities_are_kept(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        file = write(
            tmp_path, "docker-compose.yml", service(extra=textwrap.dedent(COUNT_ALL) + self.VIDEO)
        )
        caps, notes = self.launch(tmp_path, h100, compose_variant)
        assert caps == "compute,video,utility"
        assert f"kept NVIDIA_DRIVER_CAPABILITIES=compute,video,utility from {file}" in notes

    def test_the_caller_narrows_them(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        file = write(
            tmp_path, "docker-compose.yml", service(extra=textwrap.dedent(COUNT_ALL) + self.VIDEO)
        )
        caps, notes = self.launch(
            tmp_path, h100, compose_variant, driver_capabilities=["compute", "utility"]
        )
        assert caps == "compute,utility"
        assert (
            f"NVIDIA_DRIVER_CAPABILITIES: compute,video,utility (from {file}) -> "
            "compute,utility (driver_capabilities=)"
        ) in notes

    def test_an_image_that_bakes_all_keeps_all(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        image = image_with_all_capabilities(engine)
        write(tmp_path, "docker-compose.yml", service(image, extra=COUNT_ALL))
        assert self.launch(tmp_path, h100, compose_variant)[0] == ALL_CAPS
        caps, _ = self.launch(
            tmp_path, h100, compose_variant, driver_capabilities="compute,utility"
        )
        assert caps == "compute,utility"


class TestProjectName:
    """Compose v2 takes the project's name from a top-level ``name:`` (and prints it in
    ``compose config``); Compose v1 rejects the key."""

    def test_compose_v2_runs_the_service_in_the_named_project(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "compose.yaml", "name: Trainer-1\n" + service(extra=COUNT_ALL))
        with gpuroute.launch(
            ["sleep", "3"],
            gpus="2",
            compose_service="app",
            cwd=tmp_path,
            inventory=h100,
            compose=compose_variant.command,
        ) as handle:
            assert handle.id.startswith("gpuroute-trainer-1-app-")
            labels = container_labels(engine, handle.id)
            assert labels["com.docker.compose.project"] == "trainer-1"
            assert labels["com.docker.compose.service"] == "app"
            assert handle.wait(timeout=60) == 0

    @pytest.mark.compose_variants(V1, V2_PLUGIN)
    def test_without_a_name_the_project_is_the_directory(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        project = tmp_path / "My.Project"
        project.mkdir()
        write(project, "compose.yaml", service(extra=COUNT_ALL))
        with gpuroute.launch(
            ["sleep", "3"],
            gpus="2",
            compose_service="app",
            cwd=project,
            inventory=h100,
            compose=compose_variant.command,
        ) as handle:
            assert container_labels(engine, handle.id)["com.docker.compose.project"] == "myproject"
            assert handle.id.startswith("gpuroute-myproject-app-")
            assert handle.wait(timeout=60) == 0

    @pytest.mark.compose_variants(V1)
    def test_compose_v1_refuses_a_top_level_name_clearly(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "compose.yaml", "name: trainer\n" + service())
        with pytest.raises(LaunchError, match=r"Compose v1.*top-level `name:`") as err:
            run_service(tmp_path, "1", h100, compose_variant)
        assert str(tmp_path / "compose.yaml") in str(err.value)
        assert "COMPOSE_PROJECT_NAME" in str(err.value)


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
        compose_variant: ComposeVariant,
        data: st.DataObject,
    ) -> None:
        plan = data.draw(plans(name))
        engine.use(plan.inventory)
        directory = tmp_path_factory.mktemp("compose")
        write(directory, "compose.yaml", service(extra=COUNT_ALL))
        _, logs, _ = run_service(directory, plan.spec, plan.inventory, compose_variant)
        assert observe(logs) == expect(plan)

    def test_the_callers_gpu_variables_do_not_leak(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
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
        _, logs, _ = run_service(tmp_path, "4,5", h100, compose_variant)
        assert observe(logs)[1] == [h100.gpus[4].uuid, h100.gpus[5].uuid]

    @every_compose
    @pytest.mark.parametrize(
        "command",
        [["true"], ["sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait"]],
        ids=["ended", "running"],
    )
    def test_verify(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
        command: list[str],
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        with verified_app(command, "0", tmp_path, h100, compose_variant) as handle:
            handle.stop()  # the running one ends on SIGTERM, with status 0
            assert handle.wait(timeout=60) == 0

    def test_a_job_that_ends_while_it_is_probed_is_checked_on_a_twin(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        engine.configure_toolkit(sim_nvidia_smi_seconds=PROBE_SECONDS)
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        since = time.time()
        with verified_app(ENDS_WHILE_PROBED, "2", tmp_path, h100, compose_variant) as handle:
            assert handle.wait(timeout=60) == 0  # it ended because it was probed
        # the probe failed with the job, so a twin run was checked (and saw GPU 2)
        assert len(containers_created(engine, since)) == 2

    def test_short_jobs_are_never_called_mis_pinned(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "docker-compose.yml", service(extra=COUNT_ALL))
        errors = mis_pinned_short_jobs(
            lambda: verified_app(["sleep", "0.05"], "2", tmp_path, h100, compose_variant)
        )
        assert errors == [], f"{len(errors)} of {SHORT_JOBS}: {errors[0]}"

    def test_verify_catches_a_mis_pin(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        engine.configure_toolkit(accept_nvidia_visible_devices_envvar_when_unprivileged=False)
        write(tmp_path, "docker-compose.yml", service())
        with pytest.raises(gpuroute.VerificationError):
            verified_app(["sleep", "30"], "0", tmp_path, h100, compose_variant)

    def test_unknown_service_lists_the_services(
        self,
        engine: SimulatedGPUHost,
        h100: Inventory,
        tmp_path: Path,
        compose_variant: ComposeVariant,
    ) -> None:
        write(tmp_path, "docker-compose.yml", service())
        with pytest.raises(LaunchError, match=r"no service 'web'.*services: app"):
            gpuroute.launch(
                ["true"],
                gpus="0",
                compose_service="web",
                cwd=tmp_path,
                inventory=h100,
                compose=compose_variant.command,
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


@every_compose
def test_values_stay_off_the_command_line(
    h100: Inventory, tmp_path: Path, compose_variant: ComposeVariant
) -> None:
    from gpuroute.backends.compose import prepare

    write(tmp_path, "docker-compose.yml", service())
    plan = gpuroute.plan("0", h100, context=CallerContext())
    run = prepare(
        plan,
        "app",
        ["env"],
        cwd=tmp_path,
        compose=compose_variant.command,
        env={"HF_TOKEN": "secret-value"},
    )
    try:
        assert run.argv[: len(compose_variant.command)] == list(compose_variant.command)
        assert "secret-value" not in " ".join(run.argv)
        assert run.argv[run.argv.index("HF_TOKEN") - 1] == "-e"
        assert run.env["HF_TOKEN"] == "secret-value"
        assert run.env["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        run.cleanup()


@every_compose
def test_a_leased_compose_run_holds_its_lease_through_the_container(
    engine: SimulatedGPUHost, h100: Inventory, tmp_path: Path, compose_variant: ComposeVariant
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, "docker-compose.yml", service(extra=COUNT_ALL))
    with gpuroute.launch(
        UNTIL_STOPPED,
        gpus="any:1",
        compose_service="app",
        cwd=project,
        inventory=h100,
        compose=compose_variant.command,
        lease=True,
        lease_dir=tmp_path / "leases",
    ) as run:
        assert run.lease is not None
        assert run.lease.record.container_id
    assert sorted(p.name for p in (tmp_path / "leases").iterdir()) == []


def test_a_dead_launcher_s_generated_configuration_is_removed_and_nothing_else(
    tmp_path: Path,
) -> None:
    """A launcher killed before it could clean up leaves its directory; the next launch
    removes it, and only it: not a live launcher's, not another user's, not one whose name
    says nothing of its launcher, and never through a link."""
    from gpuroute.backends.compose import WORKDIR_PREFIX, remove_stale_workdirs
    from gpuroute.backends.local import process_start_time

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_time(ended.pid)
    ended.wait()
    me = os.getpid()
    dead = tmp_path / f"{WORKDIR_PREFIX}{ended.pid}-{start or 0}-abc"
    reused = tmp_path / f"{WORKDIR_PREFIX}{me}-{(process_start_time(me) or 0) + 1}-abc"
    alive = tmp_path / f"{WORKDIR_PREFIX}{me}-{process_start_time(me) or 0}-abc"
    older = tmp_path / f"{WORKDIR_PREFIX}k2j4h5"
    target = tmp_path / "elsewhere"
    for directory in (dead, reused, alive, older, target):
        directory.mkdir()
        (directory / "compose.gpuroute.yml").write_text("services: {}\n")
    link = tmp_path / f"{WORKDIR_PREFIX}{ended.pid}-{start or 0}-lnk"
    link.symlink_to(target)
    others = tmp_path / f"{WORKDIR_PREFIX}{ended.pid}-{start or 0}-usr"
    others.mkdir()
    if os.geteuid() == 0:
        os.chown(others, 65534, 65534)  # another user's: never ours to remove
    expected = {dead.name, reused.name} | ({others.name} if os.geteuid() != 0 else set())
    assert set(remove_stale_workdirs(str(tmp_path))) == expected
    assert not dead.exists()
    assert not reused.exists()  # its pid lives, but started at another time: another process
    assert alive.exists()
    assert older.exists()
    assert link.is_symlink()
    assert (target / "compose.gpuroute.yml").exists()
    assert others.exists() == (os.geteuid() == 0)
