"""Packaging promises: a light import, the public surface, and the core's import boundary."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gpuroute

PACKAGE = Path(gpuroute.__file__).parent
CORE_MAY_IMPORT = ("gpuroute.core", "gpuroute.errors", "pydantic", "__future__")


def test_import_gpuroute_loads_neither_docker_nor_pynvml_nor_pydantic() -> None:
    code = (
        "import sys, gpuroute; "
        "print(sorted(m for m in ('docker', 'pynvml', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported_and_documented() -> None:
    for name in gpuroute.__all__:
        assert hasattr(gpuroute, name), name
    assert (PACKAGE / "py.typed").exists()


def _stdlib() -> set[str]:
    return set(sys.stdlib_module_names)


def test_the_core_imports_nothing_but_the_standard_library_and_itself() -> None:
    """The pure core must not import adapters, NVML, docker or the I/O layer at module level."""
    stdlib = _stdlib()
    for path in sorted((PACKAGE / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                ok = name.split(".")[0] in stdlib or name.startswith(CORE_MAY_IMPORT)
                assert ok, f"{path.name} imports {name}"
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
                assert node.test.id == "TYPE_CHECKING"


def test_the_core_never_reads_the_environment() -> None:
    for path in (PACKAGE / "core").glob("*.py"):
        text = path.read_text()
        assert "os.environ" not in text, path.name
        assert "getenv" not in text, path.name


def test_import_gpuroute_bench_loads_neither_torch_nor_docker_nor_pynvml() -> None:
    code = (
        "import sys, gpuroute.bench, gpuroute.bench.campaign, gpuroute.bench.cli; "
        "print(sorted(m for m in ('docker', 'pynvml', 'torch', 'transformers', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_transformers_worker_needs_nothing_of_gpuroute() -> None:
    """It is copied into images that have torch and transformers but not gpuroute."""
    tree = ast.parse((PACKAGE / "bench" / "transformers_worker.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("gpuroute") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None
            assert not node.module.startswith("gpuroute"), node.module
