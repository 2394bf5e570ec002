"""The embedded model's training settings (:class:`TrainConfig`), shared by train.py and
vae_train.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from .arch import ArchConfig


@dataclass(frozen=True)
class TrainConfig:
    arch: ArchConfig = field(default_factory=ArchConfig)
    seed: int = 0  # seeds weights, scenes, noise and timesteps
    vae_steps: int = 3000  # VAE optimisation steps
    vae_batch: int = 128
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # tiny, as SD's VAE: latents stay detailed, scale set from data
    steps: int = 30000  # UNet + text encoder steps
    batch: int = 256
    lr: float = 4e-4  # AdamW, linear warm-up then cosine to 10%
    warmup: int = 500
    ema: float = 0.9995  # EMA of the weights; the EMA is what gets exported
    p_empty: float = 0.1  # empty-caption drop-out for classifier-free guidance
    # Per-sample loss weight min(1/alpha_bar_t, x0_cap); 0 = the plain epsilon loss. The epsilon
    # loss counts an error in the predicted image x0 times SNR_t, so at t > 600 (SNR < 0.1),
    # where the layout is decided, it barely trains; 1/alpha_bar_t turns it into the
    # v-prediction loss (SD 2's), and the cap stops t ~ 1000 from dominating.
    x0_cap: float = 0.0
    # Weight of the layout read-out loss on the text encoder (embedded/layout.py: per position
    # slot, the colour and shape there); 0 = off. It gives position words a direct gradient.
    layout: float = 0.0
    # Loss weight on object pixels is 1 + object_weight (vae_train.py: objects are a few % of
    # the pixels, and a plain per-pixel loss decodes them as blobs); 0 = plain, as in v1.
    object_weight: float = 0.0
    decoder_steps: int = 0  # stage 1b: decoder-only fine-tune, encoder frozen (0 = skip)
    decoder_batch: int = 32
    decoder_lr: float = 3e-4
    save_every: int = 1000  # steps between resumable states
    workers: int = 0  # data-loader processes (0 = in the main process)
