"""Architecture of the embedded world model: Stable Diffusion's three components, shrunk.

Sized for <= 40 MB of fp16 weights in total. The token embedding table keeps all 49,408 CLIP
rows (any prompt must tokenize to valid ids), so the text encoder is narrow (96 wide).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchConfig:
    resolution: int = 64  # pixels; latents are resolution / 4
    vae_channels: tuple[int, ...] = (32, 64, 64)  # 3 levels -> downsampling factor 4
    latent_channels: int = 4  # as SD
    unet_channels: tuple[int, ...] = (64, 128, 160)  # 16x16, 8x8, 4x4 latent levels
    unet_layers: int = 2  # ResNet blocks per level
    attention_heads: int = 8  # per cross-attention layer (diffusers' attention_head_dim)
    text_width: int = 96  # text encoder hidden size = cross-attention dim
    text_layers: int = 4
    text_heads: int = 4
    norm_groups: int = 32

    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)


TINY = ArchConfig(
    resolution=32,
    vae_channels=(8, 16, 16),
    unet_channels=(16, 32, 32),
    unet_layers=1,
    attention_heads=2,
    text_width=16,
    text_layers=1,
    text_heads=2,
    norm_groups=8,
)  # for smoke tests


def build_vae(a: ArchConfig):
    from diffusers import AutoencoderKL

    n = len(a.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=a.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=a.latent_channels,
        layers_per_block=1,
        norm_num_groups=a.norm_groups,
        sample_size=a.resolution,
    )


def build_unet(a: ArchConfig):
    from diffusers import UNet2DConditionModel

    n = len(a.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=a.latent_size(),
        in_channels=a.latent_channels,
        out_channels=a.latent_channels,
        block_out_channels=a.unet_channels,
        layers_per_block=a.unet_layers,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=a.text_width,
        attention_head_dim=a.attention_heads,
        norm_num_groups=a.norm_groups,
    )


def build_text_encoder(a: ArchConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=a.text_width,
            intermediate_size=4 * a.text_width,
            num_hidden_layers=a.text_layers,
            num_attention_heads=a.text_heads,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def scheduler_config() -> dict:
    """Stable Diffusion 1.x's noise schedule, as a DDIM scheduler (what the pipeline loads)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    }
