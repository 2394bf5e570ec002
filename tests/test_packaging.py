"""The package declares what it imports: a plain `pip install .` must run everything it ships."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import pkgutil
import re
import sys
from pathlib import Path

import unitune

SRC = Path(unitune.__file__).parent


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _runtime_requirements() -> set[str]:
    """Distribution names of project.dependencies (extras left out)."""
    out = set()
    for req in md.requires("unitune") or []:
        if "extra ==" in req:
            continue
        out.add(_norm(re.match(r"[A-Za-z0-9_.\-]+", req)[0]))
    return out


def _optional_requirements() -> set[str]:
    """Distribution names of the user-facing extras (``unitune[quant]`` ...; dev left out)."""
    out = set()
    for req in md.requires("unitune") or []:
        m = re.search(r"extra == [\"']([^\"']+)", req)
        if m and m[1] != "dev":
            out.add(_norm(re.match(r"[A-Za-z0-9_.\-]+", req)[0]))
    return out


def _imported_top_names(path: Path) -> set[str]:
    """Top-level module names a source file imports anywhere (module level or inside functions,
    where the package imports its heavy or optional pieces lazily); relative imports left out."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_submodule_imports():
    """Importing each module of the package succeeds (module-level imports resolve)."""
    failed = {}
    for info in pkgutil.walk_packages(unitune.__path__, "unitune."):
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001 - collect them all, report at once
            failed[info.name] = f"{type(e).__name__}: {e}"
    assert not failed, failed


def test_every_imported_distribution_is_declared():
    """Each import is a dependency, or an extra's that the importing file guards (it catches
    the ImportError to say which extra to install)."""
    declared, optional = _runtime_requirements(), _optional_requirements()
    owners = md.packages_distributions()  # top-level import name -> distributions providing it
    missing = {}
    for f in sorted(SRC.rglob("*.py")):
        for name in _imported_top_names(f):
            if name in sys.stdlib_module_names or name == "unitune" or name == "__future__":
                continue
            dists = {_norm(d) for d in owners.get(name, [])}
            assert dists, (
                f"{f.relative_to(SRC)} imports {name!r}, which no installed distribution provides"
            )
            guarded = dists & optional and "except ImportError" in f.read_text()
            if not dists & declared and not guarded:
                missing.setdefault(name, []).append(str(f.relative_to(SRC)))
    assert not missing, f"imported but not in project.dependencies: {missing}"


def test_the_check_sees_lazy_imports(tmp_path):
    """The scan reads imports inside functions too (where a missing dependency hides longest)."""
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from scipy import ndimage\n    import skimage.data\n")
    assert _imported_top_names(f) == {"os", "scipy", "skimage"}
