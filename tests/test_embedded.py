"""The embedded default model: the training smoke test and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from unitune.backbones import SHORT_NAMES, load_model
from unitune.embedded.arch import TINY
from unitune.embedded.train import TrainConfig, train

# every test here loads or tunes a tiny model end to end: out of the fast subset, still in CI
pytestmark = pytest.mark.slow

SHIPPED = SHORT_NAMES["world"]
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _sd_pipeline(path: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(path, safety_checker=None)


def test_training_smoke_saves_resumable_state_and_a_loadable_pipeline(tmp_path):
    cfg = TrainConfig(arch=TINY, vae_steps=2, vae_batch=4, steps=2, batch=4, save_every=1)
    out = train(cfg, tmp_path / "work", tmp_path / "export", device="cpu", progress=False)
    work = tmp_path / "work"
    assert {"vae.safetensors", "diffusion.safetensors", "log.jsonl", "config.json"} <= {
        p.name for p in work.iterdir()
    }
    state = load_file(work / "diffusion.safetensors")
    assert int(state["step"]) == 2 and any(k.startswith("ema.") for k in state)
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any(r["stage"] == "vae" and r.get("done") for r in log)
    # the export is a plain diffusers folder, fp16 safetensors only, with the real CLIP tokenizer
    assert {p.name for p in out.iterdir()} >= {*COMPONENTS, "model_index.json"}
    weights = list(out.rglob("*.safetensors"))
    assert len(weights) == 3 and not list(out.rglob("*.bin"))
    for w in weights:
        with safe_open(w, "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    meta = json.loads((out / "unitune_world.json").read_text())
    assert meta["done"]["diffusion_steps"] == 2 and meta["arch"]["resolution"] == 32
    pipe = _sd_pipeline(out)
    assert pipe.tokenizer.vocab_size == 49408
    img = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="pt").images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    # rerunning resumes: two more steps continue from step 2, the VAE is not retrained (here
    # with the weighted loss, the layout read-out, which joins a state saved without it, and
    # the decoder-only stage)
    cfg3 = TrainConfig(
        arch=TINY,
        vae_steps=2,
        vae_batch=4,
        steps=4,
        batch=4,
        save_every=1,
        x0_cap=50.0,
        layout=0.5,
        object_weight=10.0,
        decoder_steps=2,
        decoder_batch=2,
    )
    train(cfg3, work, tmp_path / "export3", device="cpu", progress=False)
    state = load_file(work / "diffusion.safetensors")
    assert int(state["step"]) == 4 and state["layout.queries"].shape == (9, TINY.text_width)
    with safe_open(tmp_path / "export3" / "text_encoder" / "model.safetensors", "pt") as f:
        assert not any("layout" in k for k in f.keys())  # training-only: never exported
    log2 = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in log2 if r.get("done")) == 1
    # the decoder stage moved the decoder only: the encoder (the latent space) is the VAE's
    vae0, dec = load_file(work / "vae.safetensors"), load_file(work / "decoder.safetensors")
    assert int(dec["step"]) == 2
    enc = [k for k in vae0 if k.startswith(("vae.encoder.", "vae.quant_conv."))]
    assert enc and all(torch.equal(vae0[k], dec[k]) for k in enc)
    assert any(not torch.equal(vae0[k], dec[k]) for k in vae0 if k.startswith("vae.decoder."))
    meta3 = json.loads((tmp_path / "export3" / "unitune_world.json").read_text())
    assert meta3["done"]["decoder_steps"] == 2 and meta3["train"]["object_weight"] == 10.0


def test_train_cli_passes_its_flags_into_the_config(tmp_path):
    from unitune.embedded.train import main

    work = tmp_path / "w"
    assert (
        main(
            [
                "--work",
                str(work),
                "--tiny",
                "--steps",
                "1",
                "--vae-steps",
                "1",
                "--batch",
                "2",
                "--seed",
                "7",
                "--layout",
                "0.5",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    cfg = json.loads((work / "config.json").read_text())
    assert (cfg["seed"], cfg["steps"], cfg["batch"], cfg["layout"]) == (7, 1, 2, 0.5)
    assert int(load_file(work / "diffusion.safetensors")["step"]) == 1


def test_object_weights_cover_objects_and_only_objects():
    import numpy as np

    from unitune.embedded.vae_train import scene_images
    from unitune.world.scene import sample_scene

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, n_objects=1) for _ in range(4)]
    batch = (None, torch.tensor([s.noise for s in scenes]), scenes, None)
    x, w = scene_images(batch, 64, "cpu", torch.Generator().manual_seed(0), object_weight=10.0)
    assert x.shape == (4, 3, 64, 64) and w.shape == (4, 1, 64, 64)
    assert set(w.unique().tolist()) == {1.0, 11.0}
    frac = (w > 1).float().mean(dim=(1, 2, 3))  # one object: a few % of the canvas, never 0
    assert (frac > 0.005).all() and (frac < 0.25).all(), frac
    for s, wi in zip(scenes, w):  # canvas units are pixels at 64 x 64
        o = s.objects[0]
        cx, cy = o.center()
        assert wi[0, 0, 0] == 1.0  # a corner is background
        if o.style != "outline":  # an outline's centre is background too
            assert wi[0, int(cy), int(cx)] == 11.0


def test_shipped_model_is_small_fp16_and_loads_through_diffusers():
    weights = list(SHIPPED.rglob("*.safetensors"))
    total = sum(w.stat().st_size for w in weights)
    assert len(weights) == 3 and total <= 40e6, total  # <= 40 MB of weights
    assert not [p for p in SHIPPED.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    pipe = _sd_pipeline(SHIPPED)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.vae.config.scaling_factor != pytest.approx(0.18215)  # set from data
    g = torch.Generator().manual_seed(0)
    img = pipe(
        "a large red circle on the left, on a grey background",
        num_inference_steps=4,
        generator=g,
        output_type="np",
    ).images
    assert img.shape == (1, 64, 64, 3)


def test_shipped_model_goes_through_unitunes_model_path():
    comp = load_model("world", device="cpu")
    assert comp.resolution == 64 and comp.family == "sd"
    # the real CLIP BPE: the rare token is several sub-word pieces, as with Stable Diffusion
    assert comp.tokenizer.vocab_size == 49408
    assert len(comp.tokenizer("beikkpic").input_ids) - 2 >= 2
    # the same folder by path and by short name is the same model
    by_path = load_model(str(SHIPPED), device="cpu")
    a, b = comp.module.state_dict(), by_path.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_weights_plain_v_and_capped():
    from diffusers import DDPMScheduler

    from unitune.embedded.arch import scheduler_config
    from unitune.embedded.train import loss_weights

    ab = DDPMScheduler.from_config(scheduler_config()).alphas_cumprod
    t = torch.tensor([0, 300, 999])
    assert torch.equal(loss_weights(ab, t, 0.0), torch.ones(3))
    w = loss_weights(ab, t, 50.0)
    assert w[0] == pytest.approx(1 / ab[0].item()) and w[1] == pytest.approx(1 / ab[300].item())
    assert w[2] == 50.0 and 1 / ab[999].item() > 50  # the cap binds only at high t


def test_layout_targets_and_a_bounded_read_out():
    import numpy as np

    from unitune.embedded import layout as L
    from unitune.world.scene import Obj, Scene

    scene = Scene(
        "grey",
        (
            Obj("star", "red", "large", "filled", "left"),
            Obj("heart", "blue", "small", "outline", "top right"),
        ),
    )
    cap, cols, shps = L.layout_caption(scene, np.random.default_rng(0))
    assert "left" in cap and "top right" in cap
    assert cols[L.SLOTS.index("left")] == L.COLOUR_CLASSES.index("red")
    assert shps[L.SLOTS.index("top right")] == L.SHAPE_CLASSES.index("heart")
    assert sum(c > 0 for c in cols) == 2 and sum(s > 0 for s in shps) == 2
    head = L.LayoutHead(16)
    states = torch.randn(2, 77, 16, requires_grad=True)
    lc, ls = head(states * 1000)  # cosine read-out: no scale of the states makes logits larger
    assert lc.shape == (2, 9, 11) and ls.shape == (2, 9, 6)
    assert lc.abs().max() <= L.TEMPERATURE + 1e-4 and ls.abs().max() <= L.TEMPERATURE + 1e-4
    t = torch.tensor([cols, cols]), torch.tensor([shps, shps])
    L.layout_loss(head(states), *t).backward()
    assert states.grad.abs().sum() > 0  # the gradient reaches the text states


def test_evaluate_seeds_and_scores(tiny_model):
    """Sample i of the eval uses seed seed0 + i, whatever the batch it falls in; score() gives
    the oracle's exact reading of rendered eval scenes (the oracle's own accuracy)."""
    from unitune.embedded.evaluate import eval_set, generate, score
    from unitune.world.render import render

    comp = load_model(tiny_model, "cpu")
    items = eval_set()
    assert len(items) == 256 and eval_set()[5][1] == items[5][1]  # fixed captions
    prompts = [c for _, c in items[:6]]
    a = generate(comp, prompts, 3.0, steps=2, batch=4, progress=False)
    b = generate(comp, prompts[3:], 3.0, steps=2, batch=2, seed0=3, progress=False)
    torch.testing.assert_close(a[3:], b, atol=1e-4, rtol=0)
    c = generate(comp, prompts[3:], 3.0, steps=2, batch=2, seed0=4, progress=False)
    assert (c - b).abs().max() > 1e-2  # another seed0 draws other noise
    x = render([s for s, _ in items[:8]], 64)
    sc = score(items[:8], x)
    assert sc["background"] == 1.0 and sc["single_colour"] == 1.0 and sc["single_shape"] == 1.0


def test_shipped_cascade_is_small_fp16_and_loads_in_the_if_pipelines():
    """world-if + world-if-sr: IF folders diffusers' own pipelines run; with the latent model,
    at most 60 MB of files in all."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    base, sr = SHORT_NAMES["world-if"], SHORT_NAMES["world-if-sr"]
    total = sum(p.stat().st_size for d in (SHIPPED, base, sr) for p in d.rglob("*") if p.is_file())
    assert total <= 60e6, total
    for d in (base, sr):
        with safe_open(str(d / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert json.loads((base / "unitune_cascade.json").read_text())["sr_model"] == "world-if-sr"
    none = dict(
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False
    )
    p1 = IFPipeline.from_pretrained(base, **none)
    p2 = IFSuperResolutionPipeline.from_pretrained(sr, text_encoder=None, **none)
    p1.set_progress_bar_config(disable=True)
    p2.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    emb, neg = p1.encode_prompt(
        "a red circle on a white background", do_classifier_free_guidance=True
    )
    low = p1(
        prompt_embeds=emb,
        negative_prompt_embeds=neg,
        num_inference_steps=8,
        generator=g,
        output_type="pt",
    ).images
    hi = p2(
        image=low,
        prompt_embeds=emb,
        negative_prompt_embeds=neg,
        num_inference_steps=8,
        generator=g,
        output_type="pt",
    ).images
    assert low.shape == (1, 3, 16, 16) and hi.shape == (1, 3, 64, 64) and hi.isfinite().all()


def test_cascade_trainer_smoke_resumes_and_exports(tmp_path):
    """Two iterations, then two more from the saved state; the export loads as the pipelines."""
    from dataclasses import replace

    from diffusers import IFSuperResolutionPipeline

    from unitune.embedded.cascade import CascadeConfig
    from unitune.embedded.cascade import train as train_cascade

    cfg = replace(CascadeConfig(), steps=2, batch=2, sr_batch=1, save_every=1)
    assert train_cascade(cfg, tmp_path / "w", None, progress=False)["steps"] == 2
    with safe_open(str(tmp_path / "w" / "cascade.safetensors"), "pt") as f:
        assert int(f.get_tensor("step")) == 2
    done = train_cascade(replace(cfg, steps=4), tmp_path / "w", tmp_path / "out", progress=False)
    assert done["steps"] == 4
    assert json.loads((tmp_path / "w" / "config.json").read_text())["steps"] == 4
    sr = IFSuperResolutionPipeline.from_pretrained(
        tmp_path / "out" / "world-if-sr",
        text_encoder=None,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    assert sr.unet.config.in_channels == 6 and sr.unet.config.class_embed_type == "timestep"
