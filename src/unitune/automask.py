"""Automatic edit mask, as DiffEdit (Couairon et al. 2022, §3.1) computes it, from the tuned
model: noise the photo's latent to a middle timestep (t0 0.5) with a few draws, predict the
noise under the edit prompt "<rare> <edit>" and under the tune prompt, and mark where the two
predictions differ. Where the edit prompt asks for nothing new they agree (the tuned model knows
the photo under both), so the map is large only where the edit belongs; a background edit's
region is most of the image, which DiffEdit's cut below cannot mark as a whole.

The map is DiffEdit's as diffusers' StableDiffusionDiffEditPipeline.generate_mask computes it
(mean |difference| over draws and channels, clamped at ``ratio`` x its mean, scaled to [0, 1],
thresholded at ``threshold``), then dilated by ``dilate`` latent cells: DiffEdit's mask is a
little too tight at the border of an object, where the edited shape may grow.

DiffEdit's cut is relative to the map's mean: a cell is marked when it exceeds 1.5x the mean
(threshold 0.5 of the map clamped at 3x its mean), and more than 2/3 of the cells can never all
exceed 1.5x their own mean. A background edit's region is most of the image, so DiffEdit's rule
cannot mark all of it (the medium benchmark: 33 % coverage on background edits, none of which
succeeded). ``rule="otsu"`` cuts instead where the marked and unmarked cells' mean levels
differ most (Otsu 1979, the between-class variance of the map's values): two levels are told
apart whatever area each takes.
Measured (docs/automask_rules.json, 8 scenes): Otsu's masks are tighter on local edits (10-17 %
of the image against 26-32 %, +0.01-0.02 fidelity) and cover 38 % on background edits, which
still all fail: the background edit's map is not one high level over the background. Its
spread does tell a global edit from a local one, which route.py (``--route auto``) reads.

The mask is at latent resolution (1 = may change); the edit's plan upsamples it to pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones.base import Conditioning, cat_expand
from .guidance import cfg as cfg_mix
from .guiders import Denoiser

RATIO = 3.0  # DiffEdit's mask_thresholding_ratio: the map is clamped at RATIO x its mean


def diffedit_map(pred_edit: Tensor, pred_src: Tensor) -> Tensor:
    """(N, C, h, w) predictions at N noise draws under the two prompts -> (1, 1, h, w) the mean
    |difference| over draws and channels."""
    return (pred_edit.float() - pred_src.float()).abs().mean(dim=(0, 1))[None, None]


def threshold_map(m: Tensor, threshold: float, ratio: float = RATIO) -> Tensor:
    """DiffEdit's normalisation of a (1, 1, h, w) map: clamp at ``ratio`` x its mean, scale to
    [0, 1], 1 above ``threshold`` (0.5 in DiffEdit), else 0."""
    clamp = (m.mean() * ratio).clamp_min(1e-12)
    return (m.clamp(0, float(clamp)) / clamp > threshold).float()


def otsu_map(m: Tensor) -> Tensor:
    """A (1, 1, h, w) map -> 1 where it lies above Otsu's cut: of the cuts between consecutive
    sorted values, the one maximising the between-class variance w0 w1 (mu0 - mu1)^2."""
    v = m.flatten().double().sort().values  # (n,)
    n = v.numel()
    if n < 2 or float(v[-1] - v[0]) <= 0:  # a flat map has no two levels: nothing stands out
        return torch.zeros_like(m, dtype=torch.float32)
    k = torch.arange(1, n, dtype=v.dtype)  # cells below the cut
    below = v.cumsum(0)[:-1]
    mu0, mu1 = below / k, (v.sum() - below) / (n - k)
    between = (k / n) * (1 - k / n) * (mu0 - mu1) ** 2
    i = int(between.argmax())
    return (m.double() > (v[i] + v[i + 1]) / 2).float()


def cut(m: Tensor, rule: str, threshold: float) -> Tensor:
    """The (1, 1, h, w) map ``m`` cut into {0, 1} by ``rule`` (config.AUTO_MASK_RULES)."""
    if rule == "otsu":
        return otsu_map(m)
    if rule == "diffedit":
        return threshold_map(m, threshold)
    raise ValueError(f"unknown auto mask rule {rule!r}")


def dilate(mask: Tensor, cells: int) -> Tensor:
    """Grow a binary (1, 1, h, w) mask by ``cells`` in every direction (a square max-pool)."""
    if cells <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * cells + 1, stride=1, padding=cells)


@torch.no_grad()
def estimate_map(
    den: Denoiser,
    process,
    scheduler,
    x0: Tensor,
    edit: Conditioning,
    source: Conditioning,
    negative: Conditioning,
    w: float,
    *,
    steps: int,
    t0: float,
    draws: int,
    seed: int,
) -> Tensor:
    """DiffEdit's raw difference map (1, 1, h, w) of ``x0`` (1, C, h, w) under the model ``den``,
    before any cut: what :func:`cut` marks and route.py measures the spread of.

    ``process``: the backbone (its start index and forward process at the sampler's timesteps);
    ``scheduler``: a fresh sampler of ``steps`` (the map's timestep is the one an SDEdit start
    at ``t0`` joins, as DiffEdit's ``mask_encode_strength``); both predictions are CFG at ``w``
    against ``negative``, as DiffEdit guides them; ``draws`` noise draws from ``seed``."""
    scheduler.set_timesteps(steps, device=x0.device)
    j = process.start_index(steps, t0) * scheduler.order
    t = scheduler.timesteps[min(j, len(scheduler.timesteps) - 1)]
    g = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn((draws, *x0.shape[1:]), generator=g).to(x0)  # (N, C, h, w)
    x_t = process.renoise(scheduler, x0.expand(draws, -1, -1, -1), noise, t.repeat(draws))
    x_in = scheduler.scale_model_input(x_t, t)
    # one batched pass: [negative ; source ; edit] x N (CFG 1: no negative), the negative's
    # prediction shared by both guided ones
    conds = [source, edit] if w == 1.0 else [negative, source, edit]
    out = den(torch.cat([x_in] * len(conds)), t, cat_expand(conds, draws))
    preds = out[:, : x0.shape[1]].chunk(len(conds))  # learned variances (IF): the eps half
    src, tgt = preds if w == 1.0 else (cfg_mix(preds[0], p, w) for p in preds[1:])
    return diffedit_map(tgt, src)


def mask_of(m: Tensor, rule: str, threshold: float, cells: int) -> Tensor:
    """The edit mask (1, 1, h, w) in {0, 1} of a raw map ``m``: cut by ``rule`` (``threshold``:
    the diffedit rule's), dilated by ``cells``."""
    return dilate(cut(m, rule, threshold), cells)


def map_for_edit(
    den: Denoiser,
    backbone,
    cfg,
    hw: tuple[int, int],
    x0: Tensor,
    edit: Conditioning,
    source: Conditioning,
    negative: Conditioning,
    w: float,
) -> Tensor:
    """The raw map of an edit as ``EditConfig`` ``cfg`` (resolved) sets it: at its sampler and
    steps, its ``auto_mask_*`` knobs, CFG ``w``; (1, 1, h, w) at the latent size of hw."""
    return estimate_map(
        den,
        backbone,
        backbone.make_scheduler(cfg.sampler, hw),
        x0,
        edit,
        source,
        negative,
        w,
        steps=cfg.steps,
        t0=cfg.auto_mask_t0,
        draws=cfg.auto_mask_draws,
        seed=cfg.auto_mask_seed,
    )


def for_map(m: Tensor, cfg) -> Tensor:
    """The mask ``EditConfig`` ``cfg`` cuts from the raw map ``m`` (its rule, threshold and
    dilation)."""
    return mask_of(m, cfg.auto_mask_rule, cfg.auto_mask_threshold, cfg.auto_mask_dilate)


def within(pixel_mask: Tensor | None, auto: Tensor, hw: tuple[int, int]) -> Tensor:
    """The pixel mask (1, 1, H, W) at size hw an edit uses: the automatic mask ``auto`` (latent
    size) upsampled, intersected with a user's ``pixel_mask`` there if there is one (the user's
    mask bounds what may change; the automatic one narrows it)."""
    up = to_pixels(auto, hw)
    return up if pixel_mask is None else pixel_mask * up


def to_pixels(mask: Tensor, hw: tuple[int, int]) -> Tensor:
    """A latent mask (1, 1, h, w) -> (1, 1, H, W) at pixel size hw (nearest: each latent cell
    its block of pixels, so the pixel mask and the latent mask agree exactly)."""
    return F.interpolate(mask.float(), size=hw, mode="nearest")
