"""--start inversion and --auto-mask: parity with diffusers' DiffEdit pipeline (its DDIM
inversion and its mask), the photo given back far better than SDEdit's start, and the mask as
a user sees it (written beside the edit, reproduced by --params, combined with --mask)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unitune import automask
from unitune.cli import main
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.errors import UserError
from unitune.inversion import invert

STEPS = 10


def _diffedit(model: str):
    """diffusers' StableDiffusionDiffEditPipeline on the tiny model, DDIM forwards and back."""
    import diffusers

    pipe = diffusers.StableDiffusionDiffEditPipeline.from_pretrained(
        model, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.inverse_scheduler = diffusers.DDIMInverseScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def editor(tuned) -> Editor:
    return Editor(tuned, "cpu")


def _photo_latents(pipe, x0: torch.Tensor, monkeypatch) -> None:
    """The pipeline starts from our x0 (the posterior mean) instead of a VAE sample of it."""
    monkeypatch.setattr(
        pipe, "prepare_image_latents", lambda image, batch, *a, **k: x0.repeat(batch, 1, 1, 1)
    )


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_ddim_inversion_equals_diffedit_invert(editor, tiny_model, strength, monkeypatch):
    """The pretrained model (checkpoint 0): unitune's inversion path is DiffEdit's
    ``invert(inpaint_strength=s)`` latents at every timestep, to 1e-4."""
    editor.use_checkpoint(0)
    bb = editor.backbone
    hw = editor.folder.manifest.resolution
    x0 = editor.base_latents(hw)
    (c,) = editor.encode(["a cat"], hw)
    den = editor.state.pretrained()
    sched = bb.make_scheduler("ddim", hw)
    first = bb.start_index(STEPS, strength) if strength < 1 else 0
    path = invert(
        lambda x, t: den(x, t, c.expand(x.shape[0])),
        bb.inverse_scheduler(sched),
        x0,
        steps=STEPS,
        first=first,
    )
    pipe = _diffedit(tiny_model)
    _photo_latents(pipe, x0, monkeypatch)
    ref = pipe.invert(
        prompt="a cat",
        image=Image.new("RGB", (hw[1], hw[0])),
        num_inference_steps=STEPS,
        inpaint_strength=strength,
        guidance_scale=1.0,
        num_reg_steps=0,
        decode_latents=False,
    ).latents[0]  # (1, n, C, h, w) -> (n, C, h, w), most noised first
    ours = torch.cat([path[i] for i in sorted(path)])  # T[first], ..., T[steps - 1]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_auto_mask_equals_diffedit_generate_mask(editor, tiny_model, monkeypatch):
    """DiffEdit's mask (CFG 7.5, strength 0.5, 10 draws, ratio 3, threshold 0.5) under the
    pretrained model: the same map and the same mask as ``generate_mask`` (no dilation)."""
    editor.use_checkpoint(0)
    bb = editor.backbone
    hw = editor.folder.manifest.resolution
    x0 = editor.base_latents(hw)
    src, tgt = editor.encode(["a cat", "a dog"], hw)
    neg = editor.negative(EditConfig(), hw)
    raw = automask.estimate_map(
        editor.state.pretrained(),
        bb,
        bb.make_scheduler("ddim", hw),
        x0,
        tgt,
        src,
        neg,
        7.5,
        steps=STEPS,
        t0=0.5,
        draws=10,
        seed=3,
    )
    ours = automask.mask_of(raw, "diffedit", 0.5, 0)
    pipe = _diffedit(tiny_model)
    _photo_latents(pipe, x0, monkeypatch)
    ref = pipe.generate_mask(
        image=Image.new("RGB", (hw[1], hw[0])),
        source_prompt="a cat",
        target_prompt="a dog",
        num_maps_per_mask=10,
        mask_encode_strength=0.5,
        mask_thresholding_ratio=3.0,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
    )
    ref = torch.as_tensor(np.asarray(ref, dtype=np.float32)).reshape(ours.shape)
    assert 0 < float(ref.mean()) < 1  # a mask with both parts: the comparison says something
    assert torch.equal(ours, ref)


def test_mask_pieces():
    m = torch.zeros(1, 1, 8, 8)
    m[..., 3, 3] = 1.0
    assert automask.dilate(m, 1).sum() == 9 and torch.equal(automask.dilate(m, 0), m)
    big = torch.zeros(1, 1, 4, 4)
    big[..., :2, :] = 5.0  # half the map differs: above 0.5 x (3 x mean) there, 0 elsewhere
    assert torch.equal(automask.threshold_map(big, 0.5)[0, 0, :, 0], torch.tensor([1, 1, 0, 0.0]))
    up = automask.to_pixels(big.clamp(max=1), (8, 8))
    assert up.shape == (1, 1, 8, 8) and float(up.mean()) == 0.5


def test_otsu_cut_marks_a_region_of_any_area():
    """A map with a high region of 3/4 of the cells (a background edit's): DiffEdit's cut (1.5x
    the mean) cannot mark more than 2/3 of the cells and here marks only the high region's
    noisiest cells; Otsu's marks the region exactly. A small region (a local edit's): both mark
    it exactly. A flat map: Otsu marks nothing."""
    g = torch.Generator().manual_seed(0)
    for rows in (6, 1):  # 6 of 8 rows high: 3/4 of the map; 1 row: 1/8
        m = 0.05 * torch.rand(1, 1, 8, 8, generator=g)
        m[..., :rows, :] += 1.0
        region = torch.zeros_like(m)
        region[..., :rows, :] = 1.0
        assert torch.equal(automask.cut(m, "otsu", 0.5), region)
        ours = automask.cut(m, "diffedit", 0.5)
        if rows == 6:
            assert float(ours.mean()) <= 2 / 3 and not torch.equal(ours, region)
        else:
            assert torch.equal(ours, region)
    assert not automask.cut(torch.ones(1, 1, 4, 4), "otsu", 0.5).any()
    with pytest.raises(ValueError, match="rule"):
        automask.cut(m, "nope", 0.5)


def _db(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Signal-to-error ratio of x to ref in dB (latents have no fixed peak)."""
    return float(10 * torch.log10(ref.var() / ((x - ref) ** 2).mean()))


@pytest.mark.parametrize("t0", [0.6, 1.0])
def test_inversion_gives_the_photo_back_where_sdedit_does_not(editor, t0):
    """The edit prompt equal to the tune prompt at CFG 1: sampling from the inversion lands on
    the photo's latents ~26 dB closer than from SDEdit's noised start (measured 0.006 against
    2.6 mean squared error at t0 0.6 on this tiny tune): assert at least 10 dB."""
    x0 = editor.folder.base_latents()
    tp = editor.folder.manifest.tuned_prompt
    cfg = EditConfig(cfg=1.0, t0=t0, steps=STEPS, rare_token=False, interpolate=False, seeds=(0, 1))
    noise = editor.edit(tp, cfg, progress=False).latents
    inv = editor.edit(tp, replace(cfg, start="inversion"), progress=False).latents
    assert _db(inv, x0) > _db(noise, x0) + 10


def test_inversion_on_the_embedded_model(demo_photo, tmp_path):
    """The same on the embedded world model, in pixels: a 32-step tune of the demo scene, 15
    DDIM steps. Measured 30.8 against 12.5 dB PSNR from t0 1 and 31.1 against 27.9 dB from t0
    0.8: assert 10 and 1.5 dB."""
    from unitune.metrics.fidelity import image_tensor
    from unitune.tune import tune

    tune(demo_photo, tmp_path / "t", TuneConfig(steps=32, save_at=(32,)), device="cpu")
    ed = Editor(tmp_path / "t", "cpu")
    base = image_tensor(ed.base_image)[None]
    tp = ed.folder.manifest.tuned_prompt

    def psnr(start: str, t0: float) -> float:
        cfg = EditConfig(start=start, cfg=1.0, t0=t0, steps=15, rare_token=False, seeds=(0, 1))
        pix = ed.edit(tp, replace(cfg, interpolate=False), progress=False).pixels
        return float(10 * torch.log10(1 / ((pix - base) ** 2).mean()))

    assert psnr("inversion", 1.0) > psnr("noise", 1.0) + 10
    assert psnr("inversion", 0.8) > psnr("noise", 0.8) + 1.5


def test_inversion_refuses_what_it_cannot_invert(editor):
    with pytest.raises(UserError, match="--sampler ddim"):
        editor.plan("a dog", EditConfig(start="inversion", sampler="dpm++"))
    with pytest.raises(UserError, match="--eta"):
        editor.plan("a dog", EditConfig(start="inversion", eta=0.5))
    with pytest.raises(UserError, match="--start inversion"):
        editor.plan("a dog", EditConfig(inversion_negative=True))


def test_masked_inversion_keeps_the_outside_on_the_photo(editor):
    """The known region follows the inversion path and ends exactly on x0."""
    cfg = EditConfig(start="inversion", auto_mask=True, t0=0.8, steps=STEPS, interpolate=False)
    plan = editor.plan("a dog", cfg)
    assert plan.auto_mask is not None and torch.equal(plan.latent_mask, plan.auto_mask)
    assert "auto mask" in plan.describe() and "inversion" in plan.describe()
    res = editor.run(plan, progress=False)
    keep = (plan.latent_mask == 0).expand_as(plan.x0)
    assert keep.any(), "the tiny tune's mask covers everything: the check says nothing"
    assert torch.equal(res.latents[keep], plan.x0[keep])


def _mask_of(png: Path) -> Path:
    return png.with_name(png.stem + ".mask.png")


def _edit(tune: Path, out: Path, *extra, capsys) -> list[Path]:
    code = main(["edit", str(tune), *map(str, extra), "--out", str(out), "--device", "cpu"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    return [Path(p) for p in printed.split()]


def test_auto_mask_is_written_and_reproduced_by_params(tuned, tmp_path, capsys):
    """`edit --auto-mask` writes NAME.mask.png beside each image (white = may change, the image's
    size); `--params` re-runs it to the same image and the same mask, bit for bit; with `--mask`
    the mask used is the intersection (inside the user's mask only)."""
    args = ("a dog", "--start", "inversion", "--auto-mask", "--steps", 6, "--seeds", "0,1")
    args += ("--auto-mask-rule", "otsu")
    first = _edit(tuned, tmp_path / "a", *args, "--quiet", capsys=capsys)
    assert len(first) == 2
    for png in first:
        m = Image.open(_mask_of(png))
        assert m.mode == "L" and m.size == Image.open(png).size
        ec = json.loads(png.with_suffix(".json").read_text())["edit_config"]
        assert ec["auto_mask"] and ec["start"] == "inversion" and ec["auto_mask_rule"] == "otsu"
        assert "Auto mask rule: otsu" in Image.open(png).text["parameters"]
    again = _edit(tuned, tmp_path / "b", "--params", first[1], "--quiet", capsys=capsys)
    assert len(again) == 1
    for a, b in [(first[1], again[0]), (_mask_of(first[1]), _mask_of(again[0]))]:
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # intersection with a user mask: its left half only
    w, h = Image.open(first[0]).size
    user = Image.new("L", (w, h), 0)
    user.paste(255, (0, 0, w // 2, h))
    user.save(tmp_path / "left.png")
    both = _edit(
        tuned, tmp_path / "c", *args, "--mask", tmp_path / "left.png", "--quiet", capsys=capsys
    )
    m, alone = (np.asarray(Image.open(_mask_of(p))) for p in (both[0], first[0]))
    assert not m[:, w // 2 :].any() and (m <= alone).all()
