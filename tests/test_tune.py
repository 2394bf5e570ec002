"""Tuning on the tiny SD model (tune.py): checkpoints and resume, the weights digest, the
resume state, presets and the tune CLI's SINE preset."""

from __future__ import annotations

import json

import pytest
import torch

from cli_run import one_error_line, run
from unitune.backbones import load_model
from unitune.config import EditConfig, TuneConfig, tune_preset
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


def test_tune_presets():
    assert tune_preset(None) == {}  # no --preset: the TuneConfig defaults
    paper = TuneConfig(**tune_preset("unitune"))  # UniTune §3.2
    assert (paper.steps, paper.save_at, paper.batch_size, paper.lr) == (
        128,
        (16, 32, 64, 128),
        4,
        None,
    )
    # the defaults stop where the default edit reads: the paper's run saves that step too
    full, lora = TuneConfig().schedule("full"), TuneConfig().schedule("lora")
    assert full.steps == EditConfig.auto_checkpoint in paper.save_at
    assert lora == TuneConfig(**tune_preset("unitune")).schedule("lora")  # LoRA: the paper's
    # what is set wins over the method's default, each field on its own
    assert TuneConfig(steps=48).schedule("full") == type(full)(48, full.save_at)
    assert TuneConfig(save_at=(4,)).schedule("lora").steps == lora.steps
    sine_p = tune_preset("sine")
    assert sine_p["lr"] == 1e-6 and sine_p["batch_size"] == 1 and sine_p["steps"] == 800
    assert tune_preset("sine", patches=True)["steps"] == 10_000
    assert "lr" not in tune_preset("sine", method="lora")
    cfg = TuneConfig(base_prompt="a beikkpic dog with a flower in its mouth")
    assert cfg.prompt() == "a beikkpic dog with a flower in its mouth"  # verbatim: has the token
    assert TuneConfig(base_prompt="dog").prompt() == "beikkpic dog"
    assert TuneConfig(class_noun="dog").prompt() == "a photo of a beikkpic dog"


def test_cli_sine_preset(tiny_model, photo, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "a",
        "--preset",
        "sine",
        "--device",
        "cpu",
        "--quiet",
    )
    assert "--class-noun" in one_error_line(code, err) and not (tmp_path / "a").exists()
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "a",
        "--patches",
        "--patch-min-frac",
        "0",
        "--device",
        "cpu",
    )
    assert "--patch-min-frac" in one_error_line(code, err)
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "b",
        "--preset",
        "sine",
        "--class-noun",
        "cat",
        "--steps",
        1,
        "--save-at",
        1,
        "--patches",
        "--patch-min-frac",
        0.5,
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    st = m["settings"]
    assert st["lr"] == 1e-6 and st["batch_size"] == 1 and st["steps"] == 1  # explicit flags win
    assert st["patches"] and st["patch_min_frac"] == 0.5
    assert m["prompt"] == "a photo of a beikkpic cat"
