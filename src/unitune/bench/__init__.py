"""Benchmarks on the embedded world model, where an oracle reads every output back into a scene.

``unitune bench edits`` (:mod:`unitune.bench.edits`): a fixed, seeded editing suite run through
SDEdit, UniTune (+ interpolation, + prompt guidance) and SINE; tables and plots are written by
:mod:`unitune.bench.report`. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Re-exports resolve on first use (PEP 562): `unitune --help` imports unitune.bench.cli, which
# must not pull in torch through the benchmark modules.
_HOME = {name: "edits" for name in ("FULL", "QUICK", "BenchConfig", "SceneItem", "keep_mask",
                                    "make_suite", "run_bench")}  # fmt: skip
_HOME["pareto_front"] = "report"


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


__all__ = sorted(_HOME)
