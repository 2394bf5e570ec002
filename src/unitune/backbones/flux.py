"""FLUX.1 (dev, schnell): FluxTransformer2DModel over 2x2-packed latent tokens with rotary
positions, CLIP's pooled embedding + T5 states; rectified flow (flow.py) whose schedule shifts
with the image's token count.

FLUX.1-dev is guidance-distilled: the guidance scale is an INPUT (an embedding), not a second
pass; it rides in the conditioning (``extra["guidance"]``, one value per row) so CFG-style mixes
of several conditionings (prompt guidance, SINE, multi-model) each carry it. True CFG with a
negative prompt (``--true-cfg``) mixes two such predictions on top, as FluxPipeline's
``true_cfg_scale`` does. schnell (timestep-distilled, no guidance embedding) samples in 4 steps.

The sampling loop works on unpacked latents (B, C, h, w); ``denoise`` packs them into tokens
(B, h/2 * w/2, 4C) with their position ids and unpacks the velocity, a permutation, so the
scheduler's element-wise step is the pipeline's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import patches
from ..config import FLUX_SCHNELL_DEFAULTS, ModelDefaults
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .flow import FlowBackbone
from .sd import clip_tokens, load_backbone
from .sd3 import TRANSFORMER_FF

# diffusers' train_dreambooth_lora_flux.py targets, attention only (its default adds the
# feed-forward layers: here --lora-conv); "attn.to_q" etc. also match the single-stream blocks
FLUX_LORA = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
TRAIN_GUIDANCE = 3.5  # dev's embedded guidance while tuning (train_dreambooth_lora_flux.py default)
DEFAULT_SAMPLE_SIZE = 128  # FluxPipeline.default_sample_size: latents per side at native size


def pack(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): 2x2 latent patches as tokens, row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: Tensor, h: int, w: int) -> Tensor:
    """(B, h/2 * w/2, 4C) -> (B, C, h, w), the inverse of :func:`pack`."""
    b, _, d = x.shape
    x = x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> Tensor:
    """(h * w, 3) rotary position ids of an h x w token grid: (0, row, column)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device, dtype)


class FluxBackbone(FlowBackbone):
    family = "flux"
    pipeline_class = "FluxPipeline"
    lora_targets = FLUX_LORA
    lora_conv_targets = TRANSFORMER_FF
    patch_site = "x_embedder"  # Linear: packed latent tokens -> the transformer's width
    linspace_sigmas = True
    default_max_shift = 1.15
    t5_max_length = 512
    _text_names = ("text_encoder", "text_encoder_2")

    def _take_text(self, pipe) -> None:
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self.text_encoder_2, self.tokenizer_2 = pipe.text_encoder_2, pipe.tokenizer_2

    @property
    def distilled(self) -> bool:
        """FLUX.1-dev: the guidance scale is an input of the transformer."""
        return bool(self.module.config.guidance_embeds)

    def model_defaults(self, family: ModelDefaults) -> ModelDefaults:
        # schnell: timestep-distilled for 4 steps, and no guidance input (--cfg has no effect)
        return family if self.distilled else FLUX_SCHNELL_DEFAULTS

    def components(self) -> dict[str, nn.Module]:
        out = {"transformer": self.module, "vae": self.vae}
        if self.text_encoder is not None:
            out |= {"text": self.text_encoder, "text2": self.text_encoder_2}
        return out

    def to_pipeline(self, module: nn.Module):
        import diffusers

        self._need_text()
        return diffusers.FluxPipeline(
            transformer=module,
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
        )

    @property
    def resolution(self) -> int:
        return DEFAULT_SAMPLE_SIZE * self.vae_scale

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (
            self.module.config.in_channels // 4,
            hw[0] // self.vae_scale,
            hw[1] // self.vae_scale,
        )

    def guidance_weights(self, cfg: float, true_cfg: float) -> tuple[float, float | None]:
        # dev: --cfg is embedded, --true-cfg mixes; schnell: only --true-cfg mixes
        return true_cfg, (cfg if self.distilled else None)

    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        self._need_text()
        with self._visiting(self.text_encoder):
            ids, _ = clip_tokens(self.tokenizer, prompts, self.device)
            pooled = self.text_encoder(ids, output_hidden_states=False).pooler_output
        width = self.module.config.joint_attention_dim
        t5 = self._t5(self.tokenizer_2, self.text_encoder_2, prompts, width)
        extra = {}
        if self.distilled:
            g = TRAIN_GUIDANCE if guidance is None else guidance
            extra["guidance"] = torch.full((len(prompts),), float(g), device=self.device)
        return Conditioning(t5, pooled.to(self.dtype), extra)

    def prompt_warning(self, prompt: str) -> str | None:
        self._need_text()
        return self._t5_warning(self.tokenizer_2, prompt) or self._clip_warnings(
            (self.tokenizer,), prompt
        )

    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        b, _, h, w = x.shape
        txt_ids = torch.zeros(cond.emb.shape[1], 3, device=x.device, dtype=x.dtype)
        patches.set_grid(module, self.patch_site, (h // 2, w // 2))  # SINE's crop box, if tuned
        out = module(
            hidden_states=pack(x),
            timestep=t.expand(b).to(x.dtype) / 1000,  # the transformer takes sigma
            guidance=cond.extra.get("guidance"),
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.emb,
            txt_ids=txt_ids,
            img_ids=image_ids(h // 2, w // 2, x.device, x.dtype),
            return_dict=False,
        )[0]
        return unpack(out, h, w)


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    return load_backbone(FluxBackbone, spec, device, dtype, vae, offload)
