"""The sampling loop: a guided denoiser + a diffusers scheduler -> x0 in model space.

k-diffusion's habit: the loop takes a denoiser callable (``guiders.GuidedFn``) and knows nothing
of models, prompts or guidance; the scheduler does the step math. It mirrors diffusers'
txt2img / img2img step bookkeeping, so with the same scheduler, noise and strength it reproduces
StableDiffusion(XL)Img2ImgPipeline, and CFG, prompt guidance, SINE and multi-model guidance
compose with SDEdit and in-painting by being different ``guided`` callables.

One loop serves one start for the whole batch and one start per sample (the grid's row of t0s
in one batch): every sample follows the same timestep schedule T and differs only in the index
where it joins it, so at step i the samples already started all sit at T[i] and the denoiser
runs once on them as a batch (fewer, larger calls: on a CPU a batch of 8 costs ~0.6 per sample
of a batch of 2).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .backbones.base import start_index
from .cancel import checkpoint
from .guidance import blend_known
from .guiders import GuidedFn


class ForwardProcess(Protocol):
    """How x0 is noised to a sampler timestep and where an SDEdit start joins the schedule: a
    family's rounding (a Backbone is one; :data:`SCHEDULER_PROCESS` is diffusers' SD rounding)."""

    def renoise(self, scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor: ...

    def start_index(self, steps: int, t0: float) -> int: ...


class _SchedulerProcess:
    def renoise(self, scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return scheduler.add_noise(x0, noise, t)

    def start_index(self, steps: int, t0: float) -> int:
        return start_index(steps, t0)


SCHEDULER_PROCESS: ForwardProcess = _SchedulerProcess()


@dataclass(frozen=True, eq=False)
class Start:
    """Where the samples join the schedule and what they keep.

    t0: the SDEdit start on 0..1 (1 = pure noise, txt2img), one for the batch or one per sample.
    x0: (1 or B, C, h, w) the base latents in model space: the SDEdit start noises them to the
    first kept timestep; needed for t0 < 1 and for ``mask``.
    mask: (1 or B, 1, h, w) at latent size, 1 = may change (in-painting): after every step the
    region outside it is reset to x0 noised to the next timestep with the same noise, so the
    known content is exactly x0 at the end.
    path: the inversion of x0 (inversion.invert), {i: (1, C, h, w) latent at T[i]}: a sample
    joining at T[j] starts from path[j] instead of x0 noised with its own noise (t0 = 1 joins at
    T[0] too), and the known region of ``mask`` follows path[i] (DiffEdit's choice: the photo's
    own trajectory, not a fresh noise draw)."""

    t0: float | tuple[float, ...] = 1.0
    x0: Tensor | None = None
    mask: Tensor | None = None
    path: Mapping[int, Tensor] | None = None


def join_index(process: ForwardProcess, scheduler, steps: int, t0: float) -> int:
    """The index of the schedule T (after ``set_timesteps(steps)``) where a start at t0 joins
    (0: pure noise, T[0])."""
    return 0 if t0 >= 1.0 else process.start_index(steps, t0) * scheduler.order


def _step_kwargs(scheduler, generator, eta: float) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


def _per_sample(t0: float | Sequence[float], b: int) -> list[float]:
    t0s = [float(t0)] * b if not isinstance(t0, Sequence) else [float(t) for t in t0]
    if len(t0s) != b or not all(0.0 <= t <= 1.0 for t in t0s):
        raise ValueError(f"need one t0 in [0, 1] for the batch or per sample ({b}), got {t0}")
    return t0s


@torch.no_grad()
def sample(
    guided: GuidedFn,
    scheduler,
    noise: Tensor,
    *,
    steps: int,
    start: Start = Start(),
    process: ForwardProcess = SCHEDULER_PROCESS,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    progress: bool = True,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Run the reverse process from ``noise`` (B, C, h, w), one slice per sample, and return the
    clean latents (B, C, h, w).

    ``generator``: the stochastic samplers' step noise (DDPM, DDIM eta > 0): one, or one per
    sample (then a sample draws only at the steps it takes part in). ``on_step(i, t, latents)``
    after each step, i counted from the first step run. Starts that differ need a single-step
    scheduler (DDIM, Euler, DDPM): a multistep one keeps the previous outputs of the whole batch,
    which a growing batch would mix up.
    """
    b = noise.shape[0]
    t0s = _per_sample(start.t0, b)
    x0, mask, path = start.x0, start.mask, start.path
    sdedit = min(t0s) < 1.0 or path is not None
    if (sdedit or mask is not None) and x0 is None:
        raise ValueError("t0 < 1, inversion and in-painting need the base latents x0")
    scheduler.set_timesteps(steps, device=noise.device)
    ts = scheduler.timesteps
    # the index of T where each sample joins (0: pure noise at the first timestep)
    joins = [join_index(process, scheduler, steps, t) for t in t0s]
    if path is not None and not {j for j in joins if j < len(ts)} <= set(path):
        raise ValueError(f"the inversion path has no latent at the start indices {joins}")
    if len(set(joins)) > 1 and hasattr(scheduler, "model_outputs"):
        raise ValueError(f"{type(scheduler).__name__} is multistep: sample each t0 on its own")
    x0_b = x0.expand(b, -1, -1, -1) if x0 is not None else None
    first = min(joins)
    # the scheduler's begin index: with one start, set before x0 is noised to it (diffusers'
    # img2img order: flow schedulers noise at their step index); with several, after, so each
    # start is noised at its own timestep (Euler's add_noise uses the begin index once set)
    one_start = len(set(joins)) == 1
    if sdedit and one_start and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    latents = noise * scheduler.init_noise_sigma
    for j in sorted(set(joins)):  # the SDEdit starts: x0 noised to T[j], one call per start
        rows = [k for k in range(b) if joins[k] == j and (t0s[k] < 1.0 or path is not None)]
        if not rows:
            continue
        if j >= len(ts):  # t0 so small that no step is left: the input itself
            latents[rows] = x0_b[rows]
        elif path is not None:  # the inversion's latent at T[j]
            latents[rows] = path[j].expand(len(rows), -1, -1, -1).to(latents)
        elif len(rows) == b:  # one start for the batch: x0 as given, broadcast as diffusers does
            latents = process.renoise(scheduler, x0, noise, ts[j : j + 1].repeat(b))
        else:
            t_j = ts[j : j + 1].repeat(len(rows))
            latents[rows] = process.renoise(scheduler, x0_b[rows], noise[rows], t_j)
    if sdedit and not one_start and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    kw = _step_kwargs(scheduler, generator, eta)
    for i in tqdm(range(first, len(ts)), desc="sampling", disable=not progress, leave=False):
        checkpoint()  # a cancelled job stops between steps
        t = ts[i]
        active = [k for k in range(b) if joins[k] <= i]
        whole = len(active) == b
        if isinstance(generator, list) and "generator" in kw:
            kw["generator"] = generator if whole else [generator[k] for k in active]
        lat = latents if whole else latents[active]
        out = guided(scheduler.scale_model_input(lat, t), t)
        lat = scheduler.step(out, t, lat, **kw, return_dict=False)[0]
        if mask is not None:
            m = mask if whole or mask.shape[0] == 1 else mask[active]
            xk, nk = (x0, noise) if whole else (x0_b[active], noise[active])
            if i + 1 < len(ts) and path is not None:
                known = path[i + 1].expand_as(lat)
            elif i + 1 < len(ts):
                known = process.renoise(scheduler, xk, nk, ts[i + 1 : i + 2].repeat(len(active)))
            else:
                known = xk.expand_as(lat)
            lat = blend_known(lat, known, m)
        if whole:
            latents = lat
        else:
            latents[active] = lat
        if on_step is not None:
            on_step(i - first, t, latents)
    return latents
