"""The house's shape: two wings and a corridor, small rooms, no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "inferserve"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every inferserve module ``name`` imports, at any depth of its code,
    with the packages a submodule import runs on the way."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                prefix = ".".join(parts[:end])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    found.add(prefix)
    return found


def test_importing_the_front_end_loads_no_torch_and_no_worker_code() -> None:
    code = (
        "import sys, inferserve.http, inferserve.__main__\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
        " or m.startswith(('inferserve.model', 'inferserve.worker'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == ""


def test_the_front_end_wing_never_imports_the_worker_wing() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith(("inferserve.frontend", "inferserve.http", "inferserve.common", "inferserve.ipc")):
            wrong = {m for m in _imports(name, path, modules)
                     if m.startswith(("inferserve.model", "inferserve.worker"))}
            assert not wrong, f"{name} imports {wrong}"
        if name.startswith(("inferserve.model", "inferserve.worker", "inferserve.common", "inferserve.ipc")):
            wrong = {m for m in _imports(name, path, modules)
                     if m.startswith(("inferserve.frontend", "inferserve.http"))}
            assert not wrong, f"{name} imports {wrong}"


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        for target in graph[name]:
            assert target not in stack, "import cycle: " + " -> ".join(stack[stack.index(target):] + [target])
            if target not in done:
                visit(target, stack + [target])
        done.add(name)

    for name in graph:
        visit(name, [name])


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO_ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long
