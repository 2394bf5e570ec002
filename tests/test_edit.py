"""Editing on the tiny model (edit.py, editplan.py): one batch over several t0, sizes other than
the training one, and the plan (Editor.plan / Editor.run)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from unitune.config import EditConfig
from unitune.edit import Editor

FAST = EditConfig(steps=3, seeds=(0,))


@pytest.mark.parametrize("masked", [False, True])
def test_one_batch_over_several_t0_matches_each_t0_alone(tuned, tmp_path, masked):
    """Editor.edit(t0s=...) (the grid's row in one batch: sampling.sample, one start per
    sample) gives each (t0, seed) the image its own edit gives, up to float rounding; t0 1 and a
    t0 too small for any step included."""
    import numpy as np
    from PIL import Image

    mask = None
    if masked:
        m = np.zeros((32, 32), np.uint8)
        m[8:24, 4:20] = 255
        mask = tmp_path / "mask.png"
        Image.fromarray(m).save(mask)
    ed = Editor(tuned, "cpu")
    cfg = EditConfig(checkpoint=4, steps=6, seeds=(0, 3), interpolate=False)
    t0s = (1.0, 0.5, 0.05, 0.8)
    row = ed.edit("a dog", cfg, mask, progress=False, t0s=t0s)
    assert [p["edit_config"]["t0"] for p in row.params] == [t for t in t0s for _ in cfg.seeds]
    for j, t0 in enumerate(t0s):
        alone = ed.edit("a dog", EditConfig(**{**cfg.__dict__, "t0": t0}), mask, progress=False)
        torch.testing.assert_close(row.pixels[2 * j : 2 * j + 2], alone.pixels, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="multistep"):
        ed.edit(
            "a dog", EditConfig(**{**cfg.__dict__, "sampler": "dpm++"}), t0s=t0s, progress=False
        )


@pytest.mark.parametrize("method", ["sine", "unitune"])
def test_edit_at_non_training_size(patch_tune, method):
    ed = Editor(patch_tune, "cpu")
    ec = replace(FAST, checkpoint=2, method=method, size=(32, 48), sine_K=0)
    res = ed.edit("a cat", ec, progress=False)
    assert res.images[0].size == (48, 32) and res.latents.shape == (1, 4, 8, 12)
    assert torch.isfinite(res.pixels).all()


# --- the plan ----------------------------------------------------------------------------------

PLAN = EditConfig(checkpoint=4, t0=0.6, steps=3, seeds=(0, 1), interpolate=False)


def test_plan_describes_prompt_checkpoint_and_guidance(tuned):
    ed = Editor(tuned, "cpu")
    plan = ed.plan("a dog", PLAN)
    text = plan.describe()
    assert "beikkpic a dog" in text and "checkpoint 4" in text
    assert f"guidance: CFG, w {plan.guider.w:g}" in text
    sine = ed.plan("a dog", replace(PLAN, method="sine", checkpoint=2)).describe()
    assert "checkpoint 2" in sine and "SINE, w" in sine and "v 0.7" in sine


def test_run_refuses_a_plan_whose_checkpoint_changed(tuned):
    ed = Editor(tuned, "cpu")
    plan = ed.plan("a dog", PLAN)
    ed.use_checkpoint(2)
    with pytest.raises(RuntimeError, match="plan again"):
        ed.run(plan, progress=False)
    ed.use_checkpoint(4)  # the planned state again
    assert len(ed.run(plan, progress=False).images) == 2


def test_edit_is_run_of_plan_bit_for_bit(tuned):
    ed = Editor(tuned, "cpu")
    a = ed.edit("a dog", PLAN, progress=False)
    b = ed.run(ed.plan("a dog", PLAN), progress=False)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.pixels, b.pixels)
    assert a.params == b.params
