"""End-to-end engine tests on a tiny random SD model: peer equality, fine-tuning, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.models import load_components
from unitune.tune import tune


@pytest.fixture(scope="module")
def untuned(tiny_model, photo, tmp_path_factory):
    """A tune folder with no fine-tuning (checkpoint 0 = the pretrained model)."""
    out = tmp_path_factory.mktemp("t") / "untuned"
    tune(photo, out, TuneConfig(steps=0), model=tiny_model, device="cpu", progress=False)
    return out


@pytest.mark.parametrize("t0", [0.6, 0.95])
def test_edit_equals_diffusers_img2img(tiny_model, untuned, t0):
    """With t0 < 1 and no fine-tuning, our loop reproduces StableDiffusionImg2ImgPipeline."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    ed = Editor(untuned, "cpu")
    cfg = EditConfig(checkpoint=0, t0=t0, cfg=7.5, steps=12, seeds=(0, 3), interpolate=False)
    ours = ed.edit("a cat wearing sunglasses", cfg, progress=False).pixels

    peer = StableDiffusionImg2ImgPipeline.from_pretrained(
        tiny_model, safety_checker=None, requires_safety_checker=False
    )
    peer.scheduler = DDIMScheduler.from_config(peer.scheduler.config)
    peer.set_progress_bar_config(disable=True)
    x0 = ed.folder.base_latents()  # 4 channels: img2img takes them as latents as-is
    ref = peer(
        prompt=["beikkpic a cat wearing sunglasses"] * 2,
        image=x0.repeat(2, 1, 1, 1),
        strength=t0,
        guidance_scale=7.5,
        num_inference_steps=12,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (0, 3)],
        output_type="np",
    ).images  # (2, H, W, 3) in [0, 1]
    ours_np = ours.permute(0, 2, 3, 1).cpu().numpy()
    assert ours_np.shape == ref.shape
    assert np.abs(ours_np - ref).max() < 1e-4


@pytest.mark.slow
def test_finetune_lowers_loss_and_reproduces_base(tiny_model, photo, tmp_path):
    """Loss falls, and the rare-token sample at t0 = 1 moves toward the base image (PSNR)."""
    out = tmp_path / "tuned"
    cfg = TuneConfig(steps=128, lr=1e-3)
    folder = tune(photo, out, cfg, model=tiny_model, device="cpu", progress=False)
    ck = folder.manifest["checkpoints"]
    assert sorted(map(int, ck)) == [16, 32, 64, 128]
    assert ck["128"]["loss"] < ck["16"]["loss"]

    ed = Editor(out, "cpu")
    # The VAE is random (its decoder saturates almost any latent to a similar picture), so the
    # image the UNet learns is the base LATENT: PSNR is measured there, peak = its max |value|.
    z = ed.folder.base_latents()
    peak = z.abs().max().item()

    def psnr(step: int) -> float:
        ec = EditConfig(checkpoint=step, t0=1.0, cfg=1.0, steps=20, seeds=(0, 1, 2, 3))
        lat = ed.edit("", ec, progress=False).latents
        return 10 * np.log10(peak**2 / ((lat - z) ** 2).mean().item())

    p0, p64, p128 = psnr(0), psnr(64), psnr(128)
    assert p128 > p64 > p0 and p128 > p0 + 6.0, (p0, p64, p128)


@pytest.mark.slow
def test_checkpoints_resume_bit_exact(tiny_model, photo, tmp_path):
    cfg = TuneConfig(steps=8, save_at=(2, 4, 8), lr=1e-3)
    comp = load_components(tiny_model, "cpu")
    full = tune(photo, tmp_path / "a", cfg, comp=comp, model=tiny_model, progress=False)

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
    assert resumed.manifest["status"] == "complete"
    assert not (tmp_path / "b" / "checkpoints" / "resume.safetensors").exists()
    for step in (2, 4, 8):
        a, _ = full.load_checkpoint(step)
        b, _ = resumed.load_checkpoint(step)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), step
    assert full.manifest["loss_history"] == resumed.manifest["loss_history"]
    # no --checkpoint: the auto step on a full tune that saved it, else None (= the last)
    ed = Editor(full.path, "cpu")
    assert ed.default_step(EditConfig()) is None  # 32 is not saved here
    assert [ed.default_step(EditConfig(**{"auto_checkpoint": 4, **kw})) for kw in
            ({}, {"checkpoint": 2}, {"method": "sine"}, {"auto_checkpoint": 3})] == [4, 2, None, None]  # fmt: skip
    res = ed.edit("a cat", EditConfig(auto_checkpoint=4, steps=1, seeds=(0,)), progress=False)
    assert res.params[0]["edit_config"]["checkpoint"] == 4 and ed.step == 4


def test_lora_tune_is_small_and_scales(tiny_model, photo, tmp_path):
    cfg = TuneConfig(steps=4, save_at=(2, 4), method="lora", lora_rank=4, lr=1e-2)
    folder = tune(photo, tmp_path / "l", cfg, model=tiny_model, device="cpu", progress=False)
    tensors, meta = folder.load_checkpoint(4)
    assert meta["kind"] == "lora" and all("lora" in k for k in tensors)
    n_lora = sum(v.numel() for v in tensors.values())
    ed = Editor(folder.path, "cpu")
    n_unet = sum(p.numel() for n, p in ed.comp.unet.named_parameters() if "lora" not in n)
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

    a = load_components(tiny_model, "cpu")
    assert load_components(tiny_model, "cpu", dtype=torch.float16).digest == a.digest
    model = tmp_path / "model"  # one name (path), two sets of weights
    shutil.copytree(tiny_model, model)
    cfg = TuneConfig(steps=2, save_at=(2,))
    tune(photo, tmp_path / "t", cfg, model=str(model), device="cpu", progress=False)
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["model_digest"] == a.digest
    build_tiny_pipeline(seed=1).save_pretrained(model, safe_serialization=True)
    assert load_components(str(model), "cpu").digest != a.digest
    with pytest.raises(UserError, match="different model weights"):
        tune(photo, tmp_path / "t", cfg, model=str(model), device="cpu", progress=False)
    with pytest.warns(UnituneWarning, match="tuned on other weights"):
        Editor(tmp_path / "t", "cpu")


def test_weights_digest_samples_both_ends_of_large_tensors():
    from unitune.models import weights_digest

    m = torch.nn.Module()
    m.register_buffer("w", torch.zeros(2**24 + 3))  # past float32's exact integers
    d0 = weights_digest(m, m, m)
    m.w[-1] = 1.0  # the last element is always sampled
    assert weights_digest(m, m, m) != d0


def test_weights_digest_hashes_tensor_names():
    from unitune.models import weights_digest

    a, b = torch.nn.Module(), torch.nn.Module()
    a.register_buffer("x", torch.ones(3))
    b.register_buffer("y", torch.ones(3))  # same shape and values, another name
    assert weights_digest(a, a, a) != weights_digest(b, b, b)
