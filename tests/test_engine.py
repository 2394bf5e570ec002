"""End-to-end engine tests on a tiny random SD model: checkpoints, resume, LoRA, the weights
digest (diffusers parity and tuning per family: test_families.py)."""

from __future__ import annotations

import json

import pytest
import torch

from unitune.backbones import load_model
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.tune import tune


@pytest.mark.slow
def test_checkpoints_resume_bit_exact(tiny_model, photo, tmp_path):
    cfg = TuneConfig(steps=8, save_at=(2, 4, 8), lr=1e-3)
    bb = load_model(tiny_model, "cpu")
    full = tune(photo, tmp_path / "a", cfg, backbone=bb, model=tiny_model, progress=False)

    class Boom(Exception):
        pass

    def die(step, loss):
        if step == 6:
            raise Boom

    with pytest.raises(Boom):
        tune(
            photo, tmp_path / "b", cfg, model=tiny_model, device="cpu", progress=False, on_step=die
        )
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert sorted(map(int, m["checkpoints"])) == [2, 4] and m["status"] == "running"
    assert (tmp_path / "b" / "checkpoints" / "resume.safetensors").exists()
    assert not list((tmp_path / "b" / "checkpoints").glob(".*tmp"))  # no half-written files
    resumed = tune(photo, tmp_path / "b", cfg, model=tiny_model, device="cpu", progress=False)
    assert resumed.manifest.status == "complete"
    assert not (tmp_path / "b" / "checkpoints" / "resume.safetensors").exists()
    for step in (2, 4, 8):
        a, _ = full.load_checkpoint(step)
        b, _ = resumed.load_checkpoint(step)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), step
    assert full.manifest.loss_history == resumed.manifest.loss_history
    # no --checkpoint: the auto step on a full tune that saved it, else None (= the last)
    ed = Editor(full.path, "cpu")
    assert ed.default_step(EditConfig()) is None  # 32 is not saved here
    assert [
        ed.default_step(EditConfig(**{"auto_checkpoint": 4, **kw}))
        for kw in ({}, {"checkpoint": 2}, {"method": "sine"}, {"auto_checkpoint": 3})
    ] == [4, 2, None, None]
    res = ed.edit("a cat", EditConfig(auto_checkpoint=4, steps=1, seeds=(0,)), progress=False)
    assert res.params[0]["edit_config"]["checkpoint"] == 4 and ed.step == 4


def test_lora_tune_is_small_and_scales(tiny_model, photo, tmp_path):
    cfg = TuneConfig(steps=4, save_at=(2, 4), method="lora", lora_rank=4, lr=1e-2)
    folder = tune(photo, tmp_path / "l", cfg, model=tiny_model, device="cpu", progress=False)
    tensors, meta = folder.load_checkpoint(4)
    assert meta["kind"] == "lora" and all("lora" in k for k in tensors)
    n_lora = sum(v.numel() for v in tensors.values())
    ed = Editor(folder.path, "cpu")
    n_unet = sum(p.numel() for n, p in ed.backbone.module.named_parameters() if "lora" not in n)
    assert n_lora < 0.2 * n_unet
    ec = EditConfig(checkpoint=4, t0=1.0, steps=4, seeds=(0,))
    tuned = ed.edit("a cat", ec, progress=False).pixels
    off = ed.edit("a cat", EditConfig(**{**ec.__dict__, "lora_scale": 0.0}), progress=False).pixels
    pre = ed.edit("a cat", EditConfig(**{**ec.__dict__, "checkpoint": 0}), progress=False).pixels
    assert torch.allclose(off, pre, atol=1e-5)  # scale 0 = the pretrained model
    assert not torch.allclose(tuned, pre, atol=1e-4)
    assert ed.default_step(EditConfig(auto_checkpoint=2)) is None  # LoRA: the last, not step 2


@pytest.mark.slow
def test_weights_digest_follows_the_weights_not_the_name(tiny_model, photo, tmp_path):
    import shutil

    from conftest import build_tiny_pipeline
    from unitune.errors import UnituneWarning, UserError

    a = load_model(tiny_model, "cpu")
    assert load_model(tiny_model, "cpu", dtype=torch.float16).digest == a.digest
    model = tmp_path / "model"  # one name (path), two sets of weights
    shutil.copytree(tiny_model, model)
    cfg = TuneConfig(steps=2, save_at=(2,))
    tune(photo, tmp_path / "t", cfg, model=str(model), device="cpu", progress=False)
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["model_digest"] == a.digest
    build_tiny_pipeline(seed=1).save_pretrained(model, safe_serialization=True)
    assert load_model(str(model), "cpu").digest != a.digest
    with pytest.raises(UserError, match="different model weights"):
        tune(photo, tmp_path / "t", cfg, model=str(model), device="cpu", progress=False)
    with pytest.warns(UnituneWarning, match="tuned on other weights"):
        Editor(tmp_path / "t", "cpu")


def test_weights_digest_samples_both_ends_of_large_tensors():
    from unitune.backbones.base import weights_digest

    m = torch.nn.Module()
    m.register_buffer("w", torch.zeros(2**24 + 3))  # past float32's exact integers
    d0 = weights_digest({"a": m, "b": m})
    m.w[-1] = 1.0  # the last element is always sampled
    assert weights_digest({"a": m, "b": m}) != d0


def test_weights_digest_hashes_tensor_names():
    from unitune.backbones.base import weights_digest

    a, b = torch.nn.Module(), torch.nn.Module()
    a.register_buffer("x", torch.ones(3))
    b.register_buffer("y", torch.ones(3))  # same shape and values, another name
    assert weights_digest({"m": a}) != weights_digest({"m": b})


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


def test_keep_resume_keeps_the_exact_state(tiny_model, photo, tmp_path):
    """A completed run drops checkpoints/resume.safetensors (3x a full checkpoint) unless asked."""
    cfg = TuneConfig(steps=2, save_at=(2,))
    kept = tune(
        photo, tmp_path / "k", cfg, model=tiny_model, device="cpu", progress=False, keep_resume=True
    )
    assert kept.manifest.status == "complete"
    assert (kept.path / "checkpoints" / "resume.safetensors").exists()
    plain = tune(photo, tmp_path / "p", cfg, model=tiny_model, device="cpu", progress=False)
    assert not (plain.path / "checkpoints" / "resume.safetensors").exists()
