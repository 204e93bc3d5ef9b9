"""The package's shape: layers import downward only (no import cycle in python/lanner), the
server never calls the native core, and a module past ~500 lines says at its top why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "python"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((ROOT / "lanner").rglob("*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lanner modules `name` imports (relative imports resolved, `from m import x` counted as
    m.x where that is a module), parents and children of itself excluded."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name
            and not m.startswith(name + ".") and not name.startswith(m + ".")}


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str]:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v):
                found = visit(v)
                if found:
                    return found
        state[u] = 2
        stack.pop()
        return []

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m)
            if found:
                return found
    return []


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    assert len(graph) > 30
    assert _find_cycle(graph) == [], "import cycle: " + " -> ".join(_find_cycle(graph))


@pytest.mark.parametrize("layer,forbidden", [
    ("lanner.server", ("lanner._core",)),            # the server talks to the engine's records
    ("lanner.text", ("lanner._core", "lanner.engine", "lanner.server")),
    ("lanner.engine", ("lanner.server",)),
])
def test_layers_import_downward(layer, forbidden):
    mods = _modules()
    for m, p in mods.items():
        if m == layer or m.startswith(layer + "."):
            bad = {i for i in _imports(m, p, set(mods) | {"lanner._core"})
                   if any(i == f or i.startswith(f + ".") for f in forbidden)}
            assert not bad, f"{m} imports {sorted(bad)}"


def test_long_modules_say_why():
    for m, p in _modules().items():
        text = p.read_text()
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "lines" in doc.lower(), f"{m} has {text.count(chr(10))} lines and no reason at its top"
