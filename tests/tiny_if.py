"""Tiny seeded random-weight DeepFloyd IF stages for tests: IF's real blocks (ResNet down/up-
sampling, attention with added text keys and values, the pooled text in the time embedding,
scale-shift norms, learned variances) at toy sizes, the T5 encoder and tokenizer of tiny_flow.

Stage I works at 8 px; stage II upscales 8 -> 32 px (IF's factor 4), its low-resolution input
concatenated to the noisy image and the augmentation level as a timestep-embedded class label.
The stage I folder names its SR partner (``unitune_cascade.json``), as the embedded cascade does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BASE_RES, SR_RES = 8, 32


def _unet(seed: int, sr: bool):
    from diffusers import UNet2DConditionModel

    from tiny_flow import T5_DIM

    extra = (
        dict(
            class_embed_type="timestep",
            mid_block_scale_factor=1.414,
            time_embedding_act_fn="gelu",
            time_embedding_dim=32,
        )
        if sr
        else {}
    )
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=SR_RES if sr else BASE_RES,
        layers_per_block=[1, 2] if sr else 1,
        block_out_channels=[32, 64],
        in_channels=6 if sr else 3,
        out_channels=6,
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        cross_attention_dim=32,
        encoder_hid_dim=T5_DIM,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **extra,
    )


def _scheduler(**kw):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", **kw)


def _learned():
    return _scheduler(
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.0,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def build_tiny_if(folder: Path, seed: int = 0) -> tuple[str, str]:
    """Save a tiny IF stage I (IFPipeline) and stage II (IFSuperResolutionPipeline) under
    ``folder``; returns their paths. Both hold the same T5, as IF's stage folders do."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    from tiny_flow import _tiny_t5, build_t5_tokenizer

    tok = build_t5_tokenizer(77)
    te = _tiny_t5(seed + 1, len(tok))
    none = dict(
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False
    )
    base = IFPipeline(
        tokenizer=tok, text_encoder=te, unet=_unet(seed, False), scheduler=_learned(), **none
    )
    sr = IFSuperResolutionPipeline(
        tokenizer=tok,
        text_encoder=te,
        unet=_unet(seed + 2, True),
        scheduler=_learned(),
        image_noising_scheduler=_scheduler(),
        **none,
    )
    paths = str(folder / "if-i"), str(folder / "if-ii")
    base.save_pretrained(paths[0], safe_serialization=True)
    sr.save_pretrained(paths[1], safe_serialization=True)
    (Path(paths[0]) / "unitune_cascade.json").write_text(json.dumps({"sr_model": paths[1]}))
    return paths


def build_tiny_x4(folder: Path, seed: int = 0) -> str:
    """A tiny StableDiffusionUpscalePipeline (diffusers' own test sizes): the x4 stage III."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    from tiny_flow import _tiny_clip
    from unitune.clip_vocab import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=(True, True, False),
        num_class_embeds=100,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
    )
    pipe = StableDiffusionUpscalePipeline(
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        vae=vae,
        text_encoder=_tiny_clip(seed + 2, 32, False),
        tokenizer=load_clip_tokenizer(),
        max_noise_level=350,
    )
    path = str(folder / "x4")
    pipe.save_pretrained(path, safe_serialization=True)
    return path
