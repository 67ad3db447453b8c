"""The ``gpuroute`` command's start: ``--help`` and a plan on a simulated host, against the
bare ``import gpuroute``.

Run: ``python benchmarks/bench_cli.py [ROUNDS]``. Prints the median wall time of each and
the ratios; target (issue: speed): at most 1.3 x ``python -c "import gpuroute"`` for the
commands that do not need the benchmark package.

Each command runs in a fresh interpreter as the installed ``gpuroute`` script runs it
(``from gpuroute.cli import main``), with bytecode caching on, its output discarded. The
commands are interleaved, one of each per round, so that a change in the machine's load
reaches them all alike; ``python -c "pass"`` is timed too, the interpreter's own start.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 1.3
ROUNDS = 40

_CLI = "import sys; from gpuroute.cli import main; sys.exit(main())"

COMMANDS: dict[str, list[str]] = {
    'python -c "pass"': ["-c", "pass"],
    'python -c "import gpuroute"': ["-c", "import gpuroute"],
    "gpuroute --help": ["-c", _CLI, "--help"],
    "gpuroute plan 3,1 --simulate h100-sxm-8": [
        "-c",
        _CLI,
        "plan",
        "3,1",
        "--simulate",
        "h100-sxm-8",
    ],
    "gpuroute bench --help (needs the benchmark package)": ["-c", _CLI, "bench", "--help"],
}
BASELINE = 'python -c "import gpuroute"'
NEEDS_BENCH = "gpuroute bench --help (needs the benchmark package)"


_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""Bytecode caching on, as for an installed package, even where the caller turned it off."""


def _once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=_ENV)
    return time.perf_counter() - start


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    for args in COMMANDS.values():  # warm: bytecode written, files in the page cache
        _once(args)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, args in COMMANDS.items():
            samples[name].append(_once(args))
    load = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians[BASELINE]
    ok = True
    for name, median in medians.items():
        ratio = median / base
        verdict = ""
        if name not in (BASELINE, 'python -c "pass"', NEEDS_BENCH):
            good = ratio <= TARGET_RATIO
            ok &= good
            verdict = f"  (target <= {TARGET_RATIO}: {'met' if good else 'MISSED'})"
        print(f"{name:<52} {median * 1000:7.1f} ms  {ratio:5.2f} x the bare import{verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
