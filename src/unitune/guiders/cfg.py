"""Classifier-free guidance, and UniTune's prompt guidance (§3.3) which is the same mix against
a base prompt instead of the empty one::

    eps = eps_base + w (eps(x, "<rare> <edit>") - eps_base)          (guidance.cfg)

eps_base is the model on the negative (default empty) prompt, or with ``--prompt-guidance P`` on
"<rare> P", so guidance pushes along the delta between the two prompts. Both predictions come
from ONE batched forward pass: [baseline x B ; conditional x B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backbones.base import Conditioning, cat_expand
from ..guidance import cfg as cfg_mix
from ..guidance import finish
from . import Denoiser, GuidedFn


def cfg_guided(
    den: Denoiser, base: Conditioning, cond: Conditioning, w: float, renorm: int = 0
) -> GuidedFn:
    """CFG of ``den`` at weight ``w``: ``base`` the one-row baseline (negative prompt, or the
    base prompt of prompt guidance), ``cond`` the one-row edit prompt; ``renorm`` the
    backbone's ``cfg_renorm`` (guidance.finish)."""
    batched: dict[int, Conditioning] = {}  # per batch size, built once, not at every step

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        if w == 1.0:  # pure conditional: the baseline would be multiplied by zero
            return den(x, t, cond.expand(b))
        if b not in batched:
            batched[b] = cat_expand([base, cond], b)
        out_base, out_cond = den(torch.cat([x, x]), t, batched[b]).chunk(2)
        # learned-variance models (IF) keep the conditional prediction's variance half
        return finish(cfg_mix(out_base, out_cond, w), out_cond, x.shape[1], renorm)

    return guided


@dataclass(frozen=True, eq=False)
class CFG:
    """CFG (or prompt guidance) on one model view."""

    model: Denoiser  # the tuned checkpoint's view (state.ModelState.tuned)
    baseline: Conditioning  # one row: the negative prompt, or prompt guidance's base prompt
    cond: Conditioning  # one row: what the edit samples, "<rare> <edit prompt>"
    w: float  # guidance weight (1 = the conditional prediction alone)
    prompt_guidance: bool = False  # the baseline is a base prompt (only named in describe())
    renorm: int = 0  # Backbone.cfg_renorm: the mix matched to the conditional norm per patch
    name: str = "cfg"

    def build(self) -> GuidedFn:
        return cfg_guided(self.model, self.baseline, self.cond, self.w, self.renorm)

    def describe(self) -> str:
        what = "prompt guidance" if self.prompt_guidance else "CFG"
        return f"{what}, w {self.w:g}"
