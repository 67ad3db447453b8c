"""The runner registry: every runner listed is found, whole, by the command line, campaigns
and the result schema alike."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

import gpuroute.bench
from gpuroute.bench.result import RunnerInfo
from gpuroute.bench.runners import RUNNER_NAMES
from gpuroute.bench.runners.registry import all_runners, load_runner
from gpuroute.cli import _parser
from gpuroute.errors import BenchConfigError


def test_every_listed_runner_is_its_modules_own() -> None:
    assert [r.name for r in all_runners()] == list(RUNNER_NAMES)
    for runner in all_runners():
        assert runner.default_execution in ("inprocess", "subprocess", "container")
        assert runner.parameters, runner.name
        assert callable(getattr(gpuroute.bench, f"run_{runner.name}"))


def test_an_unknown_runner_is_refused_with_the_list() -> None:
    with pytest.raises(BenchConfigError, match="no runner named 'common'; choose transformers"):
        load_runner("common")
    with pytest.raises(AttributeError):
        gpuroute.bench.run_common  # noqa: B018 - the attribute is the test


def test_every_runner_option_names_a_parameter_of_its_job() -> None:
    """An option the job does not take would be dropped without a word."""
    common = {"gpus", "execution", "image", "output", "workdir", "inventory", "simulate"}
    common |= {"lease", "lease_dir", "timeout", "energy_interval", "idle_baseline"}
    common |= {"network", "verify", "label", "help"}
    sub = next(a for a in _parser("bench")._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    runners = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    assert list(runners.choices) == list(RUNNER_NAMES)
    for name, parser in runners.choices.items():
        dests = {a.dest for a in parser._actions} - common
        assert dests <= load_runner(name).parameters, name


def test_the_result_schema_takes_exactly_the_listed_runners() -> None:
    fields = {"mode": "m", "execution": "subprocess", "tool": "t", "argv": []}
    for name in RUNNER_NAMES:
        assert RunnerInfo.model_validate({"name": name, **fields}).name == name
    with pytest.raises(ValidationError):
        RunnerInfo.model_validate({"name": "tgi", **fields})
