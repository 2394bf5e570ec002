"""Inversion start: the photo's latent carried deterministically from t = 0 up to the edit's
start t0 by the sampler's ODE run backwards (DDIM inversion, Song et al. 2021 §4.3, as
DiffEdit and null-text inversion use it; the Euler ODE backwards for flow models), so that
sampling from there retraces the photo where the edit prompt agrees with it, instead of starting
from the photo noised with a fresh draw (SDEdit).

Under a model tuned on the photo the inversion is close to exact: with the tune prompt at
CFG 1 the tuned model's ODE maps its one image to a latent and back. What breaks it is guidance
(CFG w > 1 amplifies the difference between the prompts at every step); the cheap fix measured
in the literature is negative-prompt inversion (Miyake et al. 2023): sample with the inversion's
prompt as CFG's unconditional one, so the guided prediction equals the inverted one wherever
the edit prompt adds nothing (``EditConfig.inversion_negative``).

The loop takes a guided denoiser and a backbone's inverse scheduler (``Backbone.
inverse_scheduler``: diffusers' DDIMInverseScheduler, IF's on the eps half of [eps, v],
``flow.FlowInverse``), as ``sampling.sample`` does forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .cancel import checkpoint
from .guiders import Denoiser, GuidedFn

if TYPE_CHECKING:
    from .backbones.base import Conditioning


@dataclass(frozen=True, eq=False)
class Inversion:
    """What an edit's plan holds for ``--start inversion``: the model and prompt the photo is
    inverted under (the tuned checkpoint's view and the tune prompt, at CFG 1: the conditional
    prediction alone, the one whose ODE the tune fitted to the photo)."""

    model: Denoiser  # the tuned checkpoint's view (state.ModelState.tuned)
    source: Conditioning  # one row: the tune prompt
    negative: bool  # negative-prompt inversion: the edit's CFG baseline is the tune prompt

    def build(self) -> GuidedFn:
        model, source = self.model, self.source

        def guided(x: Tensor, t: Tensor) -> Tensor:
            return model(x, t, source.expand(x.shape[0]))

        return guided

    def describe(self) -> str:
        fix = ", negative-prompt inversion" if self.negative else ""
        return f"inversion under the tuned model and the tune prompt{fix}"


def check_aligned(inverse, forward, steps: int) -> None:
    """Refuse a scheduler whose inverse does not land on the sampler's own timesteps (diffusers'
    DDIMInverseScheduler offers "leading" and "trailing" spacing only)."""
    inverse.set_timesteps(steps)
    forward.set_timesteps(steps)
    if not torch.equal(inverse.timesteps.flip(0).cpu(), forward.timesteps.cpu()):
        from .errors import UserError

        raise UserError(
            "--start inversion: this model's scheduler spacing "
            f"({forward.config.get('timestep_spacing')!r}) has no exact inverse",
            "use --start noise",
        )


@torch.no_grad()
def invert(
    guided: GuidedFn,
    inverse,
    x0: Tensor,
    *,
    steps: int,
    first: int,
    progress: bool = False,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> dict[int, Tensor]:
    """Invert ``x0`` (1, C, h, w) up to the sampler's timestep T[first] of ``steps``.

    Returns the path {i: latent at T[i]} for every i in [first, steps): ``sampling.Start(path=)``
    starts a sample joining at T[j] from path[j] and keeps a mask's outside on path[i]. The
    inverse scheduler's timesteps are T reversed, so its k-th step lands on T[steps - 1 - k]
    (diffusers' DiffEdit ``invert`` runs the same loop for ``inpaint_strength``)."""
    inverse.set_timesteps(steps, device=x0.device)
    ts = inverse.timesteps[: max(steps - first, 0)]  # lowest noise first, up to T[first]
    x, path = x0, {}
    for k, t in enumerate(tqdm(ts, desc="inverting", disable=not progress, leave=False)):
        checkpoint()  # a cancelled job stops between steps
        out = guided(inverse.scale_model_input(x, t), t)
        x = inverse.step(out, t, x, return_dict=False)[0]
        path[steps - 1 - k] = x
        if on_step is not None:
            on_step(k, t, x)
    return path
