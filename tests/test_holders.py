"""A leased GPU has one holder, whenever the launcher dies: the lease names the work before
the work can run, a holder is judged by its own backend (a zombie is gone; a container whose
engine no longer answers lives as long as its init process), and private engines and
``gpuroute run`` clean up after signals and kills."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import gpuroute
from gpuroute import CallerContext, DeviceLeasedError, DockerWork, GpurouteError, Host
from gpuroute.limits import Policy
from gpuroute.testing import topology
from gpuroute.testing.engine import (
    IMAGE,
    ROOT_PREFIX,
    UNTIL_STOPPED,
    SimulatedGPUHost,
    clean_stale_roots,
)

H100 = topology("h100-sxm-8")
NO_NET = {"network_mode": "none"}
REPO = Path(__file__).resolve().parent.parent


def host(lease_dir: Path) -> Host:
    return Host(inventory=H100, context=CallerContext(), lease_dir=lease_dir, policy=Policy())


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- a zombie is gone ----------------------------------------------------------------------


def test_a_zombie_holder_is_gone(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])  # never waited for until the end: a zombie meanwhile
    try:
        assert wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().split()[2] == "Z")
        held = gpuroute.acquire("2", inventory=H100, lease_dir=tmp_path, pid=child.pid)
        assert held.holder.pid == child.pid
        again = host(tmp_path).acquire("2")
        assert any(f"its process {child.pid} has ended (a zombie" in n for n in again.notes)
    finally:
        child.wait()


# -- a launcher killed at any step --------------------------------------------------------

LAUNCHER = """
import os, signal, sys
from pathlib import Path
from gpuroute import CallerContext, ComposeWork, DockerWork, Host, LocalWork
from gpuroute.backends.docker import ContainerLaunch
from gpuroute.leases import Lease
from gpuroute.limits import Policy
from gpuroute.testing import topology

kind, point, lease_dir, marker = sys.argv[1:5]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

binds = []
original_bind = Lease.bind

def bind(self, holder):
    binds.append(holder)
    if point == f"before-bind-{len(binds)}":
        die()
    original_bind(self, holder)
    if point == f"after-bind-{len(binds)}":
        die()

Lease.bind = bind
if point == "during-verify":
    ContainerLaunch.verify = lambda self: die()
host = Host(
    inventory=topology("h100-sxm-8"), context=CallerContext(), lease_dir=lease_dir,
    policy=Policy(),
)
if kind == "local":
    work = LocalWork(command=(sys.executable, "-c", "import time; time.sleep(60)", marker))
elif kind == "docker":
    work = DockerWork(
        command=("sleep", "60"), image=sys.argv[5], docker_kwargs={"network_mode": "none"},
        verify=True, name=marker,
    )
else:
    work = ComposeWork(service="app", command=("sleep", "60"), cwd=sys.argv[5], name=marker)
handle = host.launch(work, gpus="5", lease=True)
handle.detach()
die()  # after the launch: the work runs, held by its lease
"""


def run_launcher(
    kind: str, point: str, lease_dir: Path, marker: str, *extra: str, tmpdir: Path | None = None
) -> None:
    """Run a launcher that kills itself (SIGKILL) at ``point``, and wait for it to die."""
    process = subprocess.run(
        [sys.executable, "-c", LAUNCHER, kind, point, str(lease_dir), marker, *extra],
        env={**os.environ, "TMPDIR": str(tmpdir)} if tmpdir is not None else None,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]


def check_one_holder(lease_dir: Path, work_runs: Callable[[], bool], expect_free: bool) -> None:
    """After the launcher's death: a new acquisition of its GPU succeeds only if no work runs
    (nor starts later); while the work runs, it is refused."""
    time.sleep(1.0)  # let whatever the dead launcher started get going
    try:
        lease = host(lease_dir).acquire("5")
    except DeviceLeasedError:
        assert not expect_free, "the GPU stayed leased although no work can run"
        return
    try:
        assert expect_free, "a second lease was granted"
        assert not work_runs()
        time.sleep(2.0)
        assert not work_runs(), "work started after its GPU was leased to another"
    finally:
        lease.release()


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in argv and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("point", "free"),
    [("before-bind-1", True), ("after-bind-1", True), ("after-launch", False)],
)
def test_a_local_launcher_killed_at_any_step_leaves_one_holder(
    tmp_path: Path, point: str, free: bool
) -> None:
    marker = f"gpuroute-test-{os.urandom(4).hex()}"
    try:
        run_launcher("local", point, tmp_path, marker)
        check_one_holder(tmp_path, lambda: bool(processes_with(marker)), expect_free=free)
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def containers(engine: SimulatedGPUHost) -> Iterator[Callable[[str], list[object]]]:
    """The containers whose name starts with a prefix, and their removal afterwards."""
    client = engine.client()

    def named(prefix: str, *, running: bool = True) -> list[object]:
        return [
            c
            for c in client.containers.list(all=True)
            if c.name.startswith(prefix) and (not running or c.status == "running")
        ]

    try:
        yield named
    finally:
        for container in client.containers.list(all=True):
            container.remove(force=True)
        client.close()


@pytest.mark.engine
@pytest.mark.parametrize(
    ("point", "free"),
    [
        ("before-bind-1", True),  # created, not started, lease names the dead launcher
        ("after-bind-1", False),  # created, lease names it: kept while it exists
        ("before-bind-2", False),  # started; its init process not recorded yet
        ("after-bind-2", False),
        ("during-verify", False),
        ("after-launch", False),
    ],
)
def test_a_container_launcher_killed_at_any_step_leaves_one_holder(
    tmp_path: Path, containers: Callable[..., list[object]], point: str, free: bool
) -> None:
    marker = f"gpuroute-test-{os.urandom(4).hex()}"
    run_launcher("docker", point, tmp_path, marker, IMAGE)
    check_one_holder(tmp_path, lambda: bool(containers(marker)), expect_free=free)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("point", "free"),
    [
        ("before-bind-1", True),  # compose waits at the gate, and exits with the launcher
        ("after-bind-1", True),  # the same, its lease naming a client that never ran
        ("before-bind-2", False),  # compose runs the container; the lease names both
        ("after-bind-2", False),
        ("after-launch", False),
    ],
)
def test_a_compose_launcher_killed_at_any_step_leaves_one_holder(
    tmp_path: Path, containers: Callable[..., list[object]], point: str, free: bool
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yaml").write_text(
        textwrap.dedent(
            f"""\
            services:
              app:
                image: {IMAGE}
                network_mode: none
            """
        )
    )
    marker = f"gpuroute-test-{os.urandom(4).hex()}"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    try:
        run_launcher("compose", point, tmp_path / "leases", marker, str(project), tmpdir=tmpdir)
        check_one_holder(tmp_path / "leases", lambda: bool(containers(marker)), free)
        # The generated configuration the dead launcher left goes with the next launch.
        from gpuroute.backends.compose import remove_stale_workdirs

        left = sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("gpuroute-compose-"))
        assert sorted(remove_stale_workdirs(str(tmpdir))) == left
        assert not any(p.name.startswith("gpuroute-compose-") for p in tmpdir.iterdir())
    finally:
        for pid in processes_with(marker):  # a compose client still running
            os.kill(pid, signal.SIGKILL)


# -- an engine that no longer answers ------------------------------------------------------


@pytest.mark.engine
def test_stopping_a_crashed_engine_ends_every_process_it_ran() -> None:
    """After a crash the container runs on under its shim; stop() ends both."""
    engine = SimulatedGPUHost(H100).start()
    root = str(engine.root)
    try:
        client = engine.client()
        try:
            container = client.containers.run(IMAGE, UNTIL_STOPPED, detach=True, **NO_NET)
            container.reload()
        finally:
            client.close()
        init = Path(f"/proc/{container.attrs['State']['Pid']}")
        engine.crash()
        assert init.exists()
        assert engine_processes(root)  # its shim
    finally:
        engine.stop()
    assert wait_for(lambda: not init.exists() and not engine_processes(root), timeout=30)
    assert not Path(root).exists()


@pytest.mark.engine
def test_a_container_lease_outlives_its_engine_as_long_as_the_container(tmp_path: Path) -> None:
    """dockerd crashes: the container runs on (its shim outlives dockerd) and keeps its
    lease, judged by its init process; once that ends, the lease is reclaimed. A wait() on
    the dead engine raises a GpurouteError, and the lease is not given back meanwhile."""
    with SimulatedGPUHost(H100) as engine:
        leases = tmp_path / "leases"
        owner = Host(
            inventory=H100,
            context=CallerContext(),
            lease_dir=leases,
            policy=Policy(),
            docker_host=engine.base_url,
        )
        handle = owner.launch(
            DockerWork(command=("sleep", "60"), image=IMAGE, docker_kwargs=NO_NET),
            gpus="5",
            lease=True,
        )
        holder = handle.lease.holder
        assert holder.pid is not None, "the container's init process is recorded"
        engine.crash()
        with pytest.raises(GpurouteError):
            handle.wait(timeout=5)
        with pytest.raises(GpurouteError):
            handle.close()  # the work cannot be stopped through the engine
        with pytest.raises(DeviceLeasedError, match="container"):
            host(leases).acquire("5")  # the container still runs: held
        os.kill(holder.pid, signal.SIGKILL)
        assert wait_for(lambda: not Path(f"/proc/{holder.pid}").exists())
        again = host(leases).acquire("5")
        assert any("container" in n and "is gone" in n for n in again.notes)
        owner.close()


# -- private engines and `gpuroute run` clean up ----------------------------------------

OWNER = """
import sys, time
from gpuroute.testing import topology
from gpuroute.testing.engine import IMAGE, UNTIL_STOPPED, SimulatedGPUHost
engine = SimulatedGPUHost(topology("h100-sxm-8")).start()
client = engine.client()
container = client.containers.run(IMAGE, UNTIL_STOPPED, detach=True, network_mode="none")
container.reload()
dockerd = engine._process.pid
if sys.argv[1] == "crashed":
    engine.crash()  # dockerd killed at once: the container runs on under its shim
print(dockerd, container.attrs["State"]["Pid"], engine.root, flush=True)
time.sleep(300)
"""


def engine_processes(root: str) -> list[str]:
    """The command lines of the processes that name a path below ``root`` (dockerd,
    containerd and the containerd shims of the engine there). A container's processes end
    with its first one (the kernel ends a PID namespace with its init)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes()
                if f"{root}/".encode() in argv:
                    found.append(argv.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.engine
@pytest.mark.parametrize("state", ["running", "crashed"])
def test_a_killed_owner_takes_its_private_engine_down(state: str) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, state], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        dockerd, init, root = owner.stdout.readline().split()
        assert Path(f"/proc/{init}").exists()  # the container runs (after a crash too)
        owner.kill()  # SIGKILL: no handler of the owner runs
        owner.wait()
        gone = wait_for(
            lambda: not any(Path(f"/proc/{p}").exists() for p in (dockerd, init)), timeout=60
        )
        assert gone, "the engine or its container outlived the owner"
        # nor did any process of the engine's: containerd's shims run in sessions of their
        # own, and a container's processes outlive a killed shim
        assert wait_for(lambda: not engine_processes(root), timeout=30), engine_processes(root)
        assert wait_for(lambda: not Path(root).exists(), timeout=30)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_stale_engine_directories_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{ROOT_PREFIX}stale"
    stale.mkdir()
    (stale / "owner").write_text(f"{dead.pid} 1")
    live = tmp_path / f"{ROOT_PREFIX}live"
    live.mkdir()
    start = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    (live / "owner").write_text(f"{os.getpid()} {start}")
    other = tmp_path / f"{ROOT_PREFIX}starting"
    other.mkdir()  # no owner file yet: an engine being set up
    assert clean_stale_roots(str(tmp_path)) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def run_command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpuroute", "run", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_gpuroute_run_stops_its_work_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    snapshot = tmp_path / "h100.json"
    H100.save(snapshot)
    marker = f"gpuroute-test-{os.urandom(4).hex()}"
    leases = tmp_path / "leases"
    run = run_command(
        "--gpus", "any:1", "--lease", "--lease-dir", str(leases), "--inventory", str(snapshot),
        "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)",
        marker,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        assert run.stdout.readline().strip() == "up"
        run.send_signal(signum)
        if signum == signal.SIGINT:
            time.sleep(0.05)
            run.send_signal(signal.SIGINT)  # a second Ctrl-C while it stops
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 128 + signum, stderr
        assert "Traceback" not in stderr
        assert f"{signal.Signals(signum).name}: stopping the work" in stderr
        assert processes_with(marker) == []
        assert sorted(p.name for p in leases.iterdir()) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.engine
def test_gpuroute_run_removes_its_container_on_sigterm(
    engine: SimulatedGPUHost, tmp_path: Path
) -> None:
    snapshot = tmp_path / "h100.json"
    H100.save(snapshot)
    name = f"gpuroute-test-{os.urandom(4).hex()}"
    run = run_command(
        "--gpus", "3", "--image", IMAGE, "--network", "none", "--inventory", str(snapshot),
        "--", "sh", "-c", f"trap 'exit 143' TERM; echo {name}; sleep 60 & wait",
    )  # fmt: skip
    try:
        assert run.stdout is not None
        assert run.stdout.readline().strip() == name
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 128 + signal.SIGTERM, stderr
        client = engine.client()
        try:
            assert client.containers.list(all=True) == []
        finally:
            client.close()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
