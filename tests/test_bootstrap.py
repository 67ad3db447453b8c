"""The set-up scripts' Debian packages: python3.X-venv where the interpreter lacks ensurepip.

``ensure_venv_support`` (scripts/_packages.sh) runs in bash against a stand-in interpreter
(this Python, with ``ensurepip`` hidden as on a Debian machine without python3.X-venv), and
stand-ins for ``id`` (root or not) and ``apt-get`` (which records its arguments and, on
install, brings ensurepip back).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES_SH = Path(__file__).resolve().parents[1] / "scripts" / "_packages.sh"
PACKAGE = f"python3.{sys.version_info[1]}-venv"
"""What Debian calls the package that brings this interpreter's ensurepip."""


@dataclass
class Machine:
    """Stand-ins for the interpreter, ``id`` and ``apt-get``, in a directory of their own."""

    bin: Path
    python: Path
    apt_log: Path
    blocker: Path

    def run(self, *commands: str) -> subprocess.CompletedProcess[str]:
        script = f'source "{PACKAGES_SH}"\n' + "\n".join(commands)
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, check=False
        )

    @property
    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _machine(
    tmp_path: Path, *, uid: int, ensurepip: bool, apt_get: bool = True, installs: bool = True
) -> Machine:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    blocker = hidden / "ensurepip.py"
    if not ensurepip:  # found before the standard library's, as if it were not installed
        blocker.write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    python = bin_dir / "python3"
    _executable(
        python,
        f'#!/bin/sh\nPYTHONPATH="{hidden}" PYTHONDONTWRITEBYTECODE=1 '
        f'exec "{sys.executable}" "$@"\n',
    )
    _executable(bin_dir / "id", f'#!/bin/sh\n[ "$1" = -u ] && echo {uid}\n')
    apt_log = tmp_path / "apt-get.log"
    if apt_get:
        bring_back = f'rm -f "{blocker}"' if installs else "true"
        _executable(
            bin_dir / "apt-get",
            f'#!/bin/sh\necho "$*" >> "{apt_log}"\n[ "$1" = install ] && {bring_back}\nexit 0\n',
        )
    return Machine(bin_dir, python, apt_log, blocker)


def test_the_package_is_python3_x_venv_for_the_interpreter(tmp_path: Path) -> None:
    machine = _machine(tmp_path, uid=0, ensurepip=True)
    out = machine.run(f'venv_package "{machine.python}"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == PACKAGE


@pytest.mark.parametrize("uid", [0, 1000])
def test_an_interpreter_with_ensurepip_needs_nothing(tmp_path: Path, uid: int) -> None:
    machine = _machine(tmp_path, uid=uid, ensurepip=True)
    out = machine.run(f'ensure_venv_support "{machine.python}"')
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert machine.apt_calls == []


def test_root_with_apt_get_installs_the_package_in_one_line(tmp_path: Path) -> None:
    machine = _machine(tmp_path, uid=0, ensurepip=False)
    assert machine.run(f'"{machine.python}" -c "import ensurepip"').returncode != 0
    out = machine.run(f'ensure_venv_support "{machine.python}"', 'echo "status $?"')
    assert out.stdout.strip() == "status 0", out.stderr
    assert machine.apt_calls == [f"install -y -q {PACKAGE}"]
    assert out.stderr.count("\n") == 1
    assert PACKAGE in out.stderr
    assert "ensurepip" in out.stderr


def test_without_root_one_line_names_the_package_and_fails(tmp_path: Path) -> None:
    machine = _machine(tmp_path, uid=1000, ensurepip=False)
    out = machine.run(f'ensure_venv_support "{machine.python}"', 'echo "status $?"')
    assert out.stdout.strip() == "status 1"
    assert machine.apt_calls == []
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: ")
    assert f"apt-get install {PACKAGE}" in out.stderr
    assert "PYTHON" in out.stderr


def test_without_apt_get_one_line_names_the_package_and_fails(tmp_path: Path) -> None:
    machine = _machine(tmp_path, uid=0, ensurepip=False, apt_get=False)
    out = machine.run(
        f'PATH="{machine.bin}"',  # the stand-ins alone: no apt-get anywhere
        f'ensure_venv_support "{machine.python}"',
        'echo "status $?"',
    )
    assert out.stdout.strip() == "status 1"
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: ")
    assert PACKAGE in out.stderr


def test_an_install_that_does_not_bring_ensurepip_fails_clearly(tmp_path: Path) -> None:
    machine = _machine(tmp_path, uid=0, ensurepip=False, installs=False)
    out = machine.run(f'ensure_venv_support "{machine.python}"', 'echo "status $?"')
    assert out.stdout.strip() == "status 1"
    assert machine.apt_calls == [f"install -y -q {PACKAGE}"]
    lines = out.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"Installing {PACKAGE}")
    assert lines[1].startswith("error: ")
    assert "PYTHON" in lines[1]
