"""The sampling loop: a guided denoiser callable + a diffusers scheduler -> x0 in model space.

Mirrors diffusers' img2img / txt2img step bookkeeping (so that with the same scheduler, noise and
strength it reproduces StableDiffusionImg2ImgPipeline and StableDiffusionXLImg2ImgPipeline) but
takes any ``GuidedFn``, which is how CFG, prompt guidance, SINE and multi-model guidance compose
with SDEdit and in-painting. Also UniTune's own guided function, :func:`cfg_guided`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .backbones.base import Conditioning, cat_expand, start_index
from .cancel import checkpoint
from .guidance import blend_known, keep_variance
from .guidance import cfg as cfg_mix

# guided(x_t (B, C, h, w) already scaled by the scheduler, t scalar tensor) -> model output
GuidedFn = Callable[[Tensor, Tensor], Tensor]
# a model (one weight state of a network, state.View): (x_t, t, conditioning) -> its prediction
Denoiser = Callable[[Tensor, Tensor, Conditioning], Tensor]
# the forward process at timesteps t (B,): (scheduler, x0, noise, t) -> x_t (Backbone.renoise)
Renoise = Callable[[object, Tensor, Tensor, Tensor], Tensor]
# (steps, t0) -> index of the SDEdit start's first timestep (Backbone.start_index)
Start = Callable[[int, float], int]


def cfg_guided(den: Denoiser, base: Conditioning, cond: Conditioning, w: float) -> GuidedFn:
    """UniTune's sampling (§3.3): CFG, or prompt guidance when ``base`` is a base prompt instead
    of the empty one, with ONE batched forward pass: [baseline x B ; conditional x B]."""

    batched: dict[int, Conditioning] = {}  # per batch size, built once, not at every step

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        if w == 1.0:  # pure conditional: the baseline would be multiplied by zero
            return den(x, t, cond.expand(b))
        if b not in batched:
            batched[b] = cat_expand([base, cond], b)
        out_base, out_cond = den(torch.cat([x, x]), t, batched[b]).chunk(2)
        return keep_variance(cfg_mix(out_base, out_cond, w), out_cond, x.shape[1])

    return guided


def _step_kwargs(scheduler, generator: torch.Generator | None, eta: float) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


@torch.no_grad()
def sample(
    guided: GuidedFn,
    scheduler,
    noise: Tensor,
    *,
    steps: int,
    t0: float | Sequence[float] = 1.0,
    x0: Tensor | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    progress: bool = True,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
    renoise: Renoise | None = None,
    start: Start = start_index,
) -> Tensor:
    """Run the reverse process and return clean latents (B, C, h, w).

    noise: (B, C, h, w) one slice per seed. x0: (1 or B, C, h, w) scaled base latents, needed for
    t0 < 1 (SDEdit start: x0 noised to the first kept timestep) and for ``mask`` (1 or B, 1, h, w),
    where 1 = may change: after every step the region outside the mask is reset to x0 noised to
    the next timestep with the same noise, so the known content is exactly x0 at the end.
    ``generator``: the stochastic samplers' step noise (DDPM, DDIM eta > 0): one, or one per sample.
    ``renoise``: how x0 is noised to a timestep (the backbone's; default the scheduler's add_noise);
    ``start``: where an SDEdit start at t0 joins the schedule (the backbone's rounding).
    ``t0`` may also be one start per sample (see :func:`_staggered`).
    """
    renoise = renoise or (lambda sched, x, n, t: sched.add_noise(x, n, t))
    if isinstance(t0, Sequence):
        return _staggered(
            guided,
            scheduler,
            noise,
            steps,
            list(t0),
            x0,
            mask,
            eta,
            progress,
            renoise,
            start,
            generator,
        )
    if not 0.0 <= t0 <= 1.0:
        raise ValueError(f"t0 must be in [0, 1], got {t0}")
    if (t0 < 1.0 or mask is not None) and x0 is None:
        raise ValueError("t0 < 1 and in-painting need the base latents x0")
    b = noise.shape[0]
    scheduler.set_timesteps(steps, device=noise.device)
    if t0 >= 1.0:
        timesteps = scheduler.timesteps
        latents = noise * scheduler.init_noise_sigma
    else:
        first = start(steps, t0) * scheduler.order
        timesteps = scheduler.timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        if len(timesteps) == 0:  # t0 so small that no step is left: the input itself
            return x0.expand(b, -1, -1, -1).clone()
        latents = renoise(scheduler, x0, noise, timesteps[:1].repeat(b))
    kw = _step_kwargs(scheduler, generator, eta)
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        checkpoint()  # a cancelled job stops between steps
        model_in = scheduler.scale_model_input(latents, t)
        out = guided(model_in, t)
        latents = scheduler.step(out, t, latents, **kw, return_dict=False)[0]
        if mask is not None:
            if i + 1 < len(timesteps):
                known = renoise(scheduler, x0, noise, timesteps[i + 1 : i + 2].repeat(b))
            else:
                known = x0.expand_as(latents)
            latents = blend_known(latents, known, mask)
        if on_step is not None:
            on_step(i, t, latents)
    return latents


def _staggered(
    guided, scheduler, noise, steps, t0s, x0, mask, eta, progress, renoise, start, generator=None
) -> Tensor:
    """One batch whose samples start at different t0 (the grid's columns in one pass).

    All samples follow the same timestep schedule and differ only in where they join it, so at
    step i the samples already started all sit at the same timestep T[i]: the denoiser runs once
    on them as a batch (fewer, larger calls: on a CPU a batch of 8 costs ~0.6 per sample of a
    batch of 2), and the scheduler steps them with the scalar T[i], as in :func:`sample`. Each
    sample matches its own :func:`sample` call up to float rounding. Multistep schedulers keep
    the previous steps' outputs for the whole batch, which a growing batch would mix up, so only
    single-step ones (DDIM, Euler, DDPM) are accepted; a stochastic one's step noise comes from
    ``generator``, one per sample (each sample draws only at the steps it takes part in).
    """
    b = noise.shape[0]
    if len(t0s) != b or not all(0.0 <= t <= 1.0 for t in t0s):
        raise ValueError(f"need one t0 in [0, 1] per sample ({b}), got {t0s}")
    if hasattr(scheduler, "model_outputs"):
        raise ValueError(f"{type(scheduler).__name__} is multistep: sample each t0 on its own")
    if x0 is None and (mask is not None or min(t0s) < 1.0):
        raise ValueError("t0 < 1 and in-painting need the base latents x0")
    scheduler.set_timesteps(steps, device=noise.device)
    ts = scheduler.timesteps
    starts = [start(steps, t) * scheduler.order for t in t0s]  # 0 for t0 = 1
    x0_b = x0.expand(b, -1, -1, -1) if x0 is not None else None
    latents = noise * scheduler.init_noise_sigma  # the samples starting from pure noise
    for k, s in enumerate(starts):
        if t0s[k] < 1.0:  # SDEdit start; past the last step (tiny t0) the input itself
            latents[k : k + 1] = (
                x0_b[k : k + 1]
                if s >= len(ts)
                else renoise(scheduler, x0_b[k : k + 1], noise[k : k + 1], ts[s : s + 1])
            )
    first = min(starts)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    kw = _step_kwargs(scheduler, None, eta)
    for i in tqdm(range(first, len(ts)), desc="sampling", disable=not progress, leave=False):
        checkpoint()
        t = ts[i]
        idx = torch.tensor([k for k in range(b) if starts[k] <= i], device=noise.device)
        if isinstance(generator, list) and "generator" in kw:
            kw["generator"] = [generator[k] for k in idx.tolist()]
        lat = latents[idx]
        out = guided(scheduler.scale_model_input(lat, t), t)
        lat = scheduler.step(out, t, lat, **kw, return_dict=False)[0]
        if mask is not None:
            m = mask if mask.shape[0] == 1 else mask[idx]
            nxt = ts[i + 1 : i + 2].repeat(len(idx))
            known = renoise(scheduler, x0_b[idx], noise[idx], nxt) if i + 1 < len(ts) else x0_b[idx]
            lat = blend_known(lat, known, m)
        latents[idx] = lat
    return latents
