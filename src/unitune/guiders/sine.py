"""SINE model-based classifier-free guidance (Zhang et al. 2022, §3.2, eq. 3).

The fine-tuned model guides the PRETRAINED one: for t > K
    eps = eps_u + w (v eps_pre(x, edit) + (1 - v) eps_ft(x, c_hat) - eps_u)
and for t <= K plain CFG on the pretrained model, eps_u + w (eps_pre - eps_u). eps_u and eps_pre
come from the pretrained model (the negative / empty prompt and the edit prompt, WITHOUT the rare
token) and are evaluated in ONE batched forward pass; eps_ft comes from the tuned model with its
own fine-tuning prompt c_hat (``Manifest.tuned_prompt``), with the positional module (patch
tunes) given the whole image.

``v`` weights the PRETRAINED model, as in the paper (default 0.7). The official code's flags
mostly weight the OTHER model: its diffusers script's ``--model_based_guidance_scale`` (default
0.3) and its multi-model script's ``--beta`` weight the FINE-TUNED model(s), i.e. 1 - v (the
pretrained model gets 1 - their sum); only its LDM single-model ``--cond_beta`` is v itself. Its
LDM samplers switch inclusively (t >= K); ours follows the paper and its diffusers script (t > K).

The two models are views of :class:`unitune.state.ModelState` (with a LoRA tune one network
with the adapter switched off and on; with a full tune the pretrained weights in a second copy).
This module only mixes their predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backbones.base import Conditioning, cat_expand
from ..guidance import cfg as cfg_mix
from ..guidance import finish, sine_active, sine_mix
from . import Denoiser, GuidedFn


def sine_guided(
    pre: Denoiser,
    tuned: Denoiser,
    c_u: Conditioning,
    c_edit: Conditioning,
    c_hat: Conditioning,
    w: float,
    v: float,
    K: float,
    renorm: int = 0,
) -> GuidedFn:
    """The SINE guided denoiser: ``pre`` and ``tuned`` the two models, ``c_u`` the negative (or
    empty) prompt, ``c_edit`` the edit prompt (no rare token), ``c_hat`` the tune's own prompt."""

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        # one batched pass of the pretrained model for [eps_u ; eps_pre]
        eps_u, eps_pre = pre(torch.cat([x, x]), t, cat_expand([c_u, c_edit], b)).chunk(2)
        c = x.shape[1]  # learned-variance models keep the conditional prediction's variance
        if not sine_active(t, K) or v == 1.0:  # t <= K (or v = 1): plain CFG, pretrained model
            return finish(cfg_mix(eps_u, eps_pre, w), eps_pre, c, renorm)
        eps_ft = tuned(x, t, c_hat.expand(b))
        return finish(sine_mix(eps_u, eps_pre, eps_ft, w, v), eps_ft, c, renorm)

    return guided


@dataclass(frozen=True, eq=False)
class SINE:
    """SINE's two models and three prompts."""

    pretrained: Denoiser  # the base model's view
    tuned: Denoiser  # the tuned checkpoint's view
    c_u: Conditioning  # one row: the negative (default empty) prompt
    c_edit: Conditioning  # one row: the edit prompt, no rare token (the pretrained model's)
    c_hat: Conditioning  # one row: the prompt the tune was fine-tuned on
    w: float  # guidance weight
    v: float  # the pretrained model's share of the conditional prediction (paper: 0.7)
    K: float  # on the 0..1000 training scale: the tuned model guides while t > K
    renorm: int = 0  # Backbone.cfg_renorm (guidance.finish)
    name: str = "sine"

    def build(self) -> GuidedFn:
        return sine_guided(
            self.pretrained,
            self.tuned,
            self.c_u,
            self.c_edit,
            self.c_hat,
            self.w,
            self.v,
            self.K,
            self.renorm,
        )

    def describe(self) -> str:
        return f"SINE, w {self.w:g}, v {self.v:g}, K {self.K:g}"
