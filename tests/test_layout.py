"""The layout stays true: engine/ has no import cycles (lazy imports included), never imports
nodes/ or app/, no module takes another's private name, every wing says what it is, and the
command line starts without Qt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
CORE = {
    "errors",
    "spec",
    "fields",
    "events",
    "control",
    "paths",
    "settings",
    "secrets",
    "hardware",
    "rundir",
    "formatting",
    "sweep_spec",  # the Sweep node's part of a job spec (JobSpec.sweep)
}
WINGS = {
    "data",
    "models",
    "plan",
    "training",
    "export",
    "chat",
    "eval",
    "supervisor",
    "store",
    "cluster",
    "setup",
    "sweep",  # Optuna studies of the Sweep nodes
    "recipes",  # the data recipe steps (Generate, Filter, Deduplicate, Mix, Split)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ENGINE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import statement, at any depth of the file."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full, None) if full in known else (node.module, alias.name))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = engine_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, _ in imports_of(path, known):
            if module in known and module != name and not name.startswith(module + "."):
                targets.add(module)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_has_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_engine_never_imports_nodes_or_app():
    modules = engine_modules()
    upward = [
        (name, module)
        for name, path in modules.items()
        for module, _ in imports_of(path, set(modules))
        if module.split(".")[0] in ("app", "nodes", "PySide6", "NodeGraphQt", "pyqtgraph")
    ]
    assert upward == []


def test_no_module_imports_a_private_name_of_another():
    roots = [ROOT / "engine", ROOT / "nodes", ROOT / "app"]
    paths = [p for root in roots for p in root.rglob("*.py")]
    known = {module_name(p) for p in paths}
    private = [
        (module_name(path), f"{module}.{name}")
        for path in paths
        for module, name in imports_of(path, known)
        if name and name.startswith("_") and not name.startswith("__") and module in known
    ]
    assert private == []


def test_engine_top_holds_only_the_core_and_the_wings():
    top_modules = {p.stem for p in ENGINE.glob("*.py")} - {"__init__", "__main__"}
    wings = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file()}
    assert top_modules <= CORE, top_modules - CORE
    assert wings == WINGS
    for wing in wings:
        doc = ast.get_docstring(ast.parse((ENGINE / wing / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), (
            f"engine/{wing}/__init__.py must say what it may import"
        )


def test_process_entry_points_exist_and_run_as_main():
    from engine.rundir import ENTRY_POINTS

    for name, module in ENTRY_POINTS.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{name}: {path} is missing"
        assert '__name__ == "__main__"' in path.read_text(encoding="utf-8"), name


def test_cli_starts_without_qt_or_torch():
    """(The UI without torch: tests/test_app_canvas.py::test_ui_process_never_imports_torch.)"""
    cli = (
        "import sys; from app.main import main; code = main(['--version']); "
        "qt = [m for m in sys.modules if m.startswith(('PySide6', 'NodeGraphQt', 'pyqtgraph'))]; "
        "assert not qt, qt; assert 'torch' not in sys.modules"
    )
    out = subprocess.run(
        [sys.executable, "-c", cli], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("tunegraph ")


def _missing_docs_and_hints(path: Path) -> list[str]:
    """What one engine module's public functions and classes lack, as `file:line name: what`."""
    where = path.relative_to(ROOT).as_posix()
    missing = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            missing.append(f"{where}:{node.lineno} {node.name}: no docstring")
        if isinstance(node, ast.ClassDef):
            continue
        args = node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        bare = [p.arg for p in params if p is not None and p.annotation is None]
        if node.returns is None:
            bare.append("return")
        if bare:
            missing.append(f"{where}:{node.lineno} {node.name}: no hint on {', '.join(bare)}")
    return missing


def test_public_engine_functions_have_docstrings_and_hints():
    missing = [
        line for path in sorted(ENGINE.rglob("*.py")) for line in _missing_docs_and_hints(path)
    ]
    assert not missing, "\n".join(missing)


def test_the_console_script_is_app_main():
    """`tunegraph GRAPH` opens the window (app.main), `tunegraph COMMAND` is the command line."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tunegraph": "app.main:main"}
    script = Path(sys.executable).with_name("tunegraph")
    if script.is_file():  # the installed console script of this environment
        out = subprocess.run(
            [str(script), "no-such-graph.json"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2 and "no such graph file or command" in out.stderr
