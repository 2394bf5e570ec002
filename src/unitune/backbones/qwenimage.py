"""Qwen-Image (and its 2512 update): QwenImageTransformer2DModel, a dual-stream MMDiT over 2x2
latent patches with 3-axis RoPE, Qwen2.5-VL as its text encoder, and the causal 3-D VAE of Wan
(AutoencoderKLQwenImage: one frame per image, per-channel latent mean / std); rectified flow
(flow.py) on FluxPipeline's sigma grid with the scheduler's dynamic (exponential) shift.

Conditioning, as ``QwenImagePipeline.encode_prompt`` makes it (the pipeline's own method is
called): the prompt inside the pipeline's system template, the LM's last hidden states with the
template's first 34 tokens dropped, padded to the longest prompt of the call. unitune's rows
must stack across calls, so they are kept padded to ``max_sequence_length`` (B, 512, D) with the
token mask in ``extra["mask"]``; ``denoise`` trims a batch back to its longest row and passes
the mask (None when every row is full, as the pipeline does), so the transformer attends to
exactly the tokens the pipeline gives it.

CFG is the pipeline's ``true_cfg_scale`` (--cfg; 1 = off), and as there the mix is rescaled
to the conditional prediction's norm per token (``cfg_renorm``: guidance.match_norm on the
2x2 patches). The transformer takes sigma and predicts the velocity, as FLUX's does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import patches
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .flow import LMFlowBackbone
from .flux import pack, unpack
from .sd import load_backbone

# train_dreambooth_lora_qwen_image.py's default target_modules: the image stream's attention
# projections of every block (the text stream's add_*_proj are not in it); --lora-conv adds the
# two streams' feed-forward layers
QWEN_LORA = ("to_k", "to_q", "to_v", "to_out.0")
QWEN_FF = ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")


class QwenImageBackbone(LMFlowBackbone):
    family = "qwenimage"
    pipeline_class = "QwenImagePipeline"
    lora_targets = QWEN_LORA
    lora_conv_targets = QWEN_FF
    patch_site = "img_in"  # Linear: packed 2x2 latent tokens -> the transformer's width
    linspace_sigmas = True  # the pipeline passes sigmas 1 .. 1/steps
    default_max_shift = 1.15  # calculate_shift's default when the scheduler config has none
    cfg_renorm = 2  # the pipeline's true CFG keeps the conditional norm of each 2x2 token
    vae_class = "AutoencoderKLQwenImage"

    # --- image <-> model space: a one-frame video VAE with per-channel statistics -------------
    @property
    def vae_scale(self) -> int:
        return 2 ** len(self.vae.config.temperal_downsample)

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (
            self.module.config.in_channels // 4,
            hw[0] // self.vae_scale,
            hw[1] // self.vae_scale,
        )

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of the VAE's latents, (1, C, 1, 1) each: x0 = (z - mean) / std."""
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1)
        return mean.to(like.device, like.dtype), std.to(like.device, like.dtype)

    @torch.no_grad()
    def encode_image(self, pixels: Tensor) -> Tensor:
        x = pixels.to(self.device, self.vae.dtype).unsqueeze(2)  # (B, 3, 1, H, W): one frame
        with self._visiting(self.vae):
            z = self.vae.encode(x).latent_dist.mean.squeeze(2)
        mean, std = self._stats(z)
        return ((z - mean) / std).to(self.dtype)

    @torch.no_grad()
    def decode(self, x0: Tensor) -> Tensor:
        z = x0.to(self.device, self.vae.dtype)
        mean, std = self._stats(z)
        with self._visiting(self.vae):
            return self.vae.decode((z * std + mean).unsqueeze(2)).sample[:, :, 0].float()

    # --- prompts ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        rows, mask = self._encode_with_pipeline(prompts)  # padded to the call's longest
        if mask is not None:  # None: every row is full length
            rows = [r[m.bool()] for r, m in zip(rows, mask)]
        emb, keep = self._padded(list(rows))
        return Conditioning(emb, None, {"mask": keep})

    def _prompt_ids(self, prompt: str) -> list[int]:
        pipe = self.to_pipeline(self.module)
        text = pipe.prompt_template_encode.format(prompt)
        ids = self.tokenizer(text, truncation=False).input_ids
        return ids[pipe.prompt_template_encode_start_idx :]  # the template's head is dropped

    # --- the denoiser -------------------------------------------------------------------------
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        b, _, h, w = x.shape
        patches.set_grid(module, self.patch_site, (h // 2, w // 2))  # SINE's crop box, if tuned
        mask = cond.extra["mask"]
        n = int(mask.sum(1).max())  # the batch's longest prompt: the pipeline's padding
        mask = mask[:, :n]
        out = module(
            hidden_states=pack(x),
            timestep=t.expand(b).to(x.dtype) / 1000,  # the transformer takes sigma
            encoder_hidden_states=cond.emb[:, :n],
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            img_shapes=[[(1, h // 2, w // 2)]] * b,
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
    return load_backbone(QwenImageBackbone, spec, device, dtype, vae, offload)
