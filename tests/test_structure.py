"""The package's structure: no import cycles, and no family knowledge outside backbones/."""

from __future__ import annotations

import ast
from pathlib import Path

import unitune
from unitune.backbones import FAMILIES

SRC = Path(unitune.__file__).parent


def _modname(p: Path, src: Path) -> str:
    parts = list(p.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in the file (module level, inside
    functions, and under TYPE_CHECKING: a type-only back-reference is still a knot)."""
    mods = {_modname(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in mods and n != m}
        graph[m] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_type_checking_imports(tmp_path):
    pkg = tmp_path / "unitune"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    assert find_cycles(import_graph(pkg)) == [["unitune.a", "unitune.b", "unitune.a"]]


def test_no_family_checks_outside_backbones():
    """Only backbones/ may ask which family a model is: elsewhere no string literal names a
    family, no code reads ``.family`` except to record it, and nothing isinstance-checks a
    backbone class."""
    names = {f.name for f in FAMILIES} | {f.pipelines[0] for f in FAMILIES}
    found = []
    for p in sorted(SRC.rglob("*.py")):
        if "backbones" in p.parts:
            continue
        tree = ast.parse(p.read_text(), str(p))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{p.name}:{node.lineno}: literal {node.value!r}")
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "family" for s in sides):
                    found.append(f"{p.name}:{node.lineno}: compares .family")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                if "Backbone" in ast.unparse(node):
                    found.append(f"{p.name}:{node.lineno}: isinstance on a backbone")
    assert not found, found
