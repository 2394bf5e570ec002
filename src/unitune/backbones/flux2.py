"""FLUX.2: Flux2Transformer2DModel (double- then single-stream blocks, 4-axis RoPE over time,
row, column and text position) on the FLUX.2 VAE's latents patchified 2x2 and normalised by the
VAE's batch norm; rectified flow (flow.py) on FluxPipeline's sigma grid. Two pipelines:

- ``Flux2Pipeline`` (FLUX.2 [dev]): Mistral Small 3.1 behind its Pixtral processor, hidden
  states 10, 20, 30 stacked; guidance-distilled, the guidance scale an input (as FLUX.1-dev:
  ``extra["guidance"]``, --true-cfg mixes on top).
- ``Flux2KleinPipeline`` (FLUX.2 [klein] 4B / 9B): Qwen3 in its chat template (thinking off),
  hidden states 9, 18, 27; the base models sample with CFG against the empty prompt, the
  step-distilled ones (the pipeline's ``is_distilled``) without it, in 4 steps.

Model space is the pipelines' own: (B, 4C, H/16, W/16), the latents the pipelines draw noise in
and the scheduler steps; one position is one transformer token (``x_embedder`` embeds it), so
``denoise`` only flattens it. The size shift mu is the pipelines' ``compute_empirical_mu``, a
function of the token count AND the step count. Prompts are encoded by the pipelines' own
``encode_prompt`` (padded to 512 tokens; the transformer attends to the padding, as there).
Neither pipeline has an img2img variant: the SDEdit start is the scheduler's ``scale_noise``
(flow.py), as the other flow pipelines start theirs.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu, format_input
from torch import Tensor, nn

from .. import patches
from ..config import FLUX2_KLEIN_DISTILLED_DEFAULTS, ModelDefaults
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .flow import LMFlowBackbone
from .sd import load_backbone

# train_dreambooth_lora_flux2.py / _flux2_klein.py's default target_modules: the double blocks'
# attention and, in every single block, the fused qkv + MLP input and the attention output
# (the scripts list single_transformer_blocks.{i}.attn.to_out for the model's block count)
FLUX2_LORA = ("to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj")
FLUX2_FF = ("ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out")
TRAIN_GUIDANCE = 3.5  # [dev]'s embedded guidance while tuning (the scripts' --guidance_scale)


def patchify(z: Tensor) -> Tensor:
    """(B, C, h, w) VAE latents -> (B, 4C, h/2, w/2), the pipelines' ``_patchify_latents``."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return z.reshape(b, c * 4, h // 2, w // 2)


def unpatchify(x: Tensor) -> Tensor:
    """The inverse of :func:`patchify`."""
    b, c4, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c4 // 4, h * 2, w * 2)


def positions(b: int, h: int, w: int, n_text: int, device) -> tuple[Tensor, Tensor]:
    """(image ids (B, h w, 4) = (0, row, column, 0), text ids (B, n_text, 4) = (0, 0, 0, i)):
    the pipelines' ``_prepare_latent_ids`` / ``_prepare_text_ids``."""
    one = torch.arange(1)
    img = torch.cartesian_prod(one, torch.arange(h), torch.arange(w), one)
    txt = torch.cartesian_prod(one, one, one, torch.arange(n_text))
    return img.expand(b, -1, -1).to(device), txt.expand(b, -1, -1).to(device)


class Flux2Backbone(LMFlowBackbone):
    """FLUX.2 [dev] (``Flux2Pipeline``); :class:`Flux2KleinBackbone` differs in its text
    encoder and guidance only."""

    family = "flux2"
    pipeline_class = "Flux2Pipeline"
    lora_conv_targets = FLUX2_FF
    patch_site = "x_embedder"  # Linear: one patchified latent position -> the width
    linspace_sigmas = True
    vae_class = "AutoencoderKLFlux2"

    @property
    def lora_targets(self) -> tuple[str, ...]:  # type: ignore[override]
        n = self.module.config.num_single_layers
        return FLUX2_LORA + tuple(f"single_transformer_blocks.{i}.attn.to_out" for i in range(n))

    # --- image <-> model space ----------------------------------------------------------------
    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        t = self.token_size
        return (self.module.config.in_channels, hw[0] // t, hw[1] // t)

    def _bn(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of the VAE's batch norm over the patchified channels, (1, 4C, 1, 1)."""
        bn, eps = self.vae.bn, self.vae.config.batch_norm_eps
        mean = bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps)
        return mean.to(like.device, like.dtype), std.to(like.device, like.dtype)

    @torch.no_grad()
    def encode_image(self, pixels: Tensor) -> Tensor:
        with self._visiting(self.vae):
            z = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        x = patchify(z)
        mean, std = self._bn(x)
        return ((x - mean) / std).to(self.dtype)

    @torch.no_grad()
    def decode(self, x0: Tensor) -> Tensor:
        x = x0.to(self.device, self.vae.dtype)
        mean, std = self._bn(x)
        with self._visiting(self.vae):
            return self.vae.decode(unpatchify(x * std + mean)).sample.float()

    # --- schedule: mu from the token count and the step count ---------------------------------
    def _tokens(self, hw: tuple[int, int] | None) -> int:
        h, w = hw or (self.resolution, self.resolution)
        return (h // self.token_size) * (w // self.token_size)

    def _schedule_mu(self, hw: tuple[int, int] | None):
        seq = self._tokens(hw)
        return lambda steps: compute_empirical_mu(image_seq_len=seq, num_steps=steps)

    def _mu(self, hw: tuple[int, int] | None) -> float:
        # training's sigma table: the sampler's shift at the default step count
        return compute_empirical_mu(image_seq_len=self._tokens(hw), num_steps=self.defaults.steps)

    # --- prompts and guidance -----------------------------------------------------------------
    @property
    def guidance_distilled(self) -> bool:
        return bool(self.module.config.guidance_embeds)

    def guidance_weights(self, cfg: float, true_cfg: float) -> tuple[float, float | None]:
        return true_cfg, cfg  # [dev]: --cfg is embedded, --true-cfg mixes

    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        emb, _ = self._encode_with_pipeline(prompts)  # (B, 512, 3 D): padding attended, as there
        extra = {}
        if self.guidance_distilled:
            g = TRAIN_GUIDANCE if guidance is None else guidance
            extra["guidance"] = torch.full((len(prompts),), float(g), device=self.device)
        return Conditioning(emb.to(self.dtype), None, extra)

    def _prompt_ids(self, prompt: str) -> list[int]:
        """Tokens of ``prompt`` as the pipeline feeds its encoder (system message included)."""
        ids = self.tokenizer.apply_chat_template(
            format_input([prompt]), add_generation_prompt=False, tokenize=True, return_dict=True
        )["input_ids"]
        return list(ids[0]) if ids and isinstance(ids[0], list) else list(ids)

    # --- the denoiser -------------------------------------------------------------------------
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        b, c, h, w = x.shape
        patches.set_grid(module, self.patch_site, (h, w))  # SINE's crop box, if tuned
        img_ids, txt_ids = positions(b, h, w, cond.emb.shape[1], x.device)
        out = module(
            hidden_states=x.reshape(b, c, h * w).permute(0, 2, 1),  # (B, h w, 4C) row-major
            encoder_hidden_states=cond.emb,
            timestep=t.expand(b).to(x.dtype) / 1000,  # the transformer takes sigma
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=cond.extra.get("guidance"),
            return_dict=False,
        )[0]
        return out[:, : h * w].permute(0, 2, 1).reshape(b, c, h, w)


class Flux2KleinBackbone(Flux2Backbone):
    """FLUX.2 [klein]: Qwen3 text encoder; CFG (base) or none (step-distilled)."""

    family = "flux2klein"
    pipeline_class = "Flux2KleinPipeline"

    @property
    def step_distilled(self) -> bool:
        return bool(self._pipe_config.get("is_distilled", False))

    def _pipeline_kw(self) -> dict:
        return {"is_distilled": self.step_distilled}

    def model_defaults(self, family: ModelDefaults) -> ModelDefaults:
        return FLUX2_KLEIN_DISTILLED_DEFAULTS if self.step_distilled else family

    def guidance_weights(self, cfg: float, true_cfg: float) -> tuple[float, float | None]:
        w, _ = Backbone.guidance_weights(self, cfg, true_cfg)  # refuses --true-cfg
        return (1.0 if self.step_distilled else w), None  # distilled: the pipeline skips CFG

    def _prompt_ids(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
        return self.tokenizer(text, truncation=False).input_ids


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    cls = Flux2KleinBackbone if spec.family.name == "flux2klein" else Flux2Backbone
    return load_backbone(cls, spec, device, dtype, vae, offload)
