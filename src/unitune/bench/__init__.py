"""Benchmarks on the embedded world model, where an oracle reads every output back into a scene.

``unitune bench edits`` (:mod:`unitune.bench.edits`): a fixed, seeded editing suite run through
SDEdit, UniTune (+ interpolation, + prompt guidance) and SINE; tables and plots are written by
:mod:`unitune.bench.report`. See docs/BENCHMARKS.md.
"""

from .edits import FULL, QUICK, BenchConfig, SceneItem, keep_mask, make_suite, run_bench
from .report import pareto_front

__all__ = [
    "FULL",
    "QUICK",
    "BenchConfig",
    "SceneItem",
    "keep_mask",
    "make_suite",
    "pareto_front",
    "run_bench",
]
