"""Every example runs as a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpuroute.testing import topology_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_plan_a_request_runs_on_a_snapshot() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "plan_a_request.py"), "3,1"],
        capture_output=True,
        text=True,
        env={"GPUROUTE_INVENTORY": topology_path("h100-sxm-8")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "'CUDA_VISIBLE_DEVICES': '1,0'" in result.stdout
    assert "cuda:0 in the container is host GPU 3" in result.stdout
