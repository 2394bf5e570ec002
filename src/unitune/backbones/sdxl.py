"""Stable Diffusion XL (the base model): the SD UNet with SDXL's added conditioning, two CLIP
text encoders (CLIPTextModel + CLIPTextModelWithProjection), 1024 px native.

Conditioning, as ``StableDiffusionXLPipeline.encode_prompt`` makes it: each encoder's
penultimate hidden states, concatenated along the feature axis (B, 77, 768 + 1280); the second
encoder's projected pooled embedding (B, 1280); and the added time ids (B, 6) = original size,
crop top-left, target size, built from the image's :class:`Geometry` (the photo's size before
fitting and where it was cropped), so tuning and editing condition on the photo as SDXL was
trained to. An empty negative prompt is all zeros when the model's config says
``force_zeros_for_empty_prompt`` (as the pipeline does without a negative prompt).

The SDXL VAE overflows in fp16: with fp16 weights it decodes and encodes in fp32 (its
``force_upcast``), or ``--vae`` swaps in another VAE (e.g. an fp16-fixed one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .sd import SDBackbone, _collect, clip_tokens, clip_warning, load_backbone


class SDXLBackbone(SDBackbone):
    family = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"

    def _take_text(self, pipe) -> None:
        if pipe.text_encoder is None or pipe.text_encoder_2 is None:
            raise UserError(
                f"{self.model_ref!r} has no second text encoder pair (an SDXL refiner?)",
                "unitune tunes the SDXL base model; pass a base model folder",
            )
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self.text_encoder_2, self.tokenizer_2 = pipe.text_encoder_2, pipe.tokenizer_2
        self.force_zeros = bool(pipe.config.get("force_zeros_for_empty_prompt", True))

    def components(self) -> dict[str, nn.Module]:
        out = {"unet": self.module, "vae": self.vae}
        if self.text_encoder is not None:
            out |= {"text": self.text_encoder, "text2": self.text_encoder_2}
        return out

    def to_pipeline(self, module: nn.Module):
        import diffusers

        self._need_text()
        return diffusers.StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2,
            tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2,
            unet=module,
            scheduler=self.scheduler,
            force_zeros_for_empty_prompt=self.force_zeros,
        )

    def original_layout(self, module: nn.Module) -> dict[str, Tensor]:
        """The model in SDXL's original single-file layout (both text encoders under
        ``conditioner.embedders``, the second in OpenCLIP's names)."""
        from .ldm_layout import clip_to_ldm, open_clip_to_ldm

        self._need_text()
        te1 = clip_to_ldm(self.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        te2 = open_clip_to_ldm(self.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
        return self._ldm_unet_vae(module) | te1 | te2

    def _vae_dtype(self) -> torch.dtype:
        # the SDXL VAE's activations overflow fp16: run it in fp32 unless it says it is safe
        if self.vae.dtype == torch.float16 and self.vae.config.get("force_upcast", True):
            self.vae.to(torch.float32)
        return self.vae.dtype

    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        self._need_text()
        embs, pooled = [], None
        for tok, te in (
            (self.tokenizer, self.text_encoder),
            (self.tokenizer_2, self.text_encoder_2),
        ):
            with self._visiting(te):
                ids, _ = clip_tokens(tok, prompts, self.device)
                out = te(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # the projection model's pooled output (the second encoder)
                pooled = out[0]
            embs.append(out.hidden_states[-2])
        emb = torch.cat(embs, dim=-1).to(self.dtype)
        n = len(prompts)
        return Conditioning(emb, pooled.to(self.dtype), {"time_ids": self.time_ids(geometry, n)})

    def encode_negative(
        self, prompt: str, geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        if prompt == "" and self.force_zeros:  # the pipeline's zeros for "no negative prompt"
            c = self.encode([""], geometry)
            return Conditioning(torch.zeros_like(c.emb), torch.zeros_like(c.pooled), c.extra)
        return self.encode([prompt], geometry)

    def time_ids(self, geometry: Geometry | None, n: int) -> Tensor:
        """(n, 6): original size + crop top-left + target size, as the base pipeline adds them."""
        g = geometry or Geometry.plain((self.resolution, self.resolution))
        ids = torch.tensor([[*g.original, *g.crop, *g.target]], dtype=self.dtype)
        return ids.to(self.device).expand(n, -1)

    def prompt_warning(self, prompt: str) -> str | None:
        self._need_text()
        return clip_warning(self.tokenizer, prompt) or clip_warning(self.tokenizer_2, prompt)

    def free_text_encoders(self) -> None:
        self.text_encoder = self.text_encoder_2 = None
        _collect(self.device)

    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        added = {"text_embeds": cond.pooled, "time_ids": cond.extra["time_ids"]}
        return module(x, t, encoder_hidden_states=cond.emb, added_cond_kwargs=added).sample


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    return load_backbone(SDXLBackbone, spec, device, dtype, vae, offload)
