"""Packaging promises: a light import, the public surface, and the core's import boundary."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gpuroute

PACKAGE = Path(gpuroute.__file__).parent
CORE_MAY_IMPORT = ("gpuroute.core", "gpuroute.errors", "pydantic", "__future__")


def test_import_gpuroute_loads_neither_docker_nor_pynvml_nor_pydantic() -> None:
    code = (
        "import sys, gpuroute; "
        "print(sorted(m for m in ('docker', 'pynvml', 'pydantic', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_bench_package_loads_nothing_heavy_until_a_name_is_used() -> None:
    """The transformers worker runs as ``python -m gpuroute.bench.transformers_worker``:
    its start imports this package, and should cost no pydantic."""
    code = (
        "import sys, gpuroute.bench; "
        "print(sorted(m for m in ('docker', 'pynvml', 'pydantic', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_gpuroute_ray_does_not_import_ray() -> None:
    """Ray is imported only when a Ray function runs."""
    code = "import sys, gpuroute.ray, gpuroute.ray.backend; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_names_are_exported_and_documented() -> None:
    for name in gpuroute.__all__:
        assert hasattr(gpuroute, name), name
    assert (PACKAGE / "py.typed").exists()


def _stdlib() -> set[str]:
    return set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "image" not in path.parts
}
"""Every module of the package, by name (the stand-in images' scripts are not modules)."""


def _imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, str, list[str]]]:
    """Every import statement, at every level (function bodies, ``if TYPE_CHECKING:``):
    the statement, the module it names and the names it takes from it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node, node.module, [a.name for a in node.names]


def _targets(module: str, names: list[str]) -> set[str]:
    """The package's modules an import loads: ``from a.b import c`` loads the module
    ``a.b.c`` if there is one, else ``a.b`` (packages above are left out: every import of a
    submodule runs them, and they are not what the import is for)."""
    found = {f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES}
    if len(found) < len(names) or not names:
        found.add(module)
    return {name for name in found if name in MODULES}


def test_the_core_imports_nothing_but_the_standard_library_and_itself() -> None:
    """The pure core must not import backends, NVML, docker or the I/O layer, at any level:
    not in a function body, not for type checking."""
    stdlib = _stdlib()
    for name, path in MODULES.items():
        if not name.startswith("gpuroute.core"):
            continue
        tree = ast.parse(path.read_text())
        for node, imported, _ in _imports(tree):
            ok = imported.split(".")[0] in stdlib or imported.startswith(CORE_MAY_IMPORT)
            assert ok, f"{path.name}:{node.lineno} imports {imported}"
        for node in tree.body:
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
                assert node.test.id == "TYPE_CHECKING"


def test_no_module_takes_a_private_name_from_another() -> None:
    """``_name`` is private to its module: no other module imports it or reaches for it
    through an imported module (``from gpuroute.x import _y``, ``gpuroute.x._y``)."""
    found = set()
    for name, path in MODULES.items():
        found |= _private_uses(name, ast.parse(path.read_text()))
    assert found == set()


def test_names_other_modules_import_are_public() -> None:
    """A name one module imports from another is in that module's ``__all__`` (where it has
    one): the names modules share are the public ones, listed where they live."""
    hidden = set()
    for name, path in MODULES.items():
        for node, imported, taken in _imports(ast.parse(path.read_text())):
            if imported not in MODULES or imported == name:
                continue
            exported = getattr(importlib.import_module(imported), "__all__", None)
            if exported is None:
                continue
            for item in taken:
                if item not in exported and f"{imported}.{item}" not in MODULES:
                    hidden.add(f"{name}:{node.lineno} takes {imported}.{item}")
    assert sorted(hidden) == []


def test_the_private_name_check_sees_every_form() -> None:
    code = """
import gpuroute.nvml
import gpuroute.host as h
from gpuroute import core
from gpuroute.leases import _own, acquire

def f():
    from gpuroute.nvml import _load
    return gpuroute.nvml._x, h._y, core.inventory._z, h.__name__, acquire._w
"""
    assert _private_uses("gpuroute.cli", ast.parse(code)) == {
        "gpuroute.cli imports gpuroute.leases._own",
        "gpuroute.cli imports gpuroute.nvml._load",
        "gpuroute.cli uses gpuroute.nvml._x",
        "gpuroute.cli uses gpuroute.host._y",
        "gpuroute.cli uses gpuroute.core.inventory._z",
    }
    assert _private_uses("gpuroute.nvml", ast.parse("from gpuroute.nvml import _x")) == set()


def _private_uses(name: str, tree: ast.AST) -> set[str]:
    found = set()
    modules: dict[str, str] = {}  # local name -> the gpuroute module it is bound to
    for node, imported, _ in _imports(tree):
        if not imported.startswith("gpuroute"):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
            continue
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            if f"{imported}.{alias.name}" in MODULES:
                modules[alias.asname or alias.name] = f"{imported}.{alias.name}"
            elif _private(alias.name) and imported != name:
                found.add(f"{name} imports {imported}.{alias.name}")
    for attribute in ast.walk(tree):
        if isinstance(attribute, ast.Attribute) and _private(attribute.attr):
            owner = _dotted(attribute.value, modules)
            if owner in MODULES and owner != name:
                found.add(f"{name} uses {owner}.{attribute.attr}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _dotted(node: ast.expr, modules: dict[str, str]) -> str | None:
    """The module an expression such as ``gpuroute.nvml`` or ``nvml`` stands for."""
    if isinstance(node, ast.Name):
        return modules.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, modules)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def test_no_module_is_shadowed_by_a_name_in_its_package() -> None:
    """``gpuroute.x`` must mean one thing: never a module and also a function or class of
    the same name that its package exports (``import gpuroute.x`` would then not give the
    module as ``gpuroute.x``)."""
    shadowed = set()
    for info in pkgutil.walk_packages(gpuroute.__path__, "gpuroute."):
        if info.name.endswith(".__main__"):
            continue  # importing it runs the command
        module = importlib.import_module(info.name)
        parent, _, child = info.name.rpartition(".")
        if getattr(sys.modules[parent], child, module) is not module:
            shadowed.add(info.name)
    assert shadowed == set()


LAYERS = (
    ("gpuroute.errors", "gpuroute.core", "gpuroute.records", "gpuroute.version", "gpuroute.term"),
    ("gpuroute.backends", "gpuroute.nvml", "gpuroute.limits", "gpuroute.kernel_log"),
    ("gpuroute.leases", "gpuroute.health"),
    ("gpuroute.host",),
    ("gpuroute.api", "gpuroute.testing", "gpuroute.ray"),
    ("gpuroute.doctor", "gpuroute.demo", "gpuroute.cli_options"),
    ("gpuroute.bench",),
    ("gpuroute.cli", "gpuroute.__main__", "gpuroute"),
)
"""The layers of docs/architecture.md, bottom first: a module imports only its own layer and
the layers below it, at every level (function bodies and ``TYPE_CHECKING`` included)."""


def _layer(module: str) -> int:
    best = -1, 0
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), rank))
    assert best[0] > 0, f"{module} is in no layer of docs/architecture.md"
    return best[1]


def test_every_module_imports_only_its_layer_and_those_below() -> None:
    upward = [
        f"{name} imports {target}"
        for name, targets in _import_graph().items()
        for target in targets
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_backends_know_nothing_of_leases_hosts_or_each_others_callers() -> None:
    """A backend module imports the core, the records, the errors and other backends only:
    adding one never touches the route, the leases or the host."""
    for name, targets in _import_graph().items():
        if name.startswith("gpuroute.backends"):
            outside = {
                t
                for t in targets
                if not t.startswith(("gpuroute.backends", "gpuroute.core"))
                and t not in ("gpuroute.errors", "gpuroute.records")
            }
            assert outside == set(), name


def test_the_testing_package_is_imported_only_where_documented() -> None:
    allowed = ("gpuroute.testing", "gpuroute.demo", "gpuroute.bench.simhost", "gpuroute.cli")
    for name, targets in _import_graph().items():
        if any(t.startswith("gpuroute.testing") for t in targets):
            assert name.startswith(allowed), name


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, imported, taken in _imports(ast.parse(path.read_text())):
            graph[name] |= _targets(imported, taken) - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_package_has_no_import_cycles() -> None:
    """Counting every import (in functions, under TYPE_CHECKING): no two modules need each
    other. The one exception stays inside the core, which loads its own snapshot schema
    lazily to keep pydantic off ``import gpuroute``."""
    cycles = [
        c for c in _cycles(_import_graph()) if not all(m.startswith("gpuroute.core") for m in c)
    ]
    assert cycles == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


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


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["--help"], "[]"),
        (["plan", "3,1", "--simulate", "h100-sxm-8"], "[]"),
        # ls shows each device's live state, read through the simulated host's (fake) NVML
        (["ls", "--simulate", "a100-mig-4"], "['pynvml']"),
    ],
)
def test_commands_that_need_no_benchmark_load_neither_it_nor_pydantic_docker_or_nvml(
    argv: list[str], loaded: str
) -> None:
    code = (
        "import sys\n"
        "from gpuroute.cli import main\n"
        "try:\n"
        "    status = main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "heavy = ('pydantic', 'docker', 'pynvml', 'gpuroute.bench')\n"
        "print(sorted({m.split('.')[0] if m.split('.')[0] != 'gpuroute' else m for m in "
        "sys.modules if m.startswith(heavy)}), status, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    assert out.stdout  # the command did its work
    assert out.stderr.splitlines()[-1] == f"{loaded} 0"


def test_the_bench_command_still_gets_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    from gpuroute.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["bench", "transformers", "--help"])
    assert exit.value.code == 0
    assert "--input-len" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "run an LLM benchmark on exactly the routed GPUs" in listing
    assert "run or report a benchmark campaign" in listing


def test_built_in_topologies_read_without_the_schema_are_what_the_schema_reads() -> None:
    from gpuroute.core.inventory import Inventory
    from gpuroute.testing import TOPOLOGIES, topology, topology_path

    for name in TOPOLOGIES:
        assert topology(name) == Inventory.load(topology_path(name)), name
        assert topology(name).to_dict() == Inventory.load(topology_path(name)).to_dict()
