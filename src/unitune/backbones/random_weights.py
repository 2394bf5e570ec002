"""Full-size models with random weights, so `unitune bench speed` can time the real
architectures with no download (`--random-weights sd15|sdxl`).

The configurations are those of the released checkpoints (Stable Diffusion 1.5: UNet 860 M
parameters, CLIP ViT-L/14 text encoder, the SD VAE; SDXL base 1.0: UNet 2.6 B parameters with
text-time conditioning, CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 text encoders). Speed and memory
depend on shapes, not on values, so the modules' own random initialization is enough; the CLIP
tokenizer is the real one (unitune.clip_vocab). tests/test_bench.py checks the parameter counts
against the released models' on the meta device.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ARCHS = ("sd15", "sdxl")  # --random-weights choices

_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}

_CLIP_L = {  # CLIP ViT-L/14's text tower: SD 1.x's encoder and SDXL's first
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
_CLIP_G = {  # OpenCLIP ViT-bigG/14's text tower with its projection: SDXL's second encoder
    **_CLIP_L,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def _vae(scaling_factor: float, sample_size: int) -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (128, 256, 512, 512),
        "norm_num_groups": 32,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,  # noqa: E501
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }


UNETS = {
    "sd15": {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    },
    "sdxl": {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280),
        "cross_attention_dim": 2048,
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    },
}
VAES = {"sd15": _vae(0.18215, 512), "sdxl": _vae(0.13025, 1024)}

# parameters of the released checkpoints (UNet, VAE, text encoders), for the test
RELEASED_PARAMS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}


def components(arch: str) -> dict:
    """The pipeline's modules with the modules' default random initialization (fp32, on the
    current default device: under ``torch.device("meta")`` nothing is allocated)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: one of {', '.join(ARCHS)}")
    out = {
        "unet": UNet2DConditionModel(**UNETS[arch]),
        "vae": AutoencoderKL(**VAES[arch]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**_CLIP_L)),
    }
    if arch == "sdxl":
        out["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**_CLIP_G))
    return out


def build(arch: str, folder: str | Path, half: bool = False) -> Path:
    """A diffusers folder of ``arch`` with random weights at ``folder`` (built once: a finished
    folder is reused; SD 1.5 takes about 4.3 GB on disk, SDXL about 14 GB; ``half``: stored in
    fp16, as the released checkpoints are, half that)."""
    import torch
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    from ..clip_vocab import load_clip_tokenizer

    folder = Path(folder)
    done = folder / "random-weights.json"
    tag = {"arch": arch, "dtype": "float16" if half else "float32"}
    if done.is_file() and {k: json.loads(done.read_text()).get(k, "float32") for k in tag} == tag:
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build
    torch.manual_seed(0)
    parts = components(arch)
    if half:
        parts = {k: m.half() for k, m in parts.items()}
    tok = load_clip_tokenizer()
    if arch == "sd15":
        sched = DDIMScheduler(**_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(
            **parts,
            tokenizer=tok,
            scheduler=sched,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        sched = EulerDiscreteScheduler(**_BETAS, timestep_spacing="leading", steps_offset=1)
        pipe = StableDiffusionXLPipeline(**parts, tokenizer=tok, tokenizer_2=tok, scheduler=sched)
    pipe.save_pretrained(folder, safe_serialization=True)
    done.write_text(json.dumps({**tag, "weights": "random (the modules' own init, seed 0)"}))
    return folder
