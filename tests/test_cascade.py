"""DeepFloyd IF's pixel cascade on tiny seeded stages (tiny_if.py): the cascade's edit equals
IFImg2ImgPipeline followed by IFImg2ImgSuperResolutionPipeline (IFPipeline / IFSuperResolution-
Pipeline at t0 = 1), a cascade tune tunes, saves and resumes both stages, and the learned
variances stay trained (the hybrid loss) so the pipelines' own scheduler stays valid. The stages
are conftest's ``tiny_if``; the base stage alone is also in test_families.py's family list."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.images import pil_to_tensor
from unitune.tune import tune
from unitune.tunefolder import TuneFolder

# every test here loads or tunes a tiny model end to end: out of the fast subset, still in CI
pytestmark = pytest.mark.slow

PROMPT = "a cat wearing sunglasses"


@pytest.fixture(scope="module")
def untuned(tiny_if, photo, tmp_path_factory):
    """A cascade tune folder with no fine-tuning (checkpoint 0 = the pretrained stages)."""
    path = tmp_path_factory.mktemp("if") / "untuned"
    return tune(
        photo, path, TuneConfig(steps=0), model=tiny_if[0], device="cpu", progress=False
    ).path


def _peers(tiny_if):
    import diffusers

    none = dict(
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False
    )
    out = {}
    for cls, path in (
        ("IFImg2ImgPipeline", tiny_if[0]),
        ("IFPipeline", tiny_if[0]),
        ("IFImg2ImgSuperResolutionPipeline", tiny_if[1]),
        ("IFSuperResolutionPipeline", tiny_if[1]),
    ):
        out[cls] = getattr(diffusers, cls).from_pretrained(path, **none)
        out[cls].set_progress_bar_config(disable=True)
    return out


@pytest.mark.parametrize(("t0", "sr_t0"), [(0.6, 0.7), (0.95, 1.0), (1.0, 0.5), (1.0, 1.0)])
def test_cascade_edit_equals_the_if_pipelines(t0, sr_t0, tiny_if, untuned):
    ed = Editor(untuned, "cpu")
    cfg = EditConfig(
        checkpoint=0,
        sr_checkpoint=0,
        t0=t0,
        sr_t0=sr_t0,
        cfg=7.0,
        sr_cfg=4.0,
        steps=12,
        sr_steps=10,
        seeds=(3,),
        interpolate=False,
    )
    ours = ed.edit(PROMPT, cfg, progress=False).pixels
    assert ours.shape == (1, 3, 32, 32)
    peers, text = _peers(tiny_if), f"beikkpic {PROMPT}"
    low = pil_to_tensor(ed.base_image)  # the tune's base image at 8 px
    g = torch.Generator().manual_seed(3)  # one generator through both stages, as IF's examples
    if t0 < 1:
        x = peers["IFImg2ImgPipeline"](
            prompt=text,
            image=low,
            strength=t0,
            num_inference_steps=12,
            guidance_scale=7.0,
            generator=g,
            output_type="pt",
        ).images
    else:
        x = peers["IFPipeline"](
            prompt=text, num_inference_steps=12, guidance_scale=7.0, generator=g, output_type="pt"
        ).images
    common = dict(
        prompt=text,
        image=x,
        num_inference_steps=10,
        guidance_scale=4.0,
        noise_level=250,
        generator=g,
        output_type="pt",
    )
    if sr_t0 < 1:
        hi = pil_to_tensor(ed.base_image_at((32, 32)))
        y = peers["IFImg2ImgSuperResolutionPipeline"](
            original_image=hi, strength=sr_t0, **common
        ).images
    else:
        y = peers["IFSuperResolutionPipeline"](**common).images
    theirs = (y / 2 + 0.5).clamp(0, 1)
    assert (ours - theirs).abs().max().item() < 1e-4


def _fixed_mse(bb, view, cond, x0, seed: int = 0) -> float:
    """The eps half's MSE of a view at 8 fixed (timestep, noise) pairs on x0."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(50, 950, 8).long()
    noise = torch.randn((8, *x0.shape[1:]), generator=g)
    c = bb.training_cond(cond.expand(8), g, tuple(x0.shape[-2:]))
    out = view(bb.add_noise(x0.expand(8, -1, -1, -1), noise, t), t, c)
    return (out[:, :3] - noise).pow(2).mean().item()


@pytest.mark.slow
def test_cascade_tune_learns_saves_and_resumes_both_stages(tiny_if, photo, tmp_path):
    from unitune.cascade import SRStage

    cfg = TuneConfig(steps=8, save_at=(4, 8), lr=1e-3)
    full = tune(photo, tmp_path / "a", cfg, model=tiny_if[0], device="cpu", progress=False)
    m = full.manifest
    assert m.settings.sr_model == tiny_if[1] and m.settings.cascade is True
    sr = json.loads((full.path / "sr" / "manifest.json").read_text())
    assert sorted(map(int, sr["checkpoints"])) == [4, 8] and sr["status"] == "complete"
    assert sr["resolution"] == [32, 32] and m.resolution == (8, 8)

    seen = {"sixes": 0, "die_at": 0}

    class Boom(Exception):
        pass

    def die(step, loss):  # stage I dies at 6; rerun: it passes 6 again, stage II dies at 6
        seen["sixes"] += step == 6
        if step == 6 and seen["sixes"] == seen["die_at"]:
            raise Boom

    for n in (1, 3):  # the 6th step's 1st visit (stage I), then its 3rd (stage II after resuming)
        seen["die_at"] = n
        with pytest.raises(Boom):
            tune(
                photo,
                tmp_path / "b",
                cfg,
                model=tiny_if[0],
                device="cpu",
                progress=False,
                on_step=die,
            )
    part = json.loads((tmp_path / "b" / "sr" / "manifest.json").read_text())
    assert part["status"] == "running" and sorted(map(int, part["checkpoints"])) == [4]
    done = tune(photo, tmp_path / "b", cfg, model=tiny_if[0], device="cpu", progress=False)
    for a_dir, b_dir in ((full.path, done.path), (full.path / "sr", done.path / "sr")):
        for step in (4, 8):
            ta, _ = TuneFolder.open(a_dir).load_checkpoint(step)
            tb, _ = TuneFolder.open(b_dir).load_checkpoint(step)
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), (
                b_dir,
                step,
            )
        la = json.loads((a_dir / "manifest.json").read_text())["loss_history"]
        lb = json.loads((b_dir / "manifest.json").read_text())["loss_history"]
        assert la == lb and len(la) == 8
    assert not list(done.path.rglob("resume.safetensors"))

    # both stages learn the image: their eps error at fixed (t, noise) falls from step 0 to 8
    ed = Editor(full.path, "cpu")
    up = SRStage(full.path, "cpu")
    (c,) = ed.encode([m.prompt], (8, 8))
    low = ed.folder.base_latents()
    x_hi = up.folder.base_latents()
    for st, folder, x0, cond in (
        (ed.state, ed.folder, low, c),
        (up.state, up.folder, x_hi, up.backbone.with_low(c, low)),
    ):
        bb = st.backbone
        st.use(folder, 0)
        before = _fixed_mse(bb, st.tuned(), cond, x0)
        st.use(folder, 8)
        after = _fixed_mse(bb, st.tuned(), cond, x0)
        assert after < 0.8 * before, (folder.path, before, after)


@pytest.mark.slow
def test_every_feature_on_the_cascade(tiny_if, photo, tmp_path, capsys):
    """Through the CLI: full and LoRA cascade tunes, a base-only tune (--no-cascade), every
    base-stage option (t0, prompt guidance, mask, interpolation, paste-back, SINE, guides), the SR
    flags, the grid over SR checkpoints, --params, and the refusals of what does not apply."""
    from PIL import Image

    from unitune.cli import main

    def run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv] + ["--device", "cpu", "--quiet"])
        out, err = capsys.readouterr()
        return code, out, err

    def ok(*argv) -> list[str]:
        code, out, err = run(*argv)
        assert code == 0, (argv, err)
        return out.split()

    m, t = tiny_if[0], tmp_path
    tune_args = ["--model", m, "--steps", 2, "--save-at", "1,2"]
    ok("tune", photo, "--out", t / "full", *tune_args)
    ok("tune", photo, "--out", t / "lora", *tune_args, "--method", "lora", "--lora-rank", 4)
    ok("tune", photo, "--out", t / "base", *tune_args, "--no-cascade")
    assert (t / "full" / "sr" / "checkpoints").is_dir() and not (t / "base" / "sr").exists()
    w, h = Image.open(photo).size
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (w // 4, h // 4, w // 2, h // 2))
    mask.save(t / "mask.png")
    edits = [
        (
            "full",
            "--checkpoint",
            2,
            "--t0",
            0.8,
            "--prompt-guidance",
            "a cat",
            "--mask",
            t / "mask.png",
            "--paste-back",
            "--seeds",
            "0,1",
            "--sr-checkpoint",
            1,
            "--sr-t0",
            0.7,
            "--sr-cfg",
            2,
        ),
        (
            "lora",
            "--lora-scale",
            0.5,
            "--sampler",
            "ddim",
            "--no-interpolate",
            "--sr-noise-level",
            100,
        ),
        (
            "lora",
            "--method",
            "sine",
            "--guide",
            f"{t / 'full'}:beikkpic:1.5",
            "--K",
            300,
            "--v",
            0.5,
        ),
        ("full", "--size", "32x64", "--sr-checkpoint", 0),
        ("base", "--t0", 0.9),
        # stage I inverted (DDIM on its eps half), its auto mask upsampled for stage II
        ("full", "--start", "inversion", "--auto-mask", "--mask", t / "mask.png"),
        # the route on stage I: a local edit (the cut below any map), its mask for stage II
        ("full", "--route", "auto", "--route-spread", 1e-6),
    ]
    for i, (tune_dir, *flags) in enumerate(edits):
        files = ok(
            "edit",
            t / tune_dir,
            "a dog",
            *flags,
            "--steps",
            2,
            "--sr-steps",
            2,
            "--out",
            t / f"e{i}",
        )
        assert files and all(Path(f).is_file() for f in files), flags
    first = Path(sorted((t / "e0").glob("*.png"))[0])
    assert Image.open(first).size == (w, h)  # --paste-back: the photo's own size
    assert Image.open(sorted((t / "e3").glob("*.png"))[0]).size == (64, 32)  # the SR stage's size
    assert Image.open(sorted((t / "e4").glob("*.png"))[0]).size == (8, 8)  # base stage only
    out5 = sorted((t / "e5").glob("*_s0.png"))[0]
    assert Image.open(out5.with_name(out5.stem + ".mask.png")).size == Image.open(out5).size
    info = Image.open(first).text["parameters"]
    assert "SR checkpoint: 1" in info and "SR t0: 0.7" in info, info
    again = Path(ok("edit", t / "full", "--params", first, "--out", t / "r")[0])
    assert Image.open(again).tobytes() == Image.open(first).tobytes()
    ok(
        "grid",
        t / "full",
        "a dog",
        "--rows",
        "sr_checkpoint",
        "--checkpoints",
        "0,1,2",
        "--t0",
        "0.8,1",
        "--steps",
        2,
        "--sr-steps",
        2,
        "--out",
        t / "grid.png",
    )
    assert (t / "grid.png").is_file()
    for argv, words in (
        (("edit", t / "base", "a dog", "--sr-checkpoint", 1), "cascade tunes"),
        (("edit", t / "full", "a dog", "--sr-checkpoint", 5), "checkpoint 5 is not in"),
        (("grid", t / "base", "a dog", "--rows", "sr_checkpoint"), "needs a cascade tune"),
        (("edit", t / "full", "a dog", "--best-of", 2), "does not rank a cascade"),
        (("tune", photo, "--out", t / "x", "--model", tiny_if[1]), "super-resolution stage"),
        (
            ("tune", photo, "--out", t / "y", "--model", m, "--sr-model", m),
            "not a DeepFloyd IF super-resolution",
        ),
        (
            ("tune", photo, "--out", t / "z", "--model", m, "--patches"),
            "--patches does not combine",
        ),
    ):
        code, out, err = run(*argv)
        assert code == 2 and words in err and err.count("\n") == 1, (argv, err)


def test_stage_three_equals_the_x4_upscaler_on_the_cascades_output(
    tiny_if, untuned, tmp_path, monkeypatch
):
    """--upscaler: the finished edit through StableDiffusionUpscalePipeline, each sample's own
    generator going on from where the two stages left it."""
    from diffusers import StableDiffusionUpscalePipeline

    from tiny_if import build_tiny_x4
    from unitune import upscale
    from unitune.images import tensor_to_pil

    x4 = build_tiny_x4(tmp_path)
    seen = {}
    call = upscale.X4Upscaler.__call__

    def spy(self, images, prompt, negative, gens, steps, noise_level):
        seen["images"], seen["states"] = images, [g.get_state() for g in gens]
        return call(self, images, prompt, negative, gens, steps, noise_level)

    monkeypatch.setattr(upscale.X4Upscaler, "__call__", spy)
    ed = Editor(untuned, "cpu")
    cfg = EditConfig(
        checkpoint=0,
        sr_checkpoint=0,
        steps=4,
        sr_steps=3,
        seeds=(1, 2),
        interpolate=False,
        negative_prompt="blurry",
        upscaler=x4,
        upscale_steps=3,
        upscale_noise_level=50,
    )
    plain = ed.edit(PROMPT, replace(cfg, upscaler=None), progress=False)
    big = ed.edit(PROMPT, cfg, progress=False)
    assert big.pixels.shape == (2, 3, 128, 128) and big.images[0].size == (128, 128)
    assert [im.tobytes() for im in seen["images"]] == [im.tobytes() for im in plain.images]
    gens = [torch.Generator().set_state(st) for st in seen["states"]]
    pipe = StableDiffusionUpscalePipeline.from_pretrained(x4)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        prompt=[PROMPT] * 2,
        image=tensor_to_pil(plain.pixels * 2 - 1),
        negative_prompt=["blurry"] * 2,
        num_inference_steps=3,
        noise_level=50,
        output_type="pt",
        generator=gens,
    ).images
    assert (ref.float() - big.pixels).abs().max().item() < 1e-4
    assert (
        "x4" not in big.params[0]["edit_config"]["upscaler"] or big.params[0]["size"] == "128x128"
    )


def test_exported_loras_of_both_stages_give_the_same_edit_in_the_if_pipelines(
    tiny_if, photo, tmp_path
):
    """`unitune export` of the tune and of its sr/ folder: diffusers-lora files IF's pipelines
    load (load_lora_weights) and sample the cascade's edit with, to 1e-4."""
    from unitune.cli import main

    cfg = TuneConfig(steps=2, save_at=(2,), lr=1e-2, method="lora", lora_rank=4)
    folder = tune(photo, tmp_path / "t", cfg, model=tiny_if[0], device="cpu", progress=False).path
    for src, out in ((folder, "i.safetensors"), (folder / "sr", "ii.safetensors")):
        assert (
            main(
                [
                    "export",
                    str(src),
                    "--format",
                    "diffusers-lora",
                    "--out",
                    str(tmp_path / out),
                    "--quiet",
                ]
            )
            == 0
        )
    ed = Editor(folder, "cpu")
    ec = EditConfig(
        checkpoint=2,
        sr_checkpoint=2,
        t0=0.7,
        sr_t0=0.8,
        steps=6,
        sr_steps=5,
        seeds=(0,),
        interpolate=False,
    )
    ours = ed.edit(PROMPT, ec, progress=False).pixels
    peers = _peers(tiny_if)
    p1, p2 = peers["IFImg2ImgPipeline"], peers["IFImg2ImgSuperResolutionPipeline"]
    p1.load_lora_weights(str(tmp_path / "i.safetensors"))
    p2.load_lora_weights(str(tmp_path / "ii.safetensors"))
    g, text = torch.Generator().manual_seed(0), f"beikkpic {PROMPT}"
    x = p1(
        prompt=text,
        image=pil_to_tensor(ed.base_image),
        strength=0.7,
        num_inference_steps=6,
        guidance_scale=7.0,
        generator=g,
        output_type="pt",
    ).images
    y = p2(
        prompt=text,
        image=x,
        original_image=pil_to_tensor(ed.base_image_at((32, 32))),
        strength=0.8,
        num_inference_steps=5,
        guidance_scale=4.0,
        noise_level=250,
        generator=g,
        output_type="pt",
    ).images
    plain = ed.edit(PROMPT, replace(ec, checkpoint=0, sr_checkpoint=0), progress=False).pixels
    assert (ours - plain).abs().max() > 1e-3  # the LoRAs change the edit
    assert (ours - (y / 2 + 0.5).clamp(0, 1)).abs().max().item() < 1e-4
