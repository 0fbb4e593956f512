"""The package layout is the architecture: check its import graph (pure ``ast``, no import).

Rooms: the core (``carphooks/*.py``: errors, config, log, runner, state), ``backends/``,
``runtime/`` (the hook path), ``setup/`` (render, install, check, devd) and ``cli/``.
Every import counts, also a lazy one inside a function or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "carphooks"

# room -> rooms it may import (besides itself)
ALLOWED = {
    "core": {"core"},
    "backends": {"core"},
    "runtime": {"core", "backends"},
    "setup": {"core", "backends"},
    "cli": {"core", "backends", "runtime", "setup"},
    "data": set(),
    "main": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str:
    parts = module.split(".")
    if module == "carphooks.__main__":
        return "main"
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in ("backends", "runtime", "setup",
                                                           "cli", "data")):
        return parts[1]
    return "core"


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The carphooks modules ``module`` imports (``from a import b``: a.b when a module)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names
                         if f"{target}.{a.name}" in known)
    return {m for m in found if m in known and m != module}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_package() -> None:
    edges = graph()
    assert "carphooks.runtime.actions" in edges
    assert "carphooks.runtime.engine" in edges["carphooks.runtime.actions"]
    assert "carphooks.setup.render" in edges["carphooks.setup.check"]


def test_no_import_cycles() -> None:
    assert cycle(graph()) is None


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("mod", sorted(modules()))
def test_each_room_imports_only_what_it_may(mod: str) -> None:
    edges = graph()
    bad = sorted(dep for dep in edges[mod] if room(dep) != room(mod)
                 and room(dep) not in ALLOWED[room(mod)])
    assert bad == [], f"{mod} ({room(mod)}) imports {bad}"


def test_the_library_never_imports_the_cli() -> None:
    edges = graph()
    seen = {m for m in edges if room(m) not in ("cli", "main")}
    todo = list(seen)
    while todo:  # everything the library reaches, transitively
        for dep in edges[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    assert not [m for m in seen if room(m) == "cli"]


def test_the_hook_entry_does_not_import_click_or_the_admin_cli() -> None:
    edges = graph()
    hook = PACKAGE / "cli" / "hooks.py"
    tree = ast.parse(hook.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "click" not in names
    assert "carphooks.cli.admin" not in edges["carphooks.cli.hooks"]
