"""Shared fixtures: tiny seeded models of each family unitune drives (the same architectures as
SD 1.x, SD 2.x v-prediction and SDXL, random weights, the real CLIP tokenizer; SD3 and FLUX from
tiny_flow.py, DeepFloyd IF's two stages from tiny_if.py), saved as diffusers folders, each built
once per run — nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY_RES = 32  # pixels; UNet sample_size 8 x VAE factor 4

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2`: one torch thread per worker, and per process a test starts (the server, the
    # CLI, the bench's children), so the workers do not fight over the cores: the tiny models gain
    # nothing from a second thread, and oversubscribed threads made them many times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _tiny_unet(seed: int, **kw):
    """A two-level UNet2DConditionModel at the tiny resolution; ``kw``: the family's blocks."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=TINY_RES // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        **kw,
    )


def _tiny_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RES,
        # random encoder latents have std ~0.18: scale them to ~unit variance, as SD's 0.18215
        # does for its trained VAE, so the diffusion sees a signal and not only noise
        scaling_factor=5.0,
    )


def _tiny_clip_config(hidden: int = 16, **kw):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **kw,
    )


def _tiny_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_sdxl_pipeline(seed: int = 0):
    """SDXL's architecture in small: the UNet with added text-time conditioning (pooled
    embedding + 6 time ids), CLIPTextModel + CLIPTextModelWithProjection."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from unitune.clip_vocab import load_clip_tokenizer

    unet = _tiny_unet(
        seed,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=40,  # 16 (encoder 1) + 24 (encoder 2), concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16,  # time ids + pooled projection
    )
    vae = _tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    te = CLIPTextModel(_tiny_clip_config())
    torch.manual_seed(seed + 3)
    # wider than the first, as SDXL's are (768 / 1280): single-file loaders tell them apart so
    te2 = CLIPTextModelWithProjection(_tiny_clip_config(24, projection_dim=16))
    tok = load_clip_tokenizer()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=_tiny_scheduler(),
    )


def build_tiny_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    from diffusers import (
        StableDiffusionPipeline,
    )
    from transformers import CLIPTextModel

    from unitune.clip_vocab import load_clip_tokenizer

    unet = _tiny_unet(
        seed,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    vae = _tiny_vae(seed + 1)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_tiny_clip_config())
    scheduler = _tiny_scheduler(prediction_type)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _saved(factory, name: str, pipe) -> str:
    path = factory.mktemp(name)
    pipe.save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="package")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny SD model folder (safetensors)."""
    return _saved(tmp_path_factory, "tiny-sd", build_tiny_pipeline())


@pytest.fixture(scope="package")
def tiny_sd2(tmp_path_factory) -> str:
    """SD 2.x's v-prediction in small (same UNet layout, v_prediction scheduler)."""
    return _saved(tmp_path_factory, "tiny-sd2", build_tiny_pipeline(prediction_type="v_prediction"))


@pytest.fixture(scope="package")
def tiny_sdxl(tmp_path_factory) -> str:
    return _saved(tmp_path_factory, "tiny-sdxl", build_tiny_sdxl_pipeline())


@pytest.fixture(scope="package")
def tiny_sd3(tmp_path_factory) -> str:
    from tiny_flow import build_tiny_sd3_pipeline

    return _saved(tmp_path_factory, "tiny-sd3", build_tiny_sd3_pipeline())


@pytest.fixture(scope="package")
def tiny_flux(tmp_path_factory) -> str:
    """FLUX.1-dev in small (guidance-distilled: a guidance embedding)."""
    from tiny_flow import build_tiny_flux_pipeline

    return _saved(tmp_path_factory, "tiny-flux", build_tiny_flux_pipeline())


@pytest.fixture(scope="package")
def tiny_zimage(tmp_path_factory) -> str:
    """Z-Image in small (Qwen3 text encoder, a trained Qwen2Tokenizer)."""
    from tiny_lm_dit import build_tiny_zimage_pipeline

    return _saved(tmp_path_factory, "tiny-zimage", build_tiny_zimage_pipeline())


@pytest.fixture(scope="package")
def tiny_qwenimage(tmp_path_factory) -> str:
    """Qwen-Image in small (Qwen2.5-VL text encoder, the causal 3-D VAE)."""
    from tiny_lm_dit import build_tiny_qwenimage_pipeline

    return _saved(tmp_path_factory, "tiny-qwenimage", build_tiny_qwenimage_pipeline())


@pytest.fixture(scope="package")
def tiny_flux2klein(tmp_path_factory) -> str:
    """FLUX.2 [klein] base in small (Qwen3 text encoder, the batch-normed VAE)."""
    from tiny_flux2 import build_tiny_flux2_klein_pipeline

    return _saved(tmp_path_factory, "tiny-flux2klein", build_tiny_flux2_klein_pipeline())


@pytest.fixture(scope="package")
def tiny_flux2(tmp_path_factory) -> str:
    """FLUX.2 [dev] in small (guidance-distilled, Mistral 3 text encoder)."""
    from tiny_flux2 import build_tiny_flux2_dev_pipeline

    return _saved(tmp_path_factory, "tiny-flux2", build_tiny_flux2_dev_pipeline())


@pytest.fixture(scope="package")
def tiny_if(tmp_path_factory) -> tuple[str, str]:
    """DeepFloyd IF in small: (stage I, stage II) folders; stage I names its SR partner, so a tune
    of it is a cascade tune unless ``cascade=False``."""
    from tiny_if import build_tiny_if

    return build_tiny_if(tmp_path_factory.mktemp("tiny-if"))


@pytest.fixture(scope="package")
def tiny_models(
    tiny_model,
    tiny_sd2,
    tiny_sdxl,
    tiny_sd3,
    tiny_flux,
    tiny_zimage,
    tiny_qwenimage,
    tiny_flux2klein,
    tiny_flux2,
) -> dict[str, str]:
    """Every family's tiny model folder by name: sd1 (epsilon), sd2v (v-prediction), sdxl, and
    the rectified-flow sd3, flux (dev), zimage, qwenimage, flux2klein (base) and flux2 (dev)."""
    return {
        "sd1": tiny_model,
        "sd2v": tiny_sd2,
        "sdxl": tiny_sdxl,
        "sd3": tiny_sd3,
        "flux": tiny_flux,
        "zimage": tiny_zimage,
        "qwenimage": tiny_qwenimage,
        "flux2klein": tiny_flux2klein,
        "flux2": tiny_flux2,
    }


@pytest.fixture(scope="package")
def photo(tmp_path_factory) -> str:
    """A small real photo (scikit-image's chelsea the cat), center region, as PNG."""
    from skimage import data

    arr = data.chelsea()  # (300, 451, 3) uint8
    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return str(path)


@pytest.fixture(scope="package")
def tuned(tiny_model, photo, tmp_path_factory) -> Path:
    """A 4-step tune of the tiny model (checkpoints 2 and 4) through the CLI; read-only."""
    from unitune.cli import main

    out = tmp_path_factory.mktemp("cli") / "tune"
    code = main(
        [
            "tune",
            photo,
            "--model",
            tiny_model,
            "--out",
            str(out),
            "--steps",
            "4",
            "--save-at",
            "2,4",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="package")
def demo_photo(tmp_path_factory) -> str:
    """The demo's photo: its scene of the embedded model's world, rendered at 64 px."""
    from unitune.demo import SCENE
    from unitune.world.render import render, to_pil

    path = tmp_path_factory.mktemp("demo") / "scene.png"
    to_pil(render([SCENE], 64)[0]).save(path)
    return str(path)


def small_tune(tmp_path_factory, tiny_model, photo, name: str, **kw) -> Path:
    """A 2-step tune of the tiny model (checkpoint 2) with settings ``kw``."""
    from unitune.config import TuneConfig
    from unitune.tune import tune

    out = tmp_path_factory.mktemp("sine") / name
    cfg = TuneConfig(steps=2, save_at=(2,), **kw)
    tune(photo, out, cfg, model=tiny_model, device="cpu", progress=False)
    return out


# SINE's three kinds of tune, shared by test_guiders, test_state and test_edit; read-only
@pytest.fixture(scope="package")
def lora_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return small_tune(
        tmp_path_factory, tiny_model, photo, "lora", method="lora", lora_rank=4, lr=1e-2
    )


@pytest.fixture(scope="package")
def full_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return small_tune(tmp_path_factory, tiny_model, photo, "full", lr=1e-3, class_noun="cat")


@pytest.fixture(scope="package")
def patch_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return small_tune(tmp_path_factory, tiny_model, photo, "patch", patches=True, lr=1e-2)
