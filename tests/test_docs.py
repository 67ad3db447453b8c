"""Every shell and Python example in README.md and docs/*.md runs, here on the simulated host.

A fenced block is an example by its language: ``console``, ``sh``, ``bash`` and ``shell``
blocks are shell examples, whose ``gpuroute`` commands (a line starting with ``gpuroute `` or
``$ gpuroute ``, after any ``NAME=value`` assignments) run one after the other as argv (no
shell) with ``--simulate TOPOLOGY``, in a fresh directory of the block's own; ``python`` blocks
run in a subprocess whose NVML is a FakeNVML of the topology, with a lease directory of their
own (a block that defines ``test_*`` functions runs under pytest, with gpuroute's plugin).
Other languages (output, YAML, JSON, text) are not examples. A block that needs a real GPU is
marked with ``<!-- needs: gpu -->`` on the line before it, and the text before it says so;
``<!-- simulate: NAME -->`` there chooses another topology than ``h100-sxm-8``. Examples that
start containers are marked ``engine``: they run on the simulated host's private engine.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import gpuroute

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("console", "sh", "bash", "shell")
DEFAULT_TOPOLOGY = "h100-sxm-8"
NEEDS_GPU = "<!-- needs: gpu -->"
THIS_CHECKOUT = str(Path(gpuroute.__file__).resolve().parent.parent)

RUNNABLE = {
    "README.md": 2,
    "bench.md": 1,
    "launch.md": 1,
    "leases.md": 2,
    "simulated-host.md": 4,
    "snapshots.md": 2,
}
"""How many examples each file runs, at least: a file whose count drops fails, so that no
example stops running unnoticed (marked as needing a GPU, or its fence changed)."""

_FENCE = re.compile(r"^```(\S*)\s*$")
_SIMULATE = re.compile(r"^<!-- simulate: ([\w-]+) -->$")
# Subcommands whose --simulate comes after two words (``inventory save``, ``bench vllm``,
# ``ray resources``).
_TWO_WORDS = ("inventory", "bench", "campaign", "ray")
_NO_SIMULATE = ("topologies", "--version", "--help", "-h")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    needs_gpu: bool
    topology: str

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def commands(self) -> list[list[str]]:
        """The ``gpuroute`` commands of a shell block, each as argv (assignments first)."""
        commands = []
        for line in _logical_lines(self.text):
            line = line.removeprefix("$ ").strip()
            argv = shlex.split(line, comments=True)
            words = [w for w in argv if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
            if words[:1] == ["gpuroute"]:
                commands.append(argv)
        return commands

    @property
    def runnable(self) -> bool:
        if self.needs_gpu:
            return False
        if self.language == "python":
            return True
        return self.language in SHELL and bool(self.commands)

    @property
    def needs_engine(self) -> bool:
        if self.language == "python":
            return any(word in self.text for word in ("SimulatedGPUHost", "image=", "compose_"))
        return any(_starts_containers(_words(argv)) for argv in self.commands)


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _words(argv: list[str]) -> list[str]:
    """The command's words after ``gpuroute``, without the leading assignments."""
    index = argv.index("gpuroute")
    return argv[index + 1 :]


def _starts_containers(words: list[str]) -> bool:
    if not words:
        return False
    if words[0] in ("doctor", "demo"):
        return True
    if words[0] == "run":
        return "--image" in words or "--compose-service" in words
    if words[0] == "bench":
        local = ("--execution=subprocess", "--execution=inprocess", "subprocess", "inprocess")
        return words[1:2] != ["transformers"] and not any(w in local for w in words)
    return False


def blocks(path: Path) -> list[Block]:
    found = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        end = index + 1
        while not lines[end].startswith("```"):
            end += 1
        before = [line.strip() for line in lines[max(index - 3, 0) : index] if line.strip()]
        topology = DEFAULT_TOPOLOGY
        for line in before:
            chosen = _SIMULATE.match(line)
            if chosen:
                topology = chosen.group(1)
        found.append(
            Block(
                path=path,
                line=index + 1,
                language=match.group(1),
                text="\n".join(lines[index + 1 : end]),
                needs_gpu=NEEDS_GPU in before,
                topology=topology,
            )
        )
        index = end + 1
    return found


ALL = [block for path in DOCS for block in blocks(path)]
RUN = [
    pytest.param(block, id=block.id, marks=[pytest.mark.engine] if block.needs_engine else [])
    for block in ALL
    if block.runnable
]


def _env(tmp: Path, topology: str) -> dict[str, str]:
    """A user's environment: no GPU variables of the caller's, this checkout's gpuroute."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CUDA_", "NVIDIA_", "GPUROUTE_", "DOCKER_"))
    }
    env["PYTHONPATH"] = THIS_CHECKOUT
    env["TMPDIR"] = str(tmp)
    env["GPUROUTE_DOCS_TOPOLOGY"] = topology
    return env


def _simulated(argv: list[str], topology: str) -> tuple[list[str], dict[str, str]]:
    """``argv`` as run here: ``python -m gpuroute``, with ``--simulate TOPOLOGY`` where the
    command takes it and names no inventory of its own; and its assignments."""
    index = argv.index("gpuroute")
    assignments = dict(word.split("=", 1) for word in argv[:index])
    words = argv[index + 1 :]
    own_inventory = "--inventory" in words or "GPUROUTE_INVENTORY" in assignments
    takes_it = bool(words) and words[0] not in _NO_SIMULATE and words[:2] != ["campaign", "report"]
    if takes_it and "--simulate" not in words and not own_inventory:
        at = 2 if words[0] in _TWO_WORDS else 1
        words = [*words[:at], "--simulate", topology, *words[at:]]
    return [sys.executable, "-m", "gpuroute", *words], assignments


def _short_tmp() -> Path:
    """A short directory: a private engine's socket path must fit in 108 bytes."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="gr-doc-", dir="/tmp"))


_PRELUDE = """\
import atexit, os, sys
import gpuroute.host, gpuroute.nvml
from gpuroute.testing.simhost import SimulatedHost

_sim = SimulatedHost(os.environ["GPUROUTE_DOCS_TOPOLOGY"])
atexit.register(_sim.close)
gpuroute.nvml.load_pynvml = lambda: _sim.nvml  # this process's NVML: the simulated host's
os.environ["GPUROUTE_LEASE_DIR"] = _sim.lease_dir
if os.environ.get("GPUROUTE_DOCS_ENGINE") == "1":
    os.environ["DOCKER_HOST"] = _sim.docker_host
gpuroute.host.close_default_hosts()
"""


@pytest.mark.parametrize("block", RUN)
def test_example_runs_on_the_simulated_host(block: Block) -> None:
    tmp = _short_tmp()
    try:
        env = _env(tmp, block.topology)
        work = tmp / "work"
        work.mkdir()
        if block.language == "python":
            result = _run_python(block, env, work)
            assert result.returncode == 0, f"{block.id}:\n{result.stdout}{result.stderr}"
        else:
            for argv in block.commands:
                command, assignments = _simulated(argv, block.topology)
                result = subprocess.run(
                    command,
                    cwd=work,
                    env={**env, **assignments},
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=300,
                )
                shown = shlex.join(argv)
                assert result.returncode == 0, (
                    f"{block.id}: {shown}\n{result.stdout}{result.stderr}"
                )
        # The simulated host's lease directory and private engine are gone with the example.
        left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("gpuroute-"))
        assert left == [], f"{block.id} left {left}: the simulated host was not cleaned up"
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _run_python(block: Block, env: dict[str, str], work: Path) -> subprocess.CompletedProcess[str]:
    if block.needs_engine:
        env = {**env, "GPUROUTE_DOCS_ENGINE": "1"}
    if re.search(r"^def test_", block.text, re.MULTILINE):
        (work / "test_example.py").write_text(block.text + "\n")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest"]
        argv += ["-p", "no:gpuroute", "-p", "gpuroute.testing.pytest_plugin", "test_example.py"]
        argv += ["--rootdir", str(work)]
    else:
        code = (
            _PRELUDE
            + f"exec(compile({block.text!r}, {block.id!r}, 'exec'), {{'__name__': '__main__'}})\n"
        )
        argv = [sys.executable, "-c", code]
    return subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, check=False, timeout=300
    )


def test_each_file_runs_its_examples() -> None:
    counts = {path.name: 0 for path in DOCS}
    for block in ALL:
        if block.runnable:
            counts[block.path.name] += 1
    dropped = {
        name: (counts[name], least) for name, least in RUNNABLE.items() if counts[name] < least
    }
    assert dropped == {}, "runnable examples (found, expected at least) per file"
    assert sum(counts.values()) >= sum(RUNNABLE.values())


def test_examples_that_need_a_gpu_say_so() -> None:
    """A block marked as needing a real GPU is one the text before it says needs one."""
    marked = [block for block in ALL if block.needs_gpu]
    assert marked, "no example is marked as needing a GPU: then check this test's marker"
    for block in marked:
        lines = block.path.read_text().splitlines()[: block.line - 1]
        text = " ".join(lines[-8:]).lower()
        assert re.search(r"(real|a) gpu|gpu host", text), f"{block.id}: say it needs a GPU"
        assert block.language in ("python", *SHELL), block.id


def test_a_gpu_marker_is_right_before_a_block() -> None:
    """A marker not followed by a fence (a typo, a moved block) would mark nothing."""
    for path in DOCS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip() == NEEDS_GPU:
                assert lines[number + 1].startswith("```"), f"{path.name}:{number + 1}"


def test_the_shell_commands_are_read_as_argv() -> None:
    block = Block(
        Path("x.md"),
        1,
        "console",
        textwrap.dedent(
            """\
            $ gpuroute plan 3,1 --target local \\
                --json   # a comment
            ./scripts/run
            GPUROUTE_INVENTORY=host.json gpuroute plan 3,1
            gpuroute health clear 3
            """
        ),
        needs_gpu=False,
        topology="a100-mig-4",
    )
    assert block.commands == [
        ["gpuroute", "plan", "3,1", "--target", "local", "--json"],
        ["GPUROUTE_INVENTORY=host.json", "gpuroute", "plan", "3,1"],
        ["gpuroute", "health", "clear", "3"],
    ]
    python = [sys.executable, "-m", "gpuroute"]
    assert _simulated(block.commands[0], "a100-mig-4") == (
        [*python, "plan", "--simulate", "a100-mig-4", "3,1", "--target", "local", "--json"],
        {},
    )
    assert _simulated(block.commands[1], "a100-mig-4") == (
        [*python, "plan", "3,1"],
        {"GPUROUTE_INVENTORY": "host.json"},
    )
    assert _simulated(block.commands[2], "a100-mig-4")[0] == [
        *python,
        *("health", "--simulate", "a100-mig-4", "clear", "3"),
    ]
