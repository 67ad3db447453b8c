"""Finding the runners: each registered runner's ``RUNNER``, loaded when first asked for.

The names are listed once, in ``gpuroute.bench.runners.RunnerName``; a runner's module
describes the rest of it with a ``Runner``. Loading a runner imports its module (not its
tool: torch, docker and the like stay unimported until a benchmark runs).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuroute.bench.runners import RUNNER_NAMES, RunnerName
from gpuroute.errors import BenchConfigError

if TYPE_CHECKING:
    from gpuroute.bench.result import Result
    from gpuroute.bench.runners.common import Execution, Job, RunOptions

__all__ = ["Runner", "add_parallel_options", "all_runners", "load_runner"]


def _no_options(_parser: argparse.ArgumentParser) -> None:
    """A runner with nothing but the options every runner has."""


@dataclass(frozen=True)
class Runner:
    """A benchmark runner, as its module declares it in ``RUNNER``."""

    name: RunnerName
    """Its name: on the command line (``gpuroute bench NAME``), in campaign files, and as
    ``runner.name`` in its results."""
    tool: str
    """The tool it drives, for messages and help (``vLLM``)."""
    help: str
    """One line for ``gpuroute bench --help``."""
    job: Callable[..., Job]
    """Builds the ``Job`` from the workload's parameters (keyword arguments, ``execution``
    among them); its parameters are what a campaign's grid may name."""
    default_execution: Execution
    default_mode: str
    """The mode of a run that names none (``runner.mode`` of its result)."""
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_options
    """Adds the runner's own command-line options, each named after a parameter of ``job``
    (its ``dest``), to the parser that already has the common ones."""
    default_image: str | None = None
    """The image for ``execution="container"`` when none is named."""
    unprivileged_docker_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Docker arguments that replace what the job asks for on an engine that runs without
    privileges (the simulated host's), which cannot grant everything."""

    @property
    def parameters(self) -> frozenset[str]:
        """The workload parameters ``job`` takes (``execution`` is the run's, not these)."""
        return frozenset(inspect.signature(self.job).parameters) - {"execution"}

    def run(self, options: RunOptions | None = None, **workload: Any) -> Result:
        """One run: ``workload`` takes ``job``'s arguments."""
        from gpuroute.bench.runners.common import RunOptions, execute

        options = options or RunOptions(execution=self.default_execution)
        return execute(self.job(execution=options.execution, **workload), options)


def load_runner(name: str) -> Runner:
    """The registered runner called ``name``; a BenchConfigError lists them for any other."""
    if name not in RUNNER_NAMES:
        *rest, last = RUNNER_NAMES
        raise BenchConfigError(f"no runner named {name!r}; choose {', '.join(rest)} or {last}")
    runner = importlib.import_module(f"{__package__}.{name}").RUNNER
    assert isinstance(runner, Runner)
    return runner


def all_runners() -> list[Runner]:
    """Every registered runner, in the registry's order."""
    return [load_runner(name) for name in RUNNER_NAMES]


def add_parallel_options(parser: argparse.ArgumentParser, tool: str) -> None:
    """``--tp``, ``--pp`` and the tool's own arguments after ``--``: for a runner whose tool
    splits the model over the routed GPUs."""
    parser.add_argument(
        "--tp",
        dest="tensor_parallel_size",
        type=int,
        help="tensor parallel size (default: the routed GPUs over --pp)",
    )
    parser.add_argument("--pp", dest="pipeline_parallel_size", type=int, help="default 1")
    parser.add_argument(
        "extra_args", nargs="*", metavar="EXTRA", help=f"after --: more {tool} arguments"
    )
