"""Benchmarks on the embedded world model, where an oracle reads every output back into a scene.

``unitune bench edits`` (:mod:`unitune.bench.edits`, run by :mod:`unitune.bench.runner`): a fixed,
seeded editing suite run through SDEdit, UniTune (+ interpolation, + prompt guidance) and SINE,
sized by :mod:`unitune.bench.config`; tables and plots are written by :mod:`unitune.bench.report`.
See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Re-exports resolve on first use (PEP 562): `unitune --help` imports unitune.bench.cli, which
# must not pull in torch through the benchmark modules.
_HOME = {
    "FULL": "config",
    "QUICK": "config",
    "BenchConfig": "config",
    "SceneItem": "suite",
    "keep_mask": "suite",
    "make_suite": "suite",
    "run_bench": "runner",
    "pareto_front": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


__all__ = sorted(_HOME)
