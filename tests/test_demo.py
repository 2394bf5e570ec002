"""`unitune demo`: the README's first command, offline, within its 3-minute budget on 2 cores."""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

from unitune.cli import main
from unitune.demo import SCENE
from unitune.world.edits import KINDS
from unitune.world.oracle import read
from unitune.world.render import render, to_pil
from unitune.world.scene import Scene, caption

BUDGET_S = 180.0


def test_demo_scene_is_not_a_plain_caption_rendering():
    plain = Scene(SCENE.background, tuple(o.__class__(o.shape, o.colour, o.size, o.style, o.pos)
                                          for o in SCENE.objects))  # fmt: skip
    a = render([SCENE])[0]
    b = render([plain])[0]
    assert (a - b).abs().max() > 0.3  # jitter, rotation, gradient and texture are its own
    assert read(to_pil(a)).objects  # and the oracle reads it
    assert "beikkpic" not in caption(SCENE, np.random.default_rng(0))


def test_demo_runs_within_budget_and_reports_every_seed(tmp_path, capsys):
    out = tmp_path / "demo"
    t = time.time()
    assert main(["demo", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    elapsed = time.time() - t
    assert elapsed < BUDGET_S, f"demo took {elapsed:.0f} s (budget {BUDGET_S:.0f} s)"
    printed = capsys.readouterr().out
    for name in ("original.png", "edits.png", "grid.png", "verdicts.json"):
        assert (out / name).exists(), name
        if name.endswith(".png"):
            assert str(out / name) in printed
    v = json.loads((out / "verdicts.json").read_text())
    assert [r["edit"] for r in v["edits"]] == list(KINDS)
    # every seed is judged and reported: no silent cherry-picking
    seeds = v["edit_config"]["seeds"]
    assert all(len(r["verdicts"]) == len(seeds) for r in v["edits"])
    assert "success" in printed and "preservation" in printed
    assert 0.0 <= v["success_rate"] <= 1.0 and 0.0 <= v["preservation"] <= 1.0
    # grid: checkpoints x t0 cells plus labels; edits: one row per edit, original + seeds
    assert Image.open(out / "grid.png").width > 4 * 64
    assert Image.open(out / "edits.png").height > len(KINDS) * 64
    manifest = json.loads((out / "tune" / "manifest.json").read_text())
    assert sorted(int(s) for s in manifest["checkpoints"]) == [16, 32, 64, 128]
