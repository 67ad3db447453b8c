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
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from gpuroute.bench.runners import RUNNER_NAMES, RunnerName
from gpuroute.errors import BenchConfigError

if TYPE_CHECKING:
    from gpuroute.bench.result import Result
    from gpuroute.bench.runners.common import Execution, Job, RunOptions

__all__ = [
    "ALL_EXTRA",
    "PLOT_MODULES",
    "Runner",
    "add_parallel_options",
    "all_runners",
    "load_runner",
    "require_modules",
]

ALL_EXTRA = "bench"
"""The extra that brings every module a runner or a report below needs."""
PLOT_MODULES: Mapping[str, str] = {"matplotlib": "plots"}
"""What the campaign plots import, each with the extra that brings it."""


def require_modules(modules: Mapping[str, str], what: str) -> None:
    """Raise one BenchConfigError naming the extra to install when any of ``modules`` (a
    top-level module name to the extra that brings it) is not installed; imports nothing."""
    missing = [name for name in modules if not _installed(name)]
    if not missing:
        return
    extras = {modules[name] for name in missing}
    extra = extras.pop() if len(extras) == 1 else ALL_EXTRA
    names = " and ".join(missing) if len(missing) <= 2 else ", ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    raise BenchConfigError(
        f"{what} needs {names}, which {verb} not installed: pip install 'gpuroute[{extra}]'"
    )


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-imported module is not usable
        return False


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
    modules: tuple[str, ...] = ()
    """The Python modules its tool imports when it runs on this machine (``subprocess`` or
    ``inprocess``); a container brings its own."""
    extra: str | None = None
    """The gpuroute extra that installs ``modules`` (``pip install 'gpuroute[EXTRA]'``)."""

    @property
    def parameters(self) -> frozenset[str]:
        """The workload parameters ``job`` takes (``execution`` is the run's, not these)."""
        return frozenset(inspect.signature(self.job).parameters) - {"execution"}

    def needs(self, execution: Execution) -> dict[str, str]:
        """The modules a run with ``execution`` needs here, each with the extra bringing it."""
        if execution == "container" or self.extra is None:
            return {}
        return dict.fromkeys(self.modules, self.extra)

    def require(self, execution: Execution) -> None:
        """Raise a BenchConfigError naming the extra to install when a run with
        ``execution`` could not start here; imports nothing."""
        require_modules(self.needs(execution), f"the {self.name} runner (execution {execution!r})")

    def run(self, options: RunOptions | None = None, **workload: Any) -> Result:
        """One run: ``workload`` takes ``job``'s arguments."""
        from gpuroute.bench.runners.common import RunOptions, execute

        options = options or RunOptions(execution=self.default_execution)
        self.require(options.execution)
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
