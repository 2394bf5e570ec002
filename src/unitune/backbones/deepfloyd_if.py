"""DeepFloyd IF: a pixel-space cascade, the open model of Imagen's class (UniTune's own backbone).

Stage I (``IFBackbone``): a UNet2DConditionModel on pixels at 64 px (the embedded ``world-if``:
16 px), T5 conditioning (``IFPipeline.encode_prompt``: 77 tokens, with the attention mask), and a
learned variance: the network predicts [eps, v] (6 channels). Stage II (``IFSRBackbone``): the
super-resolution UNet (64 -> 256; embedded 16 -> 64) whose input is the noisy image concatenated
with the low-resolution image upscaled bilinearly and noise-augmented, the augmentation level as
its class label. Both sample with the pipelines' DDPM (learned-range variances, dynamic
thresholding) or with DDIM on the eps half.

Learned variance across the seam: ``denoise`` returns all 6 channels; guidance mixes the eps half
and keeps the positive prediction's variance (guidance.keep_variance, as IF's pipelines do);
training takes the hybrid loss (learned_variance.py), so v stays trained and the scheduler keeps
``learned_range`` after a tune (diffusers' DreamBooth scripts switch to ``fixed_small`` because
they train the eps half only).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import Geometry
from ..learned_variance import hybrid_loss
from . import ModelSpec
from .base import Backbone, Conditioning
from .sd import SDBackbone, _collect, _NoVisit, _Visit, load_backbone

SAMPLER_CLASSES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler"}
# IF's attention layers are AttnAddedKV (self-attention with the text as added keys / values):
# LoRA on the projections and the added ones, as diffusers' train_dreambooth_lora.py does for IF
IF_LORA = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
MAX_LENGTH = 77  # IFPipeline.encode_prompt's max_length


class _EpsOnly:
    """A scheduler without learned variances (DDIM) stepping on the eps half of [eps, v]."""

    def __init__(self, scheduler) -> None:
        self._s = scheduler

    def __getattr__(self, name: str):
        return getattr(self._s, name)

    def step(self, model_output: Tensor, t, sample: Tensor, *args, **kwargs):
        return self._s.step(model_output[:, : sample.shape[1]], t, sample, *args, **kwargs)


class IFBackbone(SDBackbone):
    """IF stage I: an epsilon UNet as SD's (its training noise, target and timesteps are SD's),
    on pixels, with T5. The pipeline's pieces: unet, text_encoder, tokenizer, scheduler."""

    family = "if"
    pipeline_class = "IFPipeline"
    lora_targets = IF_LORA
    samplers = tuple(SAMPLER_CLASSES)

    def __init__(
        self, pipe, spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> None:
        super().__init__(pipe, spec, device, dtype, offload)
        self._pipe = pipe  # encode_prompt: IF's caption cleaning and T5 call, exactly

    def original_layout(self, module: nn.Module) -> dict[str, Tensor]:
        raise NotImplementedError("DeepFloyd IF has no single-file layout")

    def components(self) -> dict[str, nn.Module]:
        out = {"unet": self.module}
        if self.text_encoder is not None:
            out["text"] = self.text_encoder
        return out

    def _parts(self) -> dict[str, Any]:
        none = dict(safety_checker=None, feature_extractor=None, watermarker=None)
        return dict(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            scheduler=self.scheduler,
            requires_safety_checker=False,
            **none,
        )

    def to_pipeline(self, module: nn.Module):
        import diffusers

        return getattr(diffusers, self.pipeline_class)(unet=module, **self._parts())

    # --- image <-> model space: pixels are the model space -------------------------------------
    @property
    def resolution(self) -> int:
        size = self.module.config.sample_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.module.config.block_out_channels) - 1)

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (self.module.config.out_channels // 2, hw[0], hw[1])

    def encode_image(self, pixels: Tensor) -> Tensor:
        return pixels.to(self.device, self.dtype)

    def decode(self, x0: Tensor) -> Tensor:
        return x0.float()

    # --- prompts ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        if self.text_encoder is None:
            raise RuntimeError("the text encoder was freed (free_text_encoders): reload the model")
        self._pipe.text_encoder = self.text_encoder
        with _Visit(self.text_encoder, self.device) if self.offload else _NoVisit():
            emb, _ = self._pipe.encode_prompt(
                prompts, do_classifier_free_guidance=False, device=self.device, clean_caption=True
            )
        return Conditioning(emb.to(self.dtype))

    def prompt_warning(self, prompt: str) -> str | None:
        if self.tokenizer is None:
            return None
        ids = self.tokenizer(prompt.lower().strip(), truncation=False).input_ids
        if len(ids) <= MAX_LENGTH:
            return None
        return (
            f"prompt is {len(ids)} T5 tokens, the model takes {MAX_LENGTH}: "
            f"dropped {self.tokenizer.decode(ids[MAX_LENGTH - 1 : -1])!r} — shorten it"
        )

    def free_text_encoders(self) -> None:
        self.text_encoder = self._pipe.text_encoder = None
        _collect(self.device)

    # --- the denoiser -------------------------------------------------------------------------
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return module(x, t, encoder_hidden_states=cond.emb).sample  # (B, 6, H, W): [eps, v]

    def loss(self, pred: Tensor, target: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        ab = self.train_scheduler.alphas_cumprod
        return hybrid_loss(ab, pred, target, x0.expand_as(x_t), x_t, t)

    # --- schedule -----------------------------------------------------------------------------
    def make_scheduler(self, sampler: str, hw: tuple[int, int] | None = None):
        import diffusers

        self.check_sampler(sampler)
        sched = getattr(diffusers, SAMPLER_CLASSES[sampler]).from_config(self.scheduler_config)
        learned = sched.config.get("variance_type") in ("learned", "learned_range")
        return sched if sampler == "ddpm" and learned else _EpsOnly(sched)

    def inverse_scheduler(self, scheduler):
        # DDIM inversion on the eps half of [eps, v] (the learned variances play no part in DDIM)
        return _EpsOnly(super().inverse_scheduler(scheduler))


class IFSRBackbone(IFBackbone):
    """IF stage II: conditioned on a low-resolution image (``condition`` / ``with_low``)."""

    family = "if_sr"
    pipeline_class = "IFSuperResolutionPipeline"
    aug_max = 500  # tuning draws noise-augmentation levels uniform in [0, aug_max)

    def __init__(
        self, pipe, spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> None:
        super().__init__(pipe, spec, device, dtype, offload)
        self.noising = pipe.image_noising_scheduler

    def _parts(self) -> dict[str, Any]:
        return {**super()._parts(), "image_noising_scheduler": self.noising}

    def upscaled(self, low: Tensor, hw: tuple[int, int]) -> Tensor:
        """(B, 3, h, w) -> (B, 3, H, W) as the pipeline upscales stage I's output."""
        return F.interpolate(low.float(), hw, mode="bilinear", align_corners=True).to(self.dtype)

    def condition(
        self, cond: Conditioning, low: Tensor, level: int | Tensor, noise: Tensor
    ) -> Conditioning:
        """``cond`` (B rows) + the low-res images (B, 3, h, w) upscaled to noise's size and noised
        with ``noise`` (B, 3, H, W) to augmentation ``level`` (one, or (B,) levels)."""
        up = self.upscaled(low.to(self.device), tuple(noise.shape[-2:]))
        lv = torch.as_tensor(level, device=self.device).expand(up.shape[0])
        up = self.noising.add_noise(up, noise.to(up), lv)
        return Conditioning(cond.emb, cond.pooled, {**cond.extra, "up": up, "level": lv})

    def with_low(self, cond: Conditioning, low: Tensor) -> Conditioning:
        """For tuning: the clean low-res image rides along; ``training_cond`` noises it per step."""
        return Conditioning(
            cond.emb, cond.pooled, {**cond.extra, "low": low.to(self.device, self.dtype)}
        )

    def training_cond(
        self, cond: Conditioning, gen: torch.Generator, hw: tuple[int, int]
    ) -> Conditioning:
        """Noise augmentation as in the SR model's training: a level per sample, fresh noise."""
        extra = dict(cond.extra)
        low = extra.pop("low")
        b = len(cond)
        level = torch.randint(0, self.aug_max, (b,), generator=gen)
        noise = torch.randn((b, 3, *hw), generator=gen).to(self.device, self.dtype)
        return self.condition(
            Conditioning(cond.emb, cond.pooled, extra), low.expand(b, -1, -1, -1), level, noise
        )

    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        inp = torch.cat([x, cond.extra["up"].to(x.dtype)], dim=1)
        return module(
            inp, t, encoder_hidden_states=cond.emb, class_labels=cond.extra["level"]
        ).sample


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    """Load an IF stage (I, or II for a super-resolution pipeline); IF has no VAE."""
    if vae is not None:
        from ..errors import UserError

        raise UserError("--vae: DeepFloyd IF works on pixels and has no VAE", "drop --vae")
    extra: dict[str, Any] = dict(
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False
    )
    if spec.family.upscaler:  # the base stage's T5 encodes for both (IF's usage): not loaded twice
        return load_backbone(
            IFSRBackbone, spec, device, dtype, None, offload, text_encoder=None, **extra
        )
    return load_backbone(IFBackbone, spec, device, dtype, None, offload, **extra)
