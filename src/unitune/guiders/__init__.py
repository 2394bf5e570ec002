"""Guiders: one guidance method per module, each a frozen record of (views, conditionings,
weights) whose ``build()`` returns the guided denoiser the one sampling loop takes.

Pure builders, as diffusers' ``guiders/`` and k-diffusion's samplers: a guider never opens a
file or changes a weight; the edit's plan (edit.py) resolves the views (state.ModelState) and
encodes the prompts first. The mixing math itself is in ``unitune.guidance``.

- :class:`~unitune.guiders.cfg.CFG`: classifier-free guidance; UniTune's prompt guidance is CFG
  against a base prompt instead of the empty one (UniTune §3.3).
- :class:`~unitune.guiders.sine.SINE`: the tuned model guides the pretrained one for t > K
  (SINE §3.2, eq. 3).
- :class:`~unitune.guiders.multi.MultiModel`: several tunes, each with a prompt and a weight,
  guide one base model (SINE §4.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from ..backbones.base import Conditioning

# guided(x_t (B, C, h, w) already scaled by the scheduler, t scalar tensor) -> model output
GuidedFn = Callable[[Tensor, Tensor], Tensor]
# a model (one weight state of a network, state.View): (x_t, t, conditioning) -> its prediction
Denoiser = Callable[[Tensor, Tensor, "Conditioning"], Tensor]


class Guider(Protocol):
    """What an edit's plan holds for its method: ``build()`` makes the guided denoiser,
    ``describe()`` says what it is (EditPlan.describe)."""

    name: str

    def build(self) -> GuidedFn: ...

    def describe(self) -> str: ...  # one line: the method and its weights


__all__ = ["Denoiser", "GuidedFn", "Guider"]
