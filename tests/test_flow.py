"""The rectified-flow families beyond what test_families checks for every family: the memory
options (int8 base weights under a LoRA tune) and the flow schedule's pieces."""

from __future__ import annotations

import pytest
import torch

from unitune.backbones import load_model
from unitune.config import Acceleration, EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.errors import UserError
from unitune.tune import tune

# every test here loads or tunes a tiny model end to end: out of the fast subset, still in CI
pytestmark = pytest.mark.slow

INT8 = Acceleration(quantize="int8")


@pytest.mark.parametrize("family", ["sd3", "flux", "zimage", "qwenimage", "flux2klein", "flux2"])
def test_int8_base_predicts_close_to_the_float_one(family, tiny_models):
    """Quantizing the transformer's linear weights changes its velocity only slightly."""
    pytest.importorskip("torchao")
    ref, q = (
        load_model(tiny_models[family], "cpu"),
        load_model(tiny_models[family], "cpu", accel=INT8),
    )
    to_q = next(m for n, m in q.module.named_modules() if n.endswith("to_q"))
    assert type(to_q.weight).__name__ != "Parameter"
    assert q.digest == ref.digest  # the id of the weights as loaded, not as quantized
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, *ref.latent_shape((32, 32))), generator=gen)
    t = torch.tensor([700.0, 300.0])
    cond = ref.encode(["a cat", "a dog"], None)
    a, b = ref.denoise(ref.module, x, t, cond), q.denoise(q.module, x, t, cond)
    assert not torch.equal(a, b) and (a - b).norm() / a.norm() < 0.05


def test_int8_lora_tune_learns_and_edits(tiny_models, photo, tmp_path):
    pytest.importorskip("torchao")
    out = tmp_path / "q"
    folder = tune(
        photo,
        out,
        TuneConfig(steps=16, save_at=(4, 16), lr=1e-3, resolution=32),
        model=tiny_models["flux"],
        device="cpu",
        progress=False,
        accel=INT8,
    )
    m = folder.manifest
    assert m.quantize == "int8" and m.settings.method == "lora"
    assert m.checkpoints[16].loss < m.checkpoints[4].loss
    ed = Editor(out, "cpu", accel=INT8)
    res = ed.edit("a cat", EditConfig(steps=3, seeds=(0,), t0=0.8), progress=False)
    assert torch.isfinite(res.latents).all() and res.images[0].size == (32, 32)


def test_int8_refuses_a_full_tune_before_loading(tiny_models, photo, tmp_path, capsys):
    from unitune.cli import main

    with pytest.raises(UserError, match="LoRA"):
        tune(
            photo, tmp_path / "t", TuneConfig(method="full"), model=tiny_models["flux"], accel=INT8
        )
    code = main(
        [
            "tune",
            photo,
            "--model",
            tiny_models["sdxl"],
            "--out",
            str(tmp_path / "c"),
            "--quantize",
            "int8",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "LoRA" in err and err.count("\n") == 1
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_flow_training_sigmas_follow_the_schedulers(tiny_models):
    """SD3's table carries its static shift (3.0); FLUX's shifts with the training size."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sd3 = load_model(tiny_models["sd3"], "cpu")
    ref = FlowMatchEulerDiscreteScheduler.from_config(sd3.scheduler_config).sigmas  # (1000,)
    assert torch.allclose(sd3.train_sigmas(), ref.float(), atol=1e-6)
    flux = load_model(tiny_models["flux"], "cpu")
    small, big = flux.train_sigmas((32, 32)), flux.train_sigmas((1024, 1024))
    assert (big[1:-1] > small[1:-1]).all()  # more tokens: a larger shift toward noise
    gen = torch.Generator().manual_seed(0)
    t = sd3.sample_timesteps(4096, gen, "logit_normal")
    assert (
        0 < t.min() and t.max() <= 1000 and abs(t.median().item() / 1000 - 0.75) < 0.05
    )  # 3s/(1+2s) at s = 0.5


def test_sd3_heun_equals_the_pipeline_with_heun(tiny_models, photo, tmp_path):
    """The second flow sampler on a fixed-shift model; FLUX (size shift) offers Euler only."""
    import diffusers
    import numpy as np

    tune(
        photo,
        tmp_path / "u",
        TuneConfig(steps=0, resolution=32),
        model=tiny_models["sd3"],
        device="cpu",
        progress=False,
    )
    ed = Editor(tmp_path / "u", "cpu")
    ec = EditConfig(
        checkpoint=0, t0=0.6, cfg=4.0, steps=8, seeds=(0, 3), interpolate=False, sampler="heun"
    )
    ours = ed.edit("a cat", ec, progress=False).pixels.permute(0, 2, 3, 1).numpy()
    pipe = diffusers.StableDiffusion3Img2ImgPipeline.from_pretrained(tiny_models["sd3"])
    pipe.scheduler = diffusers.FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        image=ed.folder.base_latents().repeat(2, 1, 1, 1),
        strength=0.6,
        prompt=["beikkpic a cat"] * 2,
        guidance_scale=4.0,
        num_inference_steps=8,
        height=32,
        width=32,
        output_type="np",
        generator=[torch.Generator("cpu").manual_seed(s) for s in (0, 3)],
    ).images
    assert np.abs(ours - ref).max() < 1e-4
    assert load_model(tiny_models["flux"], "cpu").samplers == ("euler",)
