"""A simulated GPU host: a private Docker Engine with a stand-in NVIDIA toolkit.

``SimulatedGPUHost`` starts a real ``dockerd`` of its own (its own socket, data root, exec
root and pid file, in a fresh temporary directory; never the system engine) whose PATH holds
``nvidia-container-runtime-hook`` from ``gpuroute.testing.toolkit``, so that the engine
registers its ``nvidia`` device driver and calls the hook for every GPU device request, as it
does on a real GPU host. A runtime named ``nvidia`` is registered too. It builds, locally,
the test image ``gpuroute-sim:latest`` (a static busybox with stand-ins for ``nvidia-smi -L``
and CUDA's device enumeration, ``cuda-devices``, and for the benchmark tools ``vllm`` and
``trtllm-bench``), ``gpuroute-sim-cuda:latest``, which bakes ``NVIDIA_VISIBLE_DEVICES=all`` as
CUDA base images do, and ``gpuroute-sim-vllm:latest`` / ``gpuroute-sim-trtllm:latest``, which
stand in for the vLLM and TensorRT-LLM images.

It needs root, ``dockerd`` and a static ``busybox`` (Debian: ``docker.io``, ``busybox-static``).
``SimulatedGPUHost.unavailable()`` says why it cannot run here, or returns None.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from gpuroute.core.closing import Closing
from gpuroute.core.inventory import Inventory
from gpuroute.testing import toolkit
from gpuroute.testing.watchdog import (
    LET_GO,
    kill_engine_processes,
    names,
    stop_engine,
    unmount_below,
)

__all__ = [
    "IMAGE",
    "IMAGE_CUDA_ALL",
    "IMAGE_TRTLLM",
    "IMAGE_VLLM",
    "STAND_IN_IMAGES",
    "UNTIL_STOPPED",
    "SimulatedGPUHost",
]

IMAGE = "gpuroute-sim:latest"
IMAGE_CUDA_ALL = "gpuroute-sim-cuda:latest"
IMAGE_VLLM = "gpuroute-sim-vllm:latest"
"""Stands in for the vLLM image: the stand-in ``vllm``, and the entrypoint ``vllm serve`` of
newer vLLM images (a runner that does not set its own entrypoint runs a server)."""
UNTIL_STOPPED = ("sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait")
"""A command for the test images that runs until it is stopped, then ends at once. A
container's first process ignores SIGTERM unless it handles it: with ``sleep 60`` each stop
would wait out the engine's grace period (10 s) before SIGKILL."""
IMAGE_TRTLLM = "gpuroute-sim-trtllm:latest"
"""Stands in for the TensorRT-LLM release image: the stand-in ``trtllm-bench``."""
STAND_IN_IMAGES = {"vllm": IMAGE_VLLM, "trtllm": IMAGE_TRTLLM}
"""The stand-in image for each benchmark runner that has one, by runner name."""
_TOOLS = ("nvidia-smi", "cuda-devices", "vllm", "trtllm-bench")


class EngineStartError(RuntimeError):
    """The private engine did not come up; the message carries the end of its log."""


class SimulatedGPUHost(Closing):
    """A private Docker Engine that behaves like a GPU host with the given topology.

    Use as a context manager, or call ``start()`` and ``stop()``. ``use(topology)`` switches
    the simulated GPUs for containers started afterwards.
    """

    def __init__(
        self, topology: Inventory, *, toolkit: bool = True, start_timeout: float = 60.0
    ) -> None:
        self.inventory = topology
        self.toolkit = toolkit
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: tuple[subprocess.Popen[bytes], int] | None = None

    # -- availability ------------------------------------------------------------------

    @staticmethod
    def unavailable() -> str | None:
        """Why a private engine cannot be started here, or None if it can."""
        if os.geteuid() != 0:
            return "the private Docker Engine needs root"
        for tool in ("dockerd", "runc", "busybox"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian: docker.io, busybox-static)"
        if not _is_static(Path(shutil.which("busybox") or "")):
            return "busybox is not statically linked (Debian: busybox-static)"
        return None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        assert self.root is not None, "the engine is not started"
        return self.root / "docker.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """Variables that point a docker client at this engine."""
        return {"DOCKER_HOST": self.base_url}

    @property
    def log(self) -> str:
        if self.root is None or not (self.root / "dockerd.log").exists():
            return ""
        return (self.root / "dockerd.log").read_text(errors="replace")

    def configure_toolkit(self, **settings: Any) -> None:
        """Set options of the stand-in toolkit's config file, by their toolkit names with
        ``-`` written ``_`` (``accept_nvidia_visible_devices_envvar_when_unprivileged=False``),
        and the simulated host's own: ``sim_nvidia_smi_seconds=0.5`` makes ``nvidia-smi -L``
        take that long. They apply to containers started from now on;
        ``configure_toolkit()`` resets them."""
        assert self.root is not None, "the engine is not started"
        data = {k.replace("_", "-"): v for k, v in settings.items()}
        (self.root / "toolkit.json").write_text(json.dumps(data))

    def restart(self, down_for: float) -> threading.Thread:
        """Stop the engine now and start it again after ``down_for`` seconds, in a background
        thread (returned, to join). Containers and images survive, as on a real restart."""
        assert self._process is not None, "the engine is not started"
        self._terminate()

        def back_up() -> None:
            time.sleep(down_for)
            self._start()

        thread = threading.Thread(target=back_up, daemon=True)
        thread.start()
        return thread

    def use(self, topology: Inventory) -> None:
        """Simulate another topology for containers started from now on."""
        self.inventory = topology
        if self.root is not None:
            toolkit.save_inventory(topology, self.root / "inventory.json")

    def start(self) -> SimulatedGPUHost:
        reason = self.unavailable()
        if reason is not None:
            raise EngineStartError(reason)
        clean_stale_roots()
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        (self.root / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
        try:
            self._start()
            self._build_images()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_executables(self, bin_dir: Path) -> None:
        """The stand-in toolkit's executables, run at every container start (the runtime
        several times). They import the toolkit and the pure core of this very gpuroute, and
        neither ``gpuroute``'s nor ``gpuroute.testing``'s ``__init__`` (docker-py, pynvml):
        that would take most of each start."""
        bin_dir.mkdir()
        package = Path(__file__).resolve().parent.parent
        for name, entry in (
            ("nvidia-container-runtime-hook", "hook_main"),
            ("nvidia-container-runtime", "runtime_main"),
        ):
            path = bin_dir / name
            path.write_text(
                f"#!{sys.executable} -I\n"
                "import sys, types\n"
                f"for name, path in (('gpuroute', {str(package)!r}),"
                f" ('gpuroute.testing', {str(package / 'testing')!r})):\n"
                "    sys.modules[name] = module = types.ModuleType(name)\n"
                "    module.__path__ = [path]\n"
                f"from gpuroute.testing.toolkit import {entry}\n"
                f"sys.exit({entry}())\n"
            )
            path.chmod(0o755)

    def _start(self) -> None:
        assert self.root is not None
        bin_dir = self.root / "bin"
        if not bin_dir.exists():
            self._write_executables(bin_dir)
            toolkit.save_inventory(self.inventory, self.root / "inventory.json")
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            toolkit.INVENTORY_VAR: str(self.root / "inventory.json"),
            toolkit.HOOK_PATH_VAR: str(bin_dir / "nvidia-container-runtime-hook"),
            toolkit.RUNC_VAR: shutil.which("runc") or "runc",
            toolkit.CONFIG_VAR: str(self.root / "toolkit.json"),
        }
        if not self.toolkit:  # an engine on a host without the NVIDIA Container Toolkit
            env["PATH"] = os.environ.get("PATH", "")
        env.pop("DOCKER_HOST", None)
        # What the engine and its containerd write to a temporary directory (a goroutine dump
        # when stopped under load, build contexts) stays in the root that stop() removes.
        (self.root / "tmp").mkdir(mode=0o700, exist_ok=True)
        env["TMPDIR"] = str(self.root / "tmp")
        argv = [
            "dockerd",
            f"--host={self.base_url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
        ]
        if self.toolkit:
            argv.append(f"--add-runtime=nvidia={bin_dir / 'nvidia-container-runtime'}")
        with open(self.root / "dockerd.log", "ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._watch(self._process.pid)
        self._wait_until_ready()

    def _watch(self, pid: int) -> None:
        """Start the watchdog that stops dockerd ``pid`` once this process is gone, however
        it ends (see ``gpuroute.testing.watchdog``)."""
        assert self.root is not None
        reader, writer = os.pipe()
        try:
            watchdog = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    WATCHDOG,
                    str(reader),
                    str(pid),
                    str(self.root),
                ],
                pass_fds=(reader,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the owner's group does not reach it
            )
        except BaseException:
            os.close(writer)
            raise
        finally:
            os.close(reader)
        self._watchdog = (watchdog, writer)

    def _unwatch(self) -> None:
        """The engine was stopped here: let the watchdog go."""
        if self._watchdog is not None:
            watchdog, writer = self._watchdog
            self._watchdog = None
            try:
                os.write(writer, LET_GO)
            finally:
                os.close(writer)
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=10)

    def crash(self) -> int:
        """Kill dockerd at once (SIGKILL), as a crash would: its containers keep running
        (their shims outlive it) and its API stops answering. Returns dockerd's pid; ``stop()``
        still cleans up everything."""
        assert self._process is not None, "the engine is not started"
        self._process.kill()
        self._process.wait()
        return self._process.pid

    def _wait_until_ready(self) -> None:
        import docker
        import tenacity

        def answers() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EngineStartError(f"dockerd exited at start-up:\n{self.log[-3000:]}")
            if self.socket.exists():
                with contextlib.suppress(Exception):
                    client = docker.DockerClient(base_url=self.base_url, timeout=5)
                    try:
                        if client.ping():
                            return True
                    finally:
                        client.close()
            return False

        # Asked every 0.1 s until it answers; dockerd exiting ends the wait at once.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(self.start_timeout),
            wait=tenacity.wait_fixed(0.1),
            retry=tenacity.retry_if_result(lambda answered: not answered),
            retry_error_callback=lambda _state: False,
        )
        if not retrying(answers):
            raise EngineStartError(
                f"dockerd did not answer within {self.start_timeout:.0f}s:\n{self.log[-3000:]}"
            )

    def _build_images(self) -> None:
        client = self.client()
        try:
            client.images.load(_image_archive())  # reads the engine's answer to its end
            for tag, _, _ in _IMAGES:
                client.images.get(tag)  # each is there, or ImageNotFound says which is not
        finally:
            client.close()

    def client(self, **kwargs: Any) -> Any:
        """A docker-py client for this engine."""
        import docker

        return docker.DockerClient(base_url=self.base_url, **kwargs)

    def stop(self) -> None:
        """Stop the engine (removing its containers) and delete everything it wrote."""
        has_socket = self.root is not None and self.socket.exists()
        if self._process is not None and self._process.poll() is None and has_socket:
            with contextlib.suppress(Exception):
                client = self.client(timeout=10)
                try:
                    for container in client.containers.list(all=True):
                        with contextlib.suppress(Exception):
                            container.remove(force=True)
                finally:
                    client.close()
        self._terminate()
        if self.root is not None:
            kill_engine_processes(str(self.root))  # after a crash: shims, containers
            unmount_below(str(self.root))
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # a containerd dockerd left behind
        self._unwatch()

    def __enter__(self) -> SimulatedGPUHost:
        return self.start()

    def close(self) -> None:
        """Stop (as leaving a ``with`` block does)."""
        self.stop()


ROOT_PREFIX = "gpuroute-engine-"
WATCHDOG = str(Path(__file__).with_name("watchdog.py"))


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def clean_stale_roots(tmp: str | None = None) -> list[Path]:
    """Remove the directories of private engines whose owner is gone (a run that was killed
    before it could stop its engine), stopping such an engine first if it still runs.
    Returns what was removed."""
    removed = []
    for root in Path(tmp or tempfile.gettempdir()).glob(ROOT_PREFIX + "*"):
        try:
            owner_pid, _, owner_start = (root / "owner").read_text().partition(" ")
        except OSError:
            continue  # not (yet) an engine's directory: leave it
        if owner_pid.isdigit() and _start_time(int(owner_pid)) == owner_start.strip():
            continue  # its owner lives
        try:
            dockerd = (root / "dockerd.pid").read_text().strip()
        except OSError:
            dockerd = ""
        alive = dockerd.isdigit() and names(int(dockerd), str(root))
        stop_engine(int(dockerd) if alive else None, str(root))
        removed.append(root)
    return removed


def _is_static(path: Path) -> bool:
    """Whether an ELF executable has no program interpreter (a static binary)."""
    try:
        with path.open("rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
                return False
            order = "<" if header[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", header, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(
        struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


_IMAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    (IMAGE, (), None),
    (
        IMAGE_CUDA_ALL,
        (
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            "CUDA_VERSION=12.8.1",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.8",
        ),
        None,
    ),
    (IMAGE_VLLM, ("NVIDIA_VISIBLE_DEVICES=all",), ("vllm", "serve")),
    (IMAGE_TRTLLM, ("NVIDIA_VISIBLE_DEVICES=all",), None),
)
"""Each test image: its tag, its environment beyond ``PATH=/bin``, and its entrypoint."""


def _image_archive() -> bytes:
    """The test images as one ``docker load`` archive (the ``docker save`` layout): a single
    layer, the root filesystem, which all four images share, so that the engine unpacks it
    once rather than once per image."""
    import hashlib
    import platform

    layer = _image_tar()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_path = f"{diff_id.removeprefix('sha256:')}/layer.tar"
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    buffer = io.BytesIO()

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    manifest = []
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        add(tar, layer_path, layer)
        for tag, env, entrypoint in _IMAGES:
            settings: dict[str, Any] = {"Env": ["PATH=/bin", *env], "Cmd": ["sh"]}
            if entrypoint is not None:
                settings["Entrypoint"] = list(entrypoint)
            config = json.dumps(
                {
                    "architecture": arch,
                    "os": "linux",
                    "config": settings,
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [{"created_by": "gpuroute.testing.engine"}],
                },
                sort_keys=True,
            ).encode()
            name = f"{hashlib.sha256(config).hexdigest()}.json"
            add(tar, name, config)
            manifest.append({"Config": name, "RepoTags": [tag], "Layers": [layer_path]})
        add(tar, "manifest.json", json.dumps(manifest).encode())
    return buffer.getvalue()


def _image_tar() -> bytes:
    """A root filesystem: static busybox with its applets, and the GPU stand-ins."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "etc", "tmp", "dev", "proc", "sys"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet in ("busybox", *_TOOLS):
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for tool in _TOOLS:
            text = (resources.files("gpuroute.testing") / "image" / tool).read_bytes()
            info = tarfile.TarInfo(f"bin/{tool}")
            info.mode = 0o755
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()
