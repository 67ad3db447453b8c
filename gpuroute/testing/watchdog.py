"""The private engine's watchdog: it stops the engine when the process that owns it is gone.

Run by ``SimulatedGPUHost`` as ``python -I -S watchdog.py FD DOCKERD_PID ROOT``, it reads the
pipe ``FD`` until end of file, which comes when the owner closes its end: when it stops (or
restarts) the engine itself, having written ``LET_GO`` first, or when it dies in any way
(SIGKILL included, which no handler sees). In the second case it sends SIGTERM to dockerd
if it still runs (which stops its containers and its containerd), SIGKILL to what is left of
dockerd's process group after a while and to every other process of the engine (containerd's
shims, a container's processes after a crash), and removes the engine's directory.

It imports nothing but the standard library (it runs with ``-I -S``), so that it works
whatever happens to the owner's environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

STOP_TIMEOUT_S = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def stop_engine(pid: int | None, root: str) -> None:
    """SIGTERM to dockerd ``pid`` (None: it is gone already), SIGKILL to its group after
    ``STOP_TIMEOUT_S``; then SIGKILL to every process of the engine still left (see
    ``kill_engine_processes``), and unmount and remove ``root``."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # containerd and whatever else dockerd left
    if root:
        kill_engine_processes(root)
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def names(pid: int, root: str) -> bool:
    """Whether process ``pid``'s command line names a path below ``root`` (dockerd's,
    containerd's and the containerd shims' do)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return (root.rstrip("/") + "/").encode() in f.read()
    except OSError:
        return False


def engine_pids(root: str) -> set[int]:
    """The processes of the engine in ``root``: those whose command line names a path below
    it, those in the cgroup of one of its containers, and every process below either (a
    container's processes are children of its shim until the shim dies)."""
    prefix = (root.rstrip("/") + "/").encode()
    try:
        ids = [i for i in os.listdir(os.path.join(root, "data", "containers")) if len(i) == 64]
    except OSError:
        ids = []
    parents: dict[int, int] = {}
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[pid] = int(f.read().rsplit(")", 1)[-1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read()
            with open(f"/proc/{pid}/cgroup") as f:
                groups = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if prefix in argv or any(i in groups for i in ids):
            found.add(pid)
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    found.discard(os.getpid())
    return found


def kill_engine_processes(root: str) -> list[int]:
    """SIGKILL every process of the engine in ``root`` still left (``engine_pids``): the
    containerd shims run in sessions of their own, outside dockerd's process group, and
    outlive a killed dockerd waiting for it forever; a container's processes outlive a
    killed shim."""
    killed: list[int] = []
    for pid in engine_pids(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def unmount_below(root: str) -> None:
    """Unmount anything mounted under ``root`` (deepest first)."""
    try:
        with open("/proc/self/mounts") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    prefix = root.rstrip("/") + "/"
    targets = [line.split()[1] for line in lines if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


LET_GO = b"let go"
"""What the owner writes before it closes the pipe when it stops (or restarts) the engine
itself: the watchdog then leaves everything as it is."""


def main(argv: list[str]) -> int:
    fd, pid, root = int(argv[1]), int(argv[2]), argv[3]
    said = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 4096):
            said += chunk
    if said != LET_GO:  # the owner is gone, whatever dockerd's state (it may have crashed)
        stop_engine(pid if _alive(pid) and names(pid, root) else None, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
