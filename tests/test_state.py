"""The model state (state.py) on the tiny model: LoRA scale, the patch tune's positional module,
guide views equal to separately loaded tunes and the state restored after them."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_tune
from unitune import patches
from unitune.backbones.base import Conditioning
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.tune import tune

FAST = EditConfig(steps=3, seeds=(0,))


@pytest.fixture(scope="module")
def lora_patch(tiny_model, photo, tmp_path_factory) -> Path:
    return small_tune(
        tmp_path_factory,
        tiny_model,
        photo,
        "lora-patch",
        method="lora",
        lora_rank=4,
        lr=1e-2,
        patches=True,
        pos_freqs=3,
    )


@pytest.fixture(scope="module")
def lora_copy(lora_tune, tmp_path_factory) -> Path:
    """Another LoRA tune folder (same weights): loads as a second adapter, not as the primary."""
    out = tmp_path_factory.mktemp("sine") / "lora-copy"
    shutil.copytree(lora_tune, out)
    return out


HW = (32, 32)  # the tiny model's resolution


def _eps(editor: Editor, x, t, cond: Conditioning):
    """The prediction of the checkpoint ``editor`` has applied (its own, independent model)."""
    return editor.state.tuned()(x, t, cond)


def _conds(editor: Editor, texts: list[str]) -> list[Conditioning]:
    return editor.encode(texts, HW, warn=False)


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


def test_patch_tune_saves_and_reloads_positional_module(patch_tune):
    tensors = load_file(str(patch_tune / "checkpoints" / "step-000002.safetensors"))
    pos = {k: v for k, v in tensors.items() if k.startswith("pos.")}
    assert set(pos) == {"pos.weight", "pos.bias"} and pos["pos.weight"].abs().sum() > 0
    assert not any("pos_proj" in k for k in tensors)  # not also inside the fp16 delta
    ed = Editor(patch_tune, "cpu")
    ed.use_checkpoint(2)
    proj, n_freq = ed.state.tuned().pos  # the tuned view's positional module
    assert torch.equal(proj.weight.detach().cpu(), pos["pos.weight"]) and n_freq == 6
    assert torch.equal(proj.bias.detach().cpu(), pos["pos.bias"])
    x = torch.randn(1, 4, 8, 8)
    (c,) = _conds(ed, ["beikkpic"])
    ed.state.tuned()(x, torch.tensor(500), c)
    mod = patches.get(ed.backbone.module, ed.backbone.patch_site)
    assert mod.box is None and mod.enabled  # sampling: the whole image
    ed.use_checkpoint(0)  # and back: the pretrained model again, the module off
    assert ed.state.tuned().pos is None
    ed.state.tuned()(x, torch.tensor(500), c)
    assert not patches.get(ed.backbone.module, ed.backbone.patch_site).enabled


@pytest.mark.slow
@pytest.mark.parametrize("primary", ["lora", "full"])
def test_multi_views_match_separate_models_and_restore_state(
    primary, lora_tune, full_tune, patch_tune, lora_copy, lora_patch
):
    """Each guide's prediction equals its own separately loaded tune (LoRA guides as adapters on
    the shared pretrained UNet, full ones as their own UNets); a zero-weight guide leaves SINE
    unchanged; afterwards the primary samples exactly as before."""
    ed = Editor(lora_tune if primary == "lora" else full_tune, "cpu")
    ec = replace(FAST, checkpoint=2, method="sine", sine_K=0)
    before = ed.edit("a cat", ec, progress=False).latents
    guides = (f"{full_tune}:a photo of a beikkpic cat:0", f"{patch_tune}:beikkpic:0")
    same = ed.edit("a cat", replace(ec, guides=guides), progress=False).latents
    assert torch.allclose(same, before, atol=1e-5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(501)
    emb = _conds(ed, ["", "beikkpic"])
    # lora_patch first: later full guides are then rebuilt from a UNet carrying adapters and a
    # positional module
    guides = (
        (lora_patch, 1.0),
        (full_tune, 1.5),
        (patch_tune, -0.5),
        (lora_tune, 2.0),
        (lora_copy, 3.0),
    )
    pre = Editor(lora_tune, "cpu")
    pre.use_checkpoint(0)  # every tune shares this base model
    eps_u = _eps(pre, x, t, emb[0])
    for folder, w in guides:
        g = ed.guider("a cat", replace(ec, cfg=0.0, guides=(f"{folder}:beikkpic:{w}",)), HW).build()
        ref = Editor(folder, "cpu")
        ref.use_checkpoint(2)
        want = eps_u + w * (_eps(ref, x, t, emb[1]) - eps_u)
        assert torch.allclose(g(x, t), want, atol=1e-4), folder
    # t <= K: tuned guides drop out, pretrained ones stay, beside plain pretrained CFG
    gs = (f"{full_tune}:beikkpic:2", "pretrained:a dog:1.5")
    g = ed.guider("a cat", replace(ec, cfg=4.0, sine_K=400, guides=gs), HW).build()
    lo = torch.tensor(400)
    e_u, e_cat, e_dog = (_eps(pre, x, lo, e) for e in _conds(pre, ["", "a cat", "a dog"]))
    assert torch.allclose(g(x, lo), e_u + 4.0 * (e_cat - e_u) + 1.5 * (e_dog - e_u), atol=1e-4)
    after = ed.edit("a cat", ec, progress=False).latents
    assert torch.allclose(after, before, atol=1e-6)
    plain = replace(FAST, checkpoint=2)
    fresh = Editor(ed.folder.path, "cpu").edit("a cat", plain, progress=False).latents
    assert torch.allclose(ed.edit("a cat", plain, progress=False).latents, fresh, atol=1e-6)
