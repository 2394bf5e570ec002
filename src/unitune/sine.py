"""SINE model-based classifier-free guidance (Zhang et al. 2022, §3.2, eq. 3).

The fine-tuned model guides the PRETRAINED one: for t > K
    eps = eps_u + w (v eps_pre(x, edit) + (1 - v) eps_ft(x, c_hat) - eps_u)
and for t <= K plain CFG on the pretrained model, eps_u + w (eps_pre - eps_u). eps_u and eps_pre
come from the pretrained model (the empty / negative prompt and the edit prompt, no rare token);
eps_ft from the tuned model with its own fine-tuning prompt c_hat.

With a LoRA tune both models are one UNet: the adapter is scaled to 0 for the pretrained
predictions and to ``lora_scale`` for the tuned one (no second copy in memory). With a full tune
a second UNet holding the pretrained weights is built once and kept on the Editor.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import adapters, patches
from .guidance import cfg as cfg_mix
from .guidance import sine_active, sine_mix
from .models import encode_prompts
from .sampling import GuidedFn

if TYPE_CHECKING:
    from .config import EditConfig
    from .edit import Denoiser, Editor


def pretrained_and_tuned(editor: Editor, lora_scale: float) -> tuple[Denoiser, Denoiser]:
    """Two denoisers over the editor's current checkpoint: (pretrained, fine-tuned)."""
    from .edit import unet_denoiser

    unet = editor.comp.unet
    if adapters.has_lora(unet) or editor.step == 0:
        tuned = unet_denoiser(unet)

        pos = patches.get(unet)

        def pre(x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
            # the same UNet with the adapter at scale 0 and the positional module off
            lora = adapters.has_lora(unet)
            if lora:
                adapters.set_lora_scale(unet, 0.0)
            if pos is not None:
                pos.enabled = False
            try:
                return unet(x, t, encoder_hidden_states=emb).sample
            finally:
                if lora:
                    adapters.set_lora_scale(unet, lora_scale)
                if pos is not None:
                    pos.enabled = True

        return pre, tuned
    pre_unet = getattr(editor, "_pretrained_unet", None)
    if pre_unet is None:
        # full tune: the editor snapshots the pretrained weights before applying a delta
        pre_unet = copy.deepcopy(unet)
        with torch.no_grad():
            for n, p in pre_unet.named_parameters():
                p.copy_(editor._pretrained[n].to(p.device))
        if patches.get(pre_unet) is not None:
            patches.get(pre_unet).enabled = False
        editor._pretrained_unet = pre_unet
    return unet_denoiser(pre_unet), unet_denoiser(unet)


def sine_guided(editor: Editor, prompt: str, cfg: EditConfig) -> GuidedFn:
    """The SINE guided denoiser for one edit prompt (the rare token is NOT added to it)."""
    pre, tuned = pretrained_and_tuned(editor, cfg.lora_scale)
    c_hat = editor.folder.manifest[
        "prompt"
    ]  # the fine-tuning prompt, e.g. "a photo of a beikkpic cat"
    emb_u, emb_edit, emb_hat = encode_prompts(
        editor.comp, [cfg.negative_prompt, prompt, c_hat]
    ).chunk(3)
    w, v, K = cfg.cfg, cfg.sine_v, cfg.sine_K

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        # one batched pass of the pretrained model for [eps_u ; eps_pre]
        both = pre(
            torch.cat([x, x]), t, torch.cat([emb_u.expand(b, -1, -1), emb_edit.expand(b, -1, -1)])
        )
        eps_u, eps_pre = both.chunk(2)
        if not sine_active(t, K):
            return cfg_mix(eps_u, eps_pre, w)
        eps_ft = tuned(x, t, emb_hat.expand(b, -1, -1))
        return sine_mix(eps_u, eps_pre, eps_ft, w, v)

    return guided
