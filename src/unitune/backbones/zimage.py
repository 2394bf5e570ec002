"""Z-Image (and Z-Image-Turbo): ZImageTransformer2DModel, a single-stream DiT over 2x2 latent
patches with 3-axis RoPE, and a Qwen3 decoder LM as its text encoder; the FLUX VAE (16
channels, shift and scale); rectified flow (flow.py) on FluxPipeline's sigma grid.

Conditioning, as ``ZImagePipeline.encode_prompt`` makes it (the pipeline's own method is
called): the prompt in Qwen's chat template, the LM's penultimate hidden states at the real
(unpadded) tokens: a variable-length list. unitune's rows must stack, so they are kept padded
to the pipeline's ``max_sequence_length`` (B, 512, D) with the token mask in
``extra["mask"]`` (B, 512); ``denoise`` hands the transformer each row's real tokens, as the
pipeline does, so padding never reaches it.

Three things differ from the other flow models, each in ``denoise`` / ``guidance_weights``: the
transformer takes the *time* 1 - sigma, not the noise level; it predicts x0 - noise, which the
pipeline negates into the scheduler's velocity; and its CFG is pos + g (pos - neg), i.e.
unitune's neg + w (pos - neg) at w = 1 + g (``--cfg`` is the pipeline's guidance_scale g; 0, as
Turbo samples, is the conditional prediction alone).
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF
from torch import Tensor, nn

from .. import patches
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning
from .flow import LMFlowBackbone
from .sd import load_backbone

# train_dreambooth_lora_z_image.py's default target_modules (attention of every block: the
# noise / context refiners and the main layers); --lora-conv adds the SwiGLU feed-forward
ZIMAGE_LORA = ("to_k", "to_q", "to_v", "to_out.0")
ZIMAGE_FF = ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


class ZImageBackbone(LMFlowBackbone):
    family = "zimage"
    pipeline_class = "ZImagePipeline"
    lora_targets = ZIMAGE_LORA
    lora_conv_targets = ZIMAGE_FF
    linspace_sigmas = True  # the pipeline passes sigmas 1 .. 1/steps (get_default_z_image_sigmas)
    default_max_shift = 1.15  # calculate_shift's default when the scheduler config has none

    @property
    def patch_site(self) -> str:  # type: ignore[override]
        """The patch embedder (Linear: a 2x2 patch's 64 values -> the width) in its ModuleDict,
        keyed by the (spatial, frame) patch sizes; it embeds the batch's tokens as one list."""
        c = self.module.config
        return f"all_x_embedder.{c.all_patch_size[0]}-{c.all_f_patch_size[0]}"

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (self.module.config.in_channels, hw[0] // self.vae_scale, hw[1] // self.vae_scale)

    def guidance_weights(self, cfg: float, true_cfg: float) -> tuple[float, float | None]:
        super().guidance_weights(cfg, true_cfg)  # refuses --true-cfg
        return 1.0 + cfg, None

    # --- prompts ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        rows, _ = self._encode_with_pipeline(prompts, do_classifier_free_guidance=False)
        emb, mask = self._padded(rows)  # the pipeline's rows: each prompt's real tokens
        return Conditioning(emb, None, {"mask": mask})

    def _prompt_ids(self, prompt: str) -> list[int]:
        message = [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(
            message, tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return self.tokenizer(text, truncation=False).input_ids

    # --- the denoiser -------------------------------------------------------------------------
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        b, _, h, w = x.shape
        grid = (h // 2, w // 2)
        # SINE's crop box, if tuned: each image's tokens are padded to a multiple of SEQ_MULTI_OF
        # before the embedder sees the batch as one list
        n = grid[0] * grid[1]
        patches.set_grid(module, self.patch_site, grid, n + (-n) % SEQ_MULTI_OF)
        caps = [e[m] for e, m in zip(cond.emb, cond.extra["mask"])]  # each row's real tokens
        time = (1000 - t.expand(b).to(x.dtype)) / 1000  # the transformer's t: 1 - sigma
        frames = list(x.unsqueeze(2).unbind(0))  # B x (C, 1, h, w): one frame per image
        out = module(frames, time, caps, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)  # x0 - noise -> the velocity noise - x0


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    return load_backbone(ZImageBackbone, spec, device, dtype, vae, offload)
