"""Guidance math as pure functions on model outputs (eps, or v for v-prediction models).

All are linear in the predictions, so they hold for either parameterisation. Shapes: every
argument is (B, C, h, w) or broadcastable to it; scalars are python floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def cfg(eps_uncond: Tensor, eps_cond: Tensor, w: float) -> Tensor:
    """Classifier-free guidance: eps_u + w (eps_c - eps_u). w = 1 is the plain conditional
    prediction, w = 0 the unconditional one; UniTune samples with w = 32."""
    return eps_uncond + w * (eps_cond - eps_uncond)


def prompt_guidance(eps_base: Tensor, eps_edit: Tensor, w: float) -> Tensor:
    """UniTune §3.3 "prompt guidance": CFG whose baseline is a base prompt instead of the empty
    prompt, so guidance pushes along the delta between the two prompts."""
    return cfg(eps_base, eps_edit, w)


def sine_mix(eps_uncond: Tensor, eps_pre: Tensor, eps_ft: Tensor, w: float, v: float) -> Tensor:
    """SINE eq. 3, model-based CFG: eps_u + w (v eps_pre(edit) + (1 - v) eps_ft(c_hat) - eps_u).

    v weights the PRETRAINED model's edit prediction (paper default 0.7). v = 1 is plain CFG on
    the pretrained model; v = 0 the fine-tuned conditional prediction guided against the
    pretrained unconditional one. (The official diffusers script's --model_based_guidance_scale
    weights the fine-tuned model instead, i.e. 1 - v; see sine.py.)
    """
    mixed = v * eps_pre + (1.0 - v) * eps_ft
    return eps_uncond + w * (mixed - eps_uncond)


def sine_active(t: int | float | Tensor, K: float) -> bool:
    """SINE uses the model-based mix while t > K (t on the 0..1000 training scale), else plain
    CFG."""
    return float(t) > K


def multi_guidance(eps_uncond: Tensor, conds: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Composable CFG over several conditional predictions (one per model / prompt):
    eps_u + sum_i w_i (eps_i - eps_u). Used for SINE's multi-model guidance (content from one
    tune, style from another)."""
    if len(conds) != len(weights):
        raise ValueError(f"{len(conds)} predictions but {len(weights)} weights")
    out = eps_uncond.clone()
    for eps_i, w_i in zip(conds, weights, strict=True):
        out = out + w_i * (eps_i - eps_uncond)
    return out


def keep_variance(mixed: Tensor, positive: Tensor, channels: int) -> Tensor:
    """Models with learned variances (DeepFloyd IF) predict [eps, v] (2C channels): guidance
    mixes the eps half only, and v stays the positive (conditional) prediction's, as IF's
    pipelines do; a C-channel prediction is returned as it is."""
    if mixed.shape[1] != 2 * channels:
        return mixed
    return torch.cat([mixed[:, :channels], positive[:, channels:]], dim=1)


def match_norm(mixed: Tensor, positive: Tensor, patch: int) -> Tensor:
    """Qwen-Image's CFG renormalisation: the mixed prediction rescaled, per ``patch`` x
    ``patch`` latent patch (one transformer token: all channels), to the norm of the positive
    (conditional) prediction, so guidance turns the velocity without lengthening it. ``patch``
    0 leaves ``mixed`` as it is. Shapes (B, C, h, w), h and w multiples of ``patch``."""
    if patch == 0:
        return mixed
    b, c, h, w = mixed.shape
    p = patch

    def tokens(x: Tensor) -> Tensor:  # (B, h/p, w/p, C p p): the pipeline's packed token order
        return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).flatten(3)

    m, ref = tokens(mixed), tokens(positive)
    out = m * (torch.norm(ref, dim=-1, keepdim=True) / torch.norm(m, dim=-1, keepdim=True))
    return out.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def finish(mixed: Tensor, positive: Tensor, channels: int, renorm: int = 0) -> Tensor:
    """What every guider does to its mix before the scheduler steps: keep a learned-variance
    model's variance half (:func:`keep_variance`), then the family's norm matching
    (:func:`match_norm`, ``renorm`` = its patch size, 0 = none)."""
    out = keep_variance(mixed, positive, channels)
    return match_norm(out, positive, renorm) if renorm else out


def blend_known(x: Tensor, x_known: Tensor, mask: Tensor) -> Tensor:
    """In-painting: keep the sample where mask = 1 (may change), the known latent elsewhere.
    mask (1 or B, 1, h, w) in [0, 1] at latent resolution."""
    return mask * x + (1.0 - mask) * x_known


def latent_mask(mask: Tensor, hw: tuple[int, int]) -> Tensor:
    """Pixel mask (B, 1, H, W) -> latent resolution. Uses area averaging, then max-pools by one
    latent cell so a latent pixel counts as "may change" if any of its pixels may: an edge
    latent that mixes both regions must be free, else the seam shows the old content."""
    m = torch.nn.functional.adaptive_avg_pool2d(mask.float(), hw)
    m = torch.nn.functional.max_pool2d(m, kernel_size=3, stride=1, padding=1)
    return (m > 1e-3).to(torch.float32)
