"""The import graph: dependencies point one way (cellblock -> api -> worker ->
sandbox), and no module imports, even lazily inside a function, one that
imports it back. Read from the source (ast), not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cellblock", "api", "worker", "sandbox")  # each may import those after it


def _modules() -> dict[str, Path]:
    found = {}
    for package in (*PACKAGES, "profiles"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, at its top or in a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                out.add(child if child in modules else module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    cycles = set()

    def visit(node: str, path: list[str]) -> None:
        for dep in graph[node]:
            if dep in path:
                cycles.add(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in seen:
                seen.add(dep)
                visit(dep, [*path, dep])

    for start in graph:
        seen = {start}
        visit(start, [start])
    assert not cycles, sorted(cycles)


def test_dependencies_point_one_way() -> None:
    wrong = []
    for name, deps in _graph().items():
        layer = name.split(".")[0]
        if layer not in PACKAGES:
            continue
        allowed = set(PACKAGES[PACKAGES.index(layer) :]) | {"profiles"}
        wrong += [f"{name} imports {dep}" for dep in deps if dep.split(".")[0] not in allowed]
    assert not wrong, wrong


def test_every_module_is_in_the_architecture_map() -> None:
    # docs/architecture.md says where each behaviour lives: a new module is added there.
    text = (REPO / "docs" / "architecture.md").read_text()
    tables = text[text.index("## Where each behaviour lives") :]
    missing = [
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path.name != "__main__.py"
        and f"`{path.parent.relative_to(REPO)}/`" in tables
        and f"| `{path.name}` |" not in tables.split(f"`{path.parent.relative_to(REPO)}/`", 1)[1]
    ]
    packages = {
        str(p.parent.relative_to(REPO)) for pk in PACKAGES for p in (REPO / pk).rglob("*.py")
    }
    unmapped = sorted(p for p in packages if f"`{p}/`" not in tables)
    assert not missing and not unmapped, (missing, unmapped)
