"""The private engine's watchdog: it stops the engine when the process that owns it is gone.

Run by ``SimulatedGPUHost`` as ``python -I -S watchdog.py FD DOCKERD_PID ROOT``, it reads the
pipe ``FD`` until end of file, which comes when the owner closes its end: when it stops the
engine itself, or when it dies in any way (SIGKILL included, which no handler sees). Then it
sends SIGTERM to dockerd (which stops its containers and its containerd), SIGKILL to what
is left of dockerd's process group after a while and to any process naming the engine's
directory (containerd's shims), and removes that directory.

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


def stop_engine(pid: int, root: str) -> None:
    """SIGTERM to dockerd, SIGKILL to its group after ``STOP_TIMEOUT_S``, then unmount and
    remove ``root``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # containerd and whatever else dockerd left
    if root:
        kill_named(root)
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def kill_named(root: str) -> list[int]:
    """SIGKILL every process whose command line names a path below ``root``: the
    containerd shims, which run in sessions of their own (so outside dockerd's process
    group) and outlive a killed dockerd and containerd, waiting for them forever."""
    prefix = root.rstrip("/").encode() + b"/"
    me = os.getpid()
    killed: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return killed
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if prefix in argv:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
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


def main(argv: list[str]) -> int:
    fd, pid, root = int(argv[1]), int(argv[2]), argv[3]
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
    if _alive(pid):
        stop_engine(pid, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
