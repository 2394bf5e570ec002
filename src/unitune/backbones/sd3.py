"""Stable Diffusion 3 / 3.5: SD3Transformer2DModel (joint attention over image and text tokens),
two CLIP encoders with projections + T5, a 16-channel VAE with a shift; rectified flow (flow.py).

Conditioning, as ``StableDiffusion3Pipeline.encode_prompt`` makes it: each CLIP encoder's
penultimate hidden states concatenated along features and zero-padded to T5's width, then the
T5 states appended along the sequence (B, 77 + 256, D); the pooled embedding is both CLIP
projections concatenated (B, 768 + 1280). The empty negative prompt is encoded like any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .flow import FlowBackbone
from .sd import clip_tokens, load_backbone

# diffusers' train_dreambooth_lora_sd3.py targets: attention of the image and the text stream
SD3_LORA = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
# --lora-conv on a transformer: the feed-forward layers of both streams as well
TRANSFORMER_FF = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")


class SD3Backbone(FlowBackbone):
    family = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    lora_targets = SD3_LORA
    lora_conv_targets = TRANSFORMER_FF
    patch_site = "pos_embed"  # PatchEmbed: latents -> tokens (+ its fixed sin-cos positions)
    _text_names = ("text_encoder", "text_encoder_2", "text_encoder_3")

    def _take_text(self, pipe) -> None:
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self.text_encoder_2, self.tokenizer_2 = pipe.text_encoder_2, pipe.tokenizer_2
        # SD3 runs without T5 (text_encoder_3=None): zeros in its place, as the pipeline does
        self.text_encoder_3, self.tokenizer_3 = pipe.text_encoder_3, pipe.tokenizer_3

    def components(self) -> dict[str, nn.Module]:
        out = {"transformer": self.module, "vae": self.vae}
        if self.text_encoder is not None:
            out |= {"text": self.text_encoder, "text2": self.text_encoder_2}
            if self.text_encoder_3 is not None:
                out["text3"] = self.text_encoder_3
        return out

    def to_pipeline(self, module: nn.Module):
        import diffusers

        self._need_text()
        return diffusers.StableDiffusion3Pipeline(
            transformer=module,
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            text_encoder_3=self.text_encoder_3,
            tokenizer_3=self.tokenizer_3,
        )

    @property
    def token_size(self) -> int:
        return self.vae_scale * int(self.module.config.patch_size)

    @property
    def resolution(self) -> int:
        return int(self.module.config.sample_size) * self.vae_scale

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (self.module.config.in_channels, hw[0] // self.vae_scale, hw[1] // self.vae_scale)

    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        self._need_text()
        states, pooled = [], []
        for tok, te in (
            (self.tokenizer, self.text_encoder),
            (self.tokenizer_2, self.text_encoder_2),
        ):
            with self._visiting(te):
                ids, _ = clip_tokens(tok, prompts, self.device)
                out = te(ids, output_hidden_states=True)
            pooled.append(out[0])  # the projected pooled embedding
            states.append(out.hidden_states[-2])
        clip = torch.cat(states, dim=-1)  # (B, 77, D1 + D2)
        width = self.module.config.joint_attention_dim
        t5 = self._t5(self.tokenizer_3, self.text_encoder_3, prompts, width)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        emb = torch.cat([clip.to(self.dtype), t5], dim=-2)
        return Conditioning(emb, torch.cat(pooled, dim=-1).to(self.dtype))

    def prompt_warning(self, prompt: str) -> str | None:
        self._need_text()
        if self.text_encoder_3 is None:
            return self._clip_warnings((self.tokenizer, self.tokenizer_2), prompt)
        return self._t5_warning(self.tokenizer_3, prompt) or self._clip_warnings(
            (self.tokenizer, self.tokenizer_2), prompt
        )

    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return module(
            hidden_states=x,
            timestep=t.expand(x.shape[0]),
            encoder_hidden_states=cond.emb,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    return load_backbone(SD3Backbone, spec, device, dtype, vae, offload)
