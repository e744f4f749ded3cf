"""The package layout holds: no import circles between modules, one-way data flow
between packages, and the test/demo stand-ins off the daemon's import path."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "detectors", "alerts", "storage")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[_module_name(path)] = path
    return out


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
            yield from (n for c in child.orelse for n in _walk(c))
            continue
        yield from _walk(child)


def _imports(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """Project modules imported by ``path``, at the top or lazily inside functions.

    Imports under ``if TYPE_CHECKING:`` are annotations only and never run: skipped.
    """
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the longest known module that prefixes the target
            parts = t.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in known:
                    if cand != name:
                        yield cand
                    break


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # a package's __init__ is not an import of its submodules' code: skip package self-edges
    return {m: {t for t in _imports(p, m, known) if not m.startswith(t + ".")} for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circles():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(graph.get(n, ()))
    return seen


def test_data_flows_one_way_between_packages():
    graph = _graph()
    for mod, targets in graph.items():
        top = mod.split(".")[0]
        for t in targets:
            dest = t.split(".")[0]
            if top == "detectors":
                assert dest == "detectors", f"{mod} imports {t}: detectors is pure"
            if top == "storage":
                assert dest in ("storage", "detectors"), f"{mod} imports {t}: storage never imports {dest}"
            if top == "alerts":
                assert dest != "monitor", f"{mod} imports {t}: alerts never imports the daemon"


def test_the_daemon_never_imports_the_demo_or_the_stand_ins():
    graph = _graph()
    for start in ("monitor.service.daemon", "monitor.web.server", "monitor.cli.check"):
        bad = sorted(m for m in _reachable(graph, start) if m.startswith("monitor.demo"))
        assert not bad, f"{start} reaches {bad}"


def test_web_reaches_the_daemon_only_through_its_view():
    graph = _graph()
    for mod, targets in graph.items():
        if mod.startswith("monitor.web"):
            assert not any(t.startswith("monitor.service") for t in targets), (mod, targets)


def test_monitor_is_split_into_subpackages():
    flat = sorted(p.name for p in (ROOT / "monitor").glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= 4, f"monitor/ has grown flat again: {flat}"
