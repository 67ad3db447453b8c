"""The local backend: a process on this host (the program itself, or torchrun with one worker
per planned GPU). Its environment, its handle, and the liveness of a process holder.

Also the process machinery that the compose backend reuses: ``compose run`` is a child
process of ours too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import IO, Any, ClassVar

from gpuroute.backends.base import Backend, Bind, Launch, Work, unbound
from gpuroute.backends.env import merge_env
from gpuroute.core.plan import RoutingPlan
from gpuroute.errors import LaunchError, LaunchTimeout
from gpuroute.records import Holder

__all__ = [
    "LocalBackend",
    "LocalLaunch",
    "LocalWork",
    "ProcessLaunch",
    "process_alive",
    "process_env",
    "process_holder",
    "process_start_time",
    "process_state",
    "process_tree",
    "torchrun_command",
]


def process_env(
    plan: RoutingPlan, base: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for ``subprocess.Popen(..., env=...)``: ``base`` (usually
    ``os.environ``) less its own CUDA device selection, plus ``extra``, plus the plan's local
    view. Raises ContextError if the caller's context forbids a local process this plan."""
    local = plan.local_env  # raises ContextError when refused
    inherited = {k: v for k, v in base.items() if k not in local}
    inherited.pop("NVIDIA_VISIBLE_DEVICES", None)
    return {**inherited, **merge_env(extra, local)}


def torchrun_command(
    plan: RoutingPlan, command: Sequence[str], *, python: str = sys.executable
) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N COMMAND``: one
    worker per planned GPU; worker ``LOCAL_RANK`` i uses ``cuda:i``, the i-th GPU requested."""
    if not plan.devices:
        raise LaunchError("torchrun needs at least one GPU in the plan (gpus=... is empty)")
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(len(plan.devices)),
        *command,
    ]


# -- processes as lease holders -----------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks since boot), from
    ``/proc/<pid>/stat``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[0], int(fields[19])


def process_state(pid: int) -> str | None:
    """A process's state letter (``R``, ``S``, ``Z`` for a zombie, ...); None if none."""
    found = _stat(pid)
    return found[0] if found is not None else None


def process_start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    found = _stat(pid)
    return found[1] if found is not None else None


@cache
def _start_time_of_this(pid: int) -> int | None:
    return process_start_time(pid)


def process_holder(pid: int | None = None) -> Holder:
    """The holder for process ``pid`` (default: this one), with its start time."""
    if pid is None or pid == os.getpid():
        pid = os.getpid()
        return Holder.process(pid, _start_time_of_this(pid))  # constant for this process
    return Holder.process(pid, process_start_time(pid))


def process_alive(holder: Holder) -> bool | None:
    """Whether the process that stands for a holder lives: False once its pid is gone, is a
    zombie (it has exited; only its parent has not collected it), or belongs to a process
    started at another time; True for a live process, also another user's. None for a
    holder without a process."""
    pid = holder.pid
    if pid is None:
        return None
    found = _stat(pid)
    if found is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's live process, where /proc hides it
        return True  # no /proc: the pid answers
    state, start = found
    if state in ("Z", "X"):
        return False
    return not (holder.started is not None and start != holder.started)


def process_tree(root: int) -> set[int]:
    """``root`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# -- the handle ---------------------------------------------------------------------------


GATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "go = os.read(fd, 1) == b'1'\n"
    "os.close(fd)\n"
    "if not go:\n"
    "    sys.exit(125)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
"""Runs before gated work: it waits for the launcher's go (written once the lease names
this very process) and then becomes the work (``exec``: same pid, same start time). If the
launcher dies first, the pipe closes and the work never starts."""


def _check_executable(argv: list[str], env: Mapping[str, str], cwd: str | None) -> None:
    """The error Popen would give for a program that cannot be run, before the gate hides it."""
    name = argv[0]
    if "/" in name:
        path = os.path.join(cwd or os.getcwd(), name)
        found = path if os.access(path, os.X_OK) and os.path.isfile(path) else None
    else:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise LaunchError(f"cannot start {name!r}: No such file or directory (or not executable)")


class ProcessLaunch(Launch):
    """Work run by a child process of ours (the program itself, or ``compose run``).

    ``gated``: the child waits, before it becomes the work, until ``open_gate()``: so that a
    lease can name the child's pid before the work can run (see ``GATE``)."""

    def __init__(
        self,
        plan: RoutingPlan,
        argv: list[str],
        env: dict[str, str],
        *,
        cwd: str | os.PathLike[str] | None,
        stream: bool,
        notes: Iterable[str] = (),
        gated: bool = False,
    ) -> None:
        super().__init__(plan, notes)
        self.argv = argv
        self._gate: int | None = None
        # The work's output, kept for logs() as long as the handle lives.
        self._log: IO[bytes] | None = None if stream else tempfile.TemporaryFile()  # noqa: SIM115
        command: list[str] = argv
        passed: tuple[int, ...] = ()
        reader = -1
        if gated and sys.executable:
            _check_executable(argv, env, os.fspath(cwd) if cwd is not None else None)
            reader, self._gate = os.pipe()
            command = [sys.executable, "-I", "-S", "-c", GATE, str(reader), *argv]
            passed = (reader,)
        try:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL if self._log else None,
                stdout=self._log,
                stderr=subprocess.STDOUT if self._log else None,
                start_new_session=True,  # its own process group, stopped as a whole
                pass_fds=passed,
            )
        except OSError as exc:
            self._close_log()
            self.shut_gate()
            raise LaunchError(f"cannot start {argv[0]!r}: {exc.strerror}") from exc
        finally:
            if reader >= 0:
                os.close(reader)

    def open_gate(self) -> None:
        """Let gated work start (it waits until then)."""
        if self._gate is not None:
            try:
                os.write(self._gate, b"1")
            finally:
                self.shut_gate()

    def shut_gate(self) -> None:
        """Close the gate without letting the work start: it exits (status 125)."""
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LaunchTimeout(f"{self.kind} work {self.id} still runs after {timeout}s") from exc

    def logs(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def pids(self) -> set[int]:
        return process_tree(self.process.pid)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def kill_group(self, timeout: float) -> None:
        """SIGTERM to the whole process group (children the leader left behind included),
        then SIGKILL to whatever of it is left after ``timeout`` seconds."""
        import tenacity

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

        def alive() -> bool:
            self.process.poll()  # reap the leader, so that only live members count
            return self._group_alive()

        ended = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_fixed(0.02),
            retry=tenacity.retry_if_result(bool),
            retry_error_callback=lambda state: True,
        )
        if ended(alive):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()

    def cleanup(self) -> None:
        self.shut_gate()
        self._close_log()


class LocalLaunch(ProcessLaunch):
    """A process on this host."""

    kind = "local"

    @property
    def id(self) -> str:
        return str(self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        self.kill_group(timeout)


# -- the backend --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalWork(Work):
    """A process on this host: ``command`` (under torchrun with ``torchrun=True``), in
    ``cwd``, its output captured for ``logs()`` unless ``stream``."""

    backend: ClassVar[str] = "local"
    cwd: str | os.PathLike[str] | None = None
    stream: bool = False
    torchrun: bool = False


class LocalBackend(Backend):
    name = "local"
    target = "local"

    def start(self, plan: RoutingPlan, work: Any, bind: Bind) -> Launch:
        assert isinstance(work, LocalWork)
        argv = torchrun_command(plan, work.command) if work.torchrun else list(work.command)
        environment = process_env(plan, self.connection.env(), work.env)
        gated = bind is not unbound
        handle = LocalLaunch(plan, argv, environment, cwd=work.cwd, stream=work.stream, gated=gated)
        try:
            # The lease names the child before the work can run: a launcher killed at any
            # moment leaves either no work, or work that its lease names.
            bind(process_holder(handle.process.pid))
            handle.open_gate()
        except BaseException:
            handle.shut_gate()
            handle.close()
            raise
        return handle

    def alive(self, holder: Holder) -> bool | None:
        return process_alive(holder)
