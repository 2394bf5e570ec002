"""How one tune run spends its steps: the learning rate at each step, the timesteps it trains
on, and when it may stop early (TuneConfig's ``lr_schedule`` / ``warmup_steps``,
``max_timestep``, ``auto_stop`` / ``probe_every``).

The paper's schedule is the constant 1e-4 of every step over all timesteps for a fixed 128
steps; these are the levers `unitune bench edits --preset time-to-quality` measures against it
(docs/BENCHMARKS.md "Time to quality"). Everything here is a pure function of the step (or of
probes already made), so a resumed run takes exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import TuneConfig

MIN_GAIN = 0.01  # auto_stop: a probe "improves" when it beats the best so far by 1%
PROBE_DRAWS = 8  # auto_stop: fixed (noise, timestep) draws of the probe, in one batch


def lr_at(cfg: TuneConfig, step: int) -> float:
    """The learning rate of training step ``step`` (0-based) of ``cfg.steps``: linear warm-up
    over ``warmup_steps`` (reaching cfg.lr at the last warm-up step), then constant or a cosine
    from cfg.lr down to 0 after the last step."""
    lr = cfg.learning_rate()  # resolved by the tune (TuneConfig.for_model)
    w = cfg.warmup_steps
    if step < w:
        return lr * (step + 1) / w
    if cfg.lr_schedule == "constant":
        return lr
    span = max(cfg.steps - w, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * (step - w + 1) / span))


def squeeze(t: Tensor, frac: float) -> Tensor:
    """Training timesteps (0..1000 scale) from the family's density squeezed into [0, frac x
    1000): the same shape of density, none later than an edit starting at t0 = frac reads.
    Integer timesteps stay integers (rounded down)."""
    if frac >= 1:
        return t
    if t.dtype.is_floating_point:
        return t * frac
    return (t.double() * frac).floor().to(t.dtype)


@dataclass
class Stopper:
    """auto_stop's rule over the probe losses seen so far: stop once ``patience`` probes in a
    row have not beaten the best earlier probe by MIN_GAIN (relative)."""

    patience: int
    losses: list[float] = field(default_factory=list)  # every probe so far (resume keeps them)

    def add(self, loss: float) -> bool:
        """Record one probe; True when the run should stop now."""
        self.losses.append(float(loss))
        if not self.patience:
            return False
        best, misses = math.inf, 0
        for v in self.losses:
            if v < best * (1 - MIN_GAIN):
                best, misses = v, 0
            else:
                misses += 1
        return misses >= self.patience


@dataclass(frozen=True)
class Probe:
    """The fixed-noise reconstruction loss of the tune prompt: the same PROBE_DRAWS noises and
    timesteps (drawn once, from their own generator: the training draws are untouched) through
    the model being tuned, without gradients. Its fall flattens when the photo is learnt."""

    noisy: Tensor  # (n, C, h, w) x0 noised at t
    target: Tensor  # (n, C, h, w) what the family's loss compares the prediction with
    x0: Tensor
    t: Tensor  # (n,) timesteps
    cond: object  # n-row conditioning (the tune prompt; an SR stage's augmented low image)

    @classmethod
    def make(cls, bb, cfg: TuneConfig, x0: Tensor, cond, hw) -> Probe:
        """Draws for the one-row base latents ``x0`` (1, C, h, w) and one-row ``cond``."""
        gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        n = PROBE_DRAWS
        x = x0.expand(n, -1, -1, -1)
        noise = torch.randn((n, *x0.shape[1:]), generator=gen).to(x0.device, x0.dtype)
        t = squeeze(bb.sample_timesteps(n, gen, cfg.timestep_density, hw), cfg.max_timestep)
        t = t.to(x0.device)
        c = bb.training_cond(cond.expand(n), gen, hw)
        return cls(bb.add_noise(x, noise, t), bb.target(x, noise, t), x, t, c)

    def loss(self, bb, module, amp) -> float:
        with torch.no_grad(), amp:
            pred = bb.denoise(module, self.noisy, self.t, self.cond)
        return float(bb.loss(pred, self.target, self.x0, self.noisy, self.t))
