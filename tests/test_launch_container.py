"""Containers on the simulated GPU host: each adapter yields exactly the planned GPUs, in the
planned numbering, and every failure is actionable and leaves nothing behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuroute
from gpuroute import (
    CallerContext,
    CommandNotFoundError,
    EngineUnavailableError,
    ImageNotFoundError,
    Inventory,
    LaunchError,
    RetryPolicy,
    RoutingPlan,
    ToolkitDeviceError,
    ToolkitMissingError,
    VerificationError,
)
from gpuroute.backends import env as backend_env
from gpuroute.backends.docker import check_docker_kwargs, container_kwargs, seen_by_nvidia_smi
from gpuroute.backends.docker_cli import docker_run_argv
from gpuroute.testing import TOPOLOGIES, topology
from gpuroute.testing.engine import IMAGE, IMAGE_CUDA_ALL, UNTIL_STOPPED, SimulatedGPUHost

pytestmark = pytest.mark.engine

PROBE = ["sh", "-c", "nvidia-smi -L; echo ---; cuda-devices"]
NO_NET = {"network_mode": "none"}


def observe(output: str) -> tuple[list[str], list[str]]:
    """(devices nvidia-smi lists inside, in its order; UUIDs of cuda:0, cuda:1, ...)."""
    smi, _, cuda = output.partition("---")
    return seen_by_nvidia_smi(smi), [
        line.split()[1] for line in cuda.split("\n") if line.startswith("cuda:")
    ]


def expect(plan: RoutingPlan) -> tuple[list[str], list[str]]:
    return [d.uuid for d in plan.container_visible], list(plan.uuids)


def run(
    spec: str, inventory: Inventory, image: str = IMAGE, docker_kwargs: dict[str, Any] | None = None
) -> tuple[int, str]:
    with gpuroute.launch(
        PROBE,
        gpus=spec,
        image=image,
        inventory=inventory,
        context=CallerContext(),
        docker_kwargs={**NO_NET, **(docker_kwargs or {})},
    ) as handle:
        return handle.wait(timeout=60), handle.logs()


class TestDoneWhen:
    def test_3_1_lists_exactly_gpus_1_and_3_and_cuda_0_is_gpu_3(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        with gpuroute.launch(
            ["nvidia-smi", "-L"], gpus="3,1", image=IMAGE, inventory=h100, docker_kwargs=NO_NET
        ) as handle:
            assert handle.wait(timeout=60) == 0
            listing = handle.logs()
        assert seen_by_nvidia_smi(listing) == [h100.gpus[1].uuid, h100.gpus[3].uuid]
        assert handle.plan.container_env["CUDA_VISIBLE_DEVICES"] == "1,0"
        code, output = run("3,1", h100)
        assert code == 0
        assert observe(output)[1] == [h100.gpus[3].uuid, h100.gpus[1].uuid]

    def test_the_cuda_stand_in_can_fail_without_the_plans_numbering(
        self, engine: SimulatedGPUHost, workstation: Inventory
    ) -> None:
        """The check has teeth: on the mixed workstation, CUDA's default order puts the faster
        GPU (host GPU 1, on the higher bus) first, so the host's own numbering is wrong."""
        engine.use(workstation)
        client = engine.client()
        try:
            out = client.containers.run(
                IMAGE,
                ["cuda-devices"],
                remove=True,
                network_mode="none",
                environment={"CUDA_VISIBLE_DEVICES": "0"},
                device_requests=container_kwargs(gpuroute.plan("0,1", workstation))[
                    "device_requests"
                ],
            ).decode()
        finally:
            client.close()
        assert out.split() == ["cuda:0", workstation.gpus[1].uuid]


@st.composite
def plans(draw: st.DrawFn, name: str) -> RoutingPlan:
    inventory = topology(name)
    whole = [str(g.index) for g in inventory.gpus if not g.mig_mode]
    migs = [f"{g.index}:{m.index}" for g in inventory.gpus for m in g.mig_devices]
    choice = draw(st.sampled_from(["whole", "mig", "none"] if migs else ["whole", "none"]))
    if choice == "none":
        tokens: list[str] = []
    elif choice == "mig":
        tokens = [draw(st.sampled_from(migs))]
    else:
        tokens = draw(
            st.lists(st.sampled_from(whole), min_size=1, max_size=len(whole), unique=True)
        )
    return gpuroute.plan(",".join(tokens) or "none", inventory, context=CallerContext())


ENGINE_SETTINGS = settings(
    max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


TOPOLOGY_NAMES = pytest.mark.parametrize("name", sorted(TOPOLOGIES))


class TestEveryAdapterGivesExactlyThePlan:
    """A sample of plans drawn on each simulated topology, run through each adapter."""

    @TOPOLOGY_NAMES
    @ENGINE_SETTINGS
    @given(data=st.data())
    def test_docker_py(self, engine: SimulatedGPUHost, name: str, data: st.DataObject) -> None:
        plan = data.draw(plans(name))
        engine.use(plan.inventory)
        code, output = run(plan.spec, plan.inventory)
        if not plan.devices:
            assert "NVIDIA-SMI has failed" in output
            return
        assert code == 0, output
        assert observe(output) == expect(plan)

    @TOPOLOGY_NAMES
    @ENGINE_SETTINGS
    @given(data=st.data())
    def test_docker_cli_argv(
        self, engine: SimulatedGPUHost, name: str, data: st.DataObject
    ) -> None:
        plan = data.draw(plans(name))
        engine.use(plan.inventory)
        argv = docker_run_argv(plan, IMAGE, PROBE, options=["--rm", "--network", "none"])
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if not plan.devices:
            assert "NVIDIA-SMI has failed" in result.stdout
            return
        assert result.returncode == 0, result.stderr
        assert observe(result.stdout) == expect(plan)

    def test_cdi_mode_names_devices_for_a_cdi_engine(self, h100: Inventory) -> None:
        kw = container_kwargs(gpuroute.plan("3,1", h100, context=CallerContext()), cdi=True)
        (request,) = kw["device_requests"]
        assert request["Driver"] == "cdi"
        assert request["DeviceIDs"] == [
            f"nvidia.com/gpu={h100.gpus[3].uuid}",
            f"nvidia.com/gpu={h100.gpus[1].uuid}",
        ]


class TestImagesThatBakeAll:
    def test_with_gpus(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        _, output = run("6", h100, image=IMAGE_CUDA_ALL)
        assert observe(output) == ([h100.gpus[6].uuid], [h100.gpus[6].uuid])

    def test_with_none(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        _, output = run("none", h100, image=IMAGE_CUDA_ALL)
        assert observe(output) == ([], [])

    def test_under_a_default_nvidia_runtime(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        """The pitfall is real on the simulated host: the image alone exposes every GPU ..."""
        client = engine.client()
        try:
            raw = client.containers.run(
                IMAGE_CUDA_ALL,
                ["nvidia-smi", "-L"],
                runtime="nvidia",
                remove=True,
                network_mode="none",
            ).decode()
        finally:
            client.close()
        assert len(seen_by_nvidia_smi(raw)) == 8
        # ... and gpuroute's plan closes it, with GPUs and without.
        _, output = run("none", h100, image=IMAGE_CUDA_ALL, docker_kwargs={"runtime": "nvidia"})
        assert observe(output) == ([], [])
        _, output = run("2", h100, image=IMAGE_CUDA_ALL, docker_kwargs={"runtime": "nvidia"})
        assert observe(output) == ([h100.gpus[2].uuid], [h100.gpus[2].uuid])


CAPS = ["cat", "/etc/gpuroute-sim/capabilities"]
"""Prints the driver capabilities the stand-in toolkit mounted for the container."""
ALL_CAPS = "compute,compat32,graphics,utility,video,display,ngx"


def image_with_all_capabilities(engine: SimulatedGPUHost) -> str:
    """An image that bakes ``NVIDIA_DRIVER_CAPABILITIES=all``, as graphics and video images do."""
    import io

    tag = "gpuroute-test-caps-all:latest"
    client = engine.client()
    try:
        dockerfile = f"FROM {IMAGE}\nENV NVIDIA_DRIVER_CAPABILITIES=all\n".encode()
        client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    finally:
        client.close()
    return tag


class TestDriverCapabilities:
    """What the image declares is kept unless the caller chooses (docker-py looks at the
    image before creating the container)."""

    def test_an_image_that_bakes_all_keeps_all(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        image = image_with_all_capabilities(engine)
        with gpuroute.launch(
            CAPS, gpus="2", image=image, inventory=h100, docker_kwargs=NO_NET
        ) as handle:
            assert handle.wait(timeout=60) == 0
            assert handle.logs().strip() == ALL_CAPS
            assert "kept the image's NVIDIA_DRIVER_CAPABILITIES=all" in handle.notes

    def test_the_caller_narrows_and_the_note_says_old_and_new(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        image = image_with_all_capabilities(engine)
        with gpuroute.launch(
            CAPS,
            gpus="2",
            image=image,
            inventory=h100,
            docker_kwargs=NO_NET,
            driver_capabilities=["compute", "utility"],
        ) as handle:
            assert handle.wait(timeout=60) == 0
            assert handle.logs().strip() == "compute,utility"
            assert handle.notes == [
                "NVIDIA_DRIVER_CAPABILITIES: all (the image's) -> compute,utility "
                "(driver_capabilities=)"
            ]

    def test_an_image_that_declares_none_gets_the_default(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        with gpuroute.launch(
            CAPS, gpus="2", image=IMAGE, inventory=h100, docker_kwargs=NO_NET
        ) as handle:
            assert handle.wait(timeout=60) == 0
            assert handle.logs().strip() == "compute,utility"
            assert handle.notes == []


class TestVerify:
    def test_a_correct_launch_passes(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        with gpuroute.launch(
            UNTIL_STOPPED,
            gpus="5,0",
            image=IMAGE,
            inventory=h100,
            verify=True,
            docker_kwargs=NO_NET,
        ) as handle:
            assert isinstance(handle, gpuroute.ContainerLaunch)
            assert handle.container.status in ("created", "running")

    def test_a_short_run_is_verified_through_a_twin(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        with gpuroute.launch(
            ["true"], gpus="4", image=IMAGE, inventory=h100, verify=True, docker_kwargs=NO_NET
        ) as handle:
            assert handle.wait(timeout=30) == 0

    def test_a_mis_pinned_container_is_stopped_and_removed(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        # A toolkit that ignores NVIDIA_VISIBLE_DEVICES in unprivileged containers (as
        # Bottlerocket configures it) starts the container with no GPU at all.
        engine.configure_toolkit(accept_nvidia_visible_devices_envvar_when_unprivileged=False)
        with pytest.raises(VerificationError) as err:
            gpuroute.launch(
                ["sleep", "30"],
                gpus="3,1",
                image=IMAGE,
                inventory=h100,
                verify=True,
                docker_kwargs=NO_NET,
            )
        assert h100.gpus[1].uuid in str(err.value)
        assert "NVIDIA-SMI has failed" in str(err.value)
        # the engine fixture asserts that no container was left behind


SHORT_JOBS = 16
"""Short jobs verified per path at random moments: each must pass (the check used to race the
job's end). The worst moment, a job ending while nvidia-smi runs in it, is made to happen
every time by ``ENDS_WHILE_PROBED``."""

ENDS_WHILE_PROBED = ["sh", "-c", "until ps | grep -q '[n]vidia-smi'; do usleep 5000; done"]
"""A job that ends as soon as nvidia-smi runs inside its container: the probe, which takes
``PROBE_SECONDS`` on this host, is killed with the container (no output, a failed exec) while
the engine may still call the container running."""

PROBE_SECONDS = 0.5


def containers_created(engine: SimulatedGPUHost, since: float) -> list[str]:
    """The images of the containers the engine created from ``since`` (unix time) on."""
    client = engine.client()
    try:
        events = client.events(
            since=since,
            until=time.time(),
            filters={"type": "container", "event": "create"},
            decode=True,
        )
        return [str(e["Actor"]["Attributes"].get("image", "")) for e in events]
    finally:
        client.close()


def mis_pinned_short_jobs(
    launch: Callable[[], gpuroute.Launch], runs: int = SHORT_JOBS
) -> list[str]:
    """Launch ``runs`` correctly pinned 50 ms jobs with ``verify=True``, eight at a time (a
    busy engine makes the race likelier, and the test shorter); the VerificationErrors, and
    the output of any job that did not exit 0."""

    def one(_: int) -> str | None:
        try:
            with launch() as handle:
                code = handle.wait(timeout=120)
                return None if code == 0 else f"exit status {code}: {handle.logs()}"
        except VerificationError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [e for e in pool.map(one, range(runs)) if e is not None]


class TestShortJobsAreNeverCalledMisPinned:
    def test_a_job_that_ends_while_it_is_probed_is_checked_on_a_twin(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        engine.configure_toolkit(sim_nvidia_smi_seconds=PROBE_SECONDS)
        since = time.time()
        with gpuroute.launch(
            ENDS_WHILE_PROBED, gpus="2", image=IMAGE, inventory=h100, verify=True,
            docker_kwargs=NO_NET,
        ) as handle:  # fmt: skip
            assert handle.wait(timeout=60) == 0  # it ended because it was probed
        # the probe failed with the job, so a twin was checked (and saw GPU 2)
        assert len(containers_created(engine, since)) == 2

    def test_a_container(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        errors = mis_pinned_short_jobs(
            lambda: gpuroute.launch(
                ["sleep", "0.05"],
                gpus="2",
                image=IMAGE,
                inventory=h100,
                verify=True,
                docker_kwargs=NO_NET,
            )
        )
        assert errors == [], f"{len(errors)} of {SHORT_JOBS}: {errors[0]}"


class TestEngineErrors:
    def test_unknown_device_from_the_toolkit(
        self, engine: SimulatedGPUHost, a100: Inventory
    ) -> None:
        # The inventory describes another host than the engine's: its UUIDs are unknown there.
        with pytest.raises(ToolkitDeviceError, match=r"device error: GPU-.*: unknown device") as e:
            gpuroute.launch(["true"], gpus="0", image=IMAGE, inventory=a100, docker_kwargs=NO_NET)
        assert "DOCKER_HOST" in str(e.value)

    def test_image_not_found(self, engine: SimulatedGPUHost, h100: Inventory) -> None:
        with pytest.raises(ImageNotFoundError, match="no-such-image:1"):
            gpuroute.launch(
                ["true"],
                gpus="0",
                image="no-such-image:1",
                inventory=h100,
                pull="never",
                docker_kwargs=NO_NET,
            )

    @pytest.mark.parametrize(
        ("command", "name"),
        [(["no-such-program", "-x"], "no-such-program"), (["/no/such/path"], "/no/such/path")],
    )
    def test_a_command_missing_from_the_image_is_named(
        self, engine: SimulatedGPUHost, h100: Inventory, command: list[str], name: str
    ) -> None:
        """docker says exit 127 / "executable file not found"; that read as "the Docker engine
        … failed"."""
        with pytest.raises(CommandNotFoundError) as err:
            gpuroute.launch(command, gpus="0", image=IMAGE, inventory=h100, docker_kwargs=NO_NET)
        message = str(err.value)
        assert message.startswith(f"the command {name!r} is not found in image {IMAGE!r}")
        assert "Docker engine" not in message
        assert isinstance(err.value, LaunchError)

    def test_a_toolkit_hook_crash_is_summed_up_not_dumped(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        """A crashing hook's Python traceback filled the EngineError's message."""
        assert engine.root is not None
        (engine.root / "toolkit.json").write_text("{not json")  # the hook fails to read it
        with pytest.raises(gpuroute.EngineError) as err:
            gpuroute.launch(["true"], gpus="0", image=IMAGE, inventory=h100, docker_kwargs=NO_NET)
        message = str(err.value)
        assert "Traceback" not in message
        assert 'File "' not in message
        assert message.startswith("the NVIDIA Container Toolkit's hook failed")
        assert "JSONDecodeError: Expecting property name enclosed in double quotes" in message
        assert "Traceback" in str(err.value.__cause__), "the whole output stays, as the cause"

    def test_verification_of_an_auto_removed_container_uses_a_twin_that_stays(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        """With auto_remove=True the twin was removed before its output was read: "No such
        container"."""
        with gpuroute.launch(
            ["true"],
            gpus="3,1",
            image=IMAGE,
            inventory=h100,
            verify=True,
            docker_kwargs={**NO_NET, "auto_remove": True},
        ) as handle:
            assert handle.id  # verified: through a twin, the container having ended

    def test_engine_unreachable_after_bounded_jittered_retries(self, h100: Inventory) -> None:
        waits: list[float] = []
        policy = RetryPolicy(
            attempts=4, initial_wait=0.1, max_wait=0.25, jitter=0.5, sleep=waits.append
        )
        with pytest.raises(EngineUnavailableError, match=r"nope\.sock"):
            gpuroute.launch(
                ["true"],
                gpus="0",
                image=IMAGE,
                inventory=h100,
                retry=policy,
                docker_host="unix:///tmp/nope.sock",
            )
        assert len(waits) == 3
        assert 0.1 <= waits[0] <= 0.15
        assert all(w <= 0.25 * 1.5 for w in waits)

    def test_a_launch_rides_out_an_engine_restart(
        self, engine: SimulatedGPUHost, h100: Inventory
    ) -> None:
        thread = engine.restart(down_for=1.0)
        started = time.monotonic()
        with gpuroute.launch(
            ["nvidia-smi", "-L"],
            gpus="7",
            image=IMAGE,
            inventory=h100,
            retry=RetryPolicy(attempts=30, initial_wait=0.1, max_wait=0.5),
            docker_kwargs=NO_NET,
        ) as handle:
            assert handle.wait(timeout=60) == 0
            assert seen_by_nvidia_smi(handle.logs()) == [h100.gpus[7].uuid]
        thread.join()
        assert time.monotonic() - started >= 0.9

    def test_toolkit_missing(self, h100: Inventory) -> None:
        with SimulatedGPUHost(h100, toolkit=False) as bare:
            with pytest.raises(ToolkitMissingError) as err:
                gpuroute.launch(
                    ["true"],
                    gpus="0",
                    image=IMAGE,
                    inventory=h100,
                    docker_host=bare.base_url,
                    docker_kwargs=NO_NET,
                )
            assert "nvidia-ctk runtime configure" in str(err.value)
            client = bare.client()
            try:
                assert client.containers.list(all=True) == []
                # no GPU needs no toolkit
                with gpuroute.launch(
                    ["true"],
                    gpus="none",
                    image=IMAGE,
                    inventory=h100,
                    docker_host=bare.base_url,
                    docker_kwargs=NO_NET,
                ) as h:
                    assert h.wait(timeout=30) == 0
            finally:
                client.close()


class TestEnvironment:
    def test_callers_gpu_variables_never_reach_the_container(
        self, engine: SimulatedGPUHost, h100: Inventory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
        monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
        with gpuroute.launch(
            ["env"],
            gpus="2",
            image=IMAGE,
            inventory=h100,
            env={"MY_VAR": "1"},
            docker_kwargs=NO_NET,
        ) as handle:
            handle.wait(timeout=30)
            env = dict(line.split("=", 1) for line in handle.logs().split() if "=" in line)
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["NVIDIA_VISIBLE_DEVICES"] == h100.gpus[2].uuid
        assert env["MY_VAR"] == "1"

    def test_env_may_not_set_what_gpuroute_owns(self, h100: Inventory) -> None:
        with pytest.raises(LaunchError, match="CUDA_VISIBLE_DEVICES"):
            gpuroute.launch(
                ["true"], gpus="0", image=IMAGE, inventory=h100, env={"CUDA_VISIBLE_DEVICES": "3"}
            )

    @pytest.mark.parametrize(
        ("kwargs", "fragment"),
        [
            ({"privileged": True}, "privileged"),
            ({"devices": ["/dev/nvidia0"]}, "nvidia0"),
            ({"environment": {}}, "environment"),
        ],
    )
    def test_docker_kwargs_that_would_undo_the_plan(
        self, h100: Inventory, kwargs: dict[str, object], fragment: str
    ) -> None:
        with pytest.raises(LaunchError, match=fragment):
            gpuroute.launch(["true"], gpus="0", image=IMAGE, inventory=h100, docker_kwargs=kwargs)

    def test_a_string_command_is_refused(self, h100: Inventory) -> None:
        with pytest.raises(LaunchError, match="never runs a shell"):
            gpuroute.launch(
                "nvidia-smi -L",
                gpus="0",
                image=IMAGE,
                inventory=h100,
            )


def gpu_node(directory: Path, name: str = "gpu", major: int = 195, minor: int = 3) -> Path:
    """A character device with NVIDIA's major number at a path nobody would call a GPU's."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    return path


class TestGpuDeviceNodesByWhatTheyAre:
    """Device nodes are judged by what they are (a character device with an NVIDIA major),
    however they are named or reached: ``devices``, bind mounts, device cgroup rules."""

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"devices": ["{node}:/dev/x:rwm"]},
            {"devices": ["{link}:/dev/x"]},
            {"devices": ["/dev/./nvidia0:/dev/nvidia0"]},
            {"devices": ["//dev//nvidia1"]},
            {"volumes": {"{node}": {"bind": "/dev/x", "mode": "rw"}}},
            {"volumes": ["{node}:/dev/x"]},
            {"volumes": {"{dir}": {"bind": "/data", "mode": "ro"}}},
            {"binds": ["{dir}/deeper/..:/data"]},
            {"mounts": [{"Type": "bind", "Source": "{node}", "Target": "/dev/x"}]},
            {"device_cgroup_rules": ["c 195:* rwm"]},
            {"device_cgroup_rules": ["a *:* rwm"]},
            {"device_cgroup_rules": ["c *:* rw"]},
        ],
        ids=lambda kw: f"{next(iter(kw))}:{kw[next(iter(kw))]}",
    )
    def test_refused(self, h100: Inventory, tmp_path: Path, kwargs: dict[str, Any]) -> None:
        node = gpu_node(tmp_path / "nodes" / "deeper")
        (tmp_path / "link").symlink_to(node)
        fill = {"node": str(node), "link": str(tmp_path / "link"), "dir": str(tmp_path / "nodes")}

        def filled(value: Any) -> Any:
            if isinstance(value, str):
                return value.format(**fill)
            if isinstance(value, dict):
                return {filled(k): filled(v) for k, v in value.items()}
            return [filled(v) for v in value]

        ((key, value),) = kwargs.items()
        with pytest.raises(LaunchError, match=key) as err:
            gpuroute.launch(
                ["true"], gpus="0", image=IMAGE, inventory=h100, docker_kwargs={key: filled(value)}
            )
        assert "gpus=" in str(err.value)

    def test_dynamic_majors_are_read_from_proc_devices(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        devices = tmp_path / "devices"
        devices.write_text(
            "Character devices:\n  1 mem\n195 nvidia\n505 nvidia-caps\n511 nvidia-uvm\n"
            "\nBlock devices:\n510 nvidia-not-a-char-device\n"
        )
        monkeypatch.setattr(backend_env, "PROC_DEVICES", devices)
        assert backend_env.gpu_majors() == {195, 505, 511}
        uvm = gpu_node(tmp_path, "uvm", major=511, minor=0)
        with pytest.raises(LaunchError, match="devices"):
            check_docker_kwargs({"devices": [f"{uvm}:/dev/nvidia-uvm"]})
        with pytest.raises(LaunchError, match="device_cgroup_rules"):
            check_docker_kwargs({"device_cgroup_rules": ["c 505:1 r"]})
        block = gpu_node(tmp_path, "block-like", major=510, minor=0)
        check_docker_kwargs({"devices": [f"{block}:/dev/b"]})

    def test_other_devices_mounts_and_rules_pass(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        (data / "sub").mkdir(parents=True)
        (data / "sub" / "file").write_text("x")
        os.mkfifo(data / "fifo")
        (data / "sub" / "to-nvidia").symlink_to("/dev/nvidia0")  # the container's own path
        check_docker_kwargs(
            {
                "devices": ["/dev/null:/dev/null", "/dev/fuse"],
                "volumes": {str(data): {"bind": "/data", "mode": "ro"}, "named": {"bind": "/n"}},
                "mounts": [{"Type": "volume", "Source": "cache", "Target": "/cache"}],
                "device_cgroup_rules": ["c 10:200 rwm", "b *:* rwm", "c 195:* m"],
            }
        )


def test_wait_timeout_and_stop(engine: SimulatedGPUHost, h100: Inventory) -> None:
    with gpuroute.launch(
        ["sleep", "60"], gpus="1", image=IMAGE, inventory=h100, docker_kwargs=NO_NET
    ) as handle:
        with pytest.raises(gpuroute.LaunchTimeout):
            handle.wait(timeout=0.5)
        handle.stop(timeout=1)
        assert handle.wait(timeout=30) != 0
    client = docker.DockerClient(base_url=engine.base_url)
    try:
        assert client.containers.list(all=True) == []
    finally:
        client.close()


def test_permission_denied_on_the_engine_socket(
    engine: SimulatedGPUHost, other_user_env: dict[str, str]
) -> None:
    """A real user without access to the socket (root owns it, mode 0660). It imports
    gpuroute from a copy it can read, wherever this checkout lies."""
    assert engine.root is not None
    code = (
        "import sys, gpuroute\n"
        "from gpuroute.testing import topology\n"
        "try:\n"
        "    gpuroute.launch(['true'], gpus='0', image='x', inventory=topology('h100-sxm-8'),\n"
        "                    docker_host=sys.argv[1])\n"
        "except gpuroute.GpurouteError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    engine.root.chmod(0o755)
    try:
        result = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                engine.base_url,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd="/",
            env=other_user_env,
        )
    finally:
        engine.root.chmod(0o700)
    assert result.stdout.startswith("EnginePermissionError permission denied"), result.stderr
    assert "docker` group" in result.stdout


def test_a_name_taken_by_another_container_is_not_adopted(
    engine: SimulatedGPUHost, h100: Inventory
) -> None:
    client = engine.client()
    try:
        theirs = client.containers.create(IMAGE, ["sleep", "30"], name="taken", network_mode="none")
        with pytest.raises(gpuroute.EngineError, match="taken"):
            gpuroute.launch(
                ["true"], gpus="0", image=IMAGE, inventory=h100, name="taken", docker_kwargs=NO_NET
            )
        theirs.reload()
        assert "gpuroute.launch" not in theirs.labels
        theirs.remove(force=True)
    finally:
        client.close()
