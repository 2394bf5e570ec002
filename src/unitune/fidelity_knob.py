"""One knob (beyond the papers; UniTune names it as future work): ``--fidelity f`` in [0, 1],
0 = most expressive, 1 = most faithful, mapped to (checkpoint, t0, CFG) along the success-vs-
fidelity Pareto frontier that the editing benchmark measured for UniTune.

The map is data: ``assets/fidelity_map.json``, written by ``scripts/fidelity_map.py`` from a
``unitune bench edits`` results file (it records which). f picks the frontier point whose measured
fidelity is nearest to fid_min + f (fid_max - fid_min), among the points whose checkpoint the
tune folder has. (Measuring fidelity itself is unitune.metrics.fidelity's job.)
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from importlib import resources
from pathlib import Path

from .config import EditConfig
from .errors import UserError


def load_map(path: str | Path | None = None) -> dict:
    if path is None:
        return json.loads(
            resources.files("unitune").joinpath("assets/fidelity_map.json").read_text()
        )
    return json.loads(Path(path).read_text())


def frontier_point(f: float, points: list[dict], checkpoints: set[int] | None = None) -> dict:
    """The frontier point for knob value f. points: dicts with checkpoint, t0, cfg, fidelity."""
    if not 0.0 <= f <= 1.0 or math.isnan(f):
        raise UserError(
            f"--fidelity must be in [0, 1], got {f}", "0 = most expressive, 1 = most faithful"
        )
    usable = [p for p in points if checkpoints is None or p["checkpoint"] in checkpoints]
    if not usable:
        have = sorted(checkpoints or ())
        want = sorted({p["checkpoint"] for p in points})
        raise UserError(
            f"--fidelity needs a checkpoint at one of the steps {want}; this tune has {have}",
            f"tune with --save-at {','.join(map(str, want))}, or pass --checkpoint/--t0/--cfg",
        )
    lo = min(p["fidelity"] for p in points)
    hi = max(p["fidelity"] for p in points)
    target = lo + f * (hi - lo)
    return min(usable, key=lambda p: (abs(p["fidelity"] - target), p["fidelity"]))


def apply_fidelity(
    cfg: EditConfig, f: float, checkpoints: set[int] | None = None, fmap: dict | None = None
) -> EditConfig:
    """cfg with checkpoint, t0 and CFG set by the knob."""
    p = frontier_point(f, (fmap or load_map())["points"], checkpoints)
    return replace(cfg, checkpoint=int(p["checkpoint"]), t0=float(p["t0"]), cfg=float(p["cfg"]))
