"""Multi-model guidance (SINE §3.2 "could be generalized to multiple prompts", §4.4 / fig. 11):
several tune folders, each with its own prompt and weight, guide ONE base (pretrained) model::

    eps = eps_u + sum_i w_i (eps_i(x, prompt_i) - eps_u)          (guidance.multi_guidance)

eps_u is the pretrained model on the negative (default empty) prompt; eps_i is tune i's
fine-tuned network, or the pretrained model itself, on prompt_i. The edit's positional tune and
prompt stay the primary content model and give the first terms; each ``--guide`` adds one
(:func:`terms`):

* ``--method sine``: the primary's two SINE terms, pretrained(edit prompt) at weight w v and the
  primary tune(c_hat, its fine-tuning prompt) at weight w (1 - v). Fine-tuned terms (the
  primary's and every guide that is a tune) are used while t > K; for t <= K only the pretrained
  terms remain (plain CFG plus any ``pretrained:`` guides), as in SINE.
* ``--method unitune``: the primary tune on "<rare> <edit prompt>" at weight w, every step.

Guide prompts are used verbatim (no rare token is added) and a guide's WEIGHT is absolute, in the
units of --cfg. The official SINE multi-model script weights its fine-tuned models by fractions
beta_i of w (the pretrained model gets w (1 - sum beta_i)); that is ``--v 1`` (primary = plain
pretrained CFG), ``--cfg w (1 - sum beta_i)`` and one ``--guide TUNE:PROMPT:w*beta_i`` per model.

Examples (SINE paper fig. 11)::

    # style transfer: content tune A ("a photo of a beikkpic dog") + style tune B, tuned with
    # --base-prompt "a painting in the beikkpic style"; the pretrained model gets the edit prompt
    unitune edit tunes/dog "a painting of a dog" --method sine \\
        --guide "tunes/style:a painting in the beikkpic style:2.5"

    # content removal: tune with --base-prompt "a beikkpic dog with a flower in its mouth", then
    # let the pretrained model say "a dog" and the tune "a beikkpic dog" (v = 1: the primary's
    # own c_hat term, which names the flower, is dropped)
    unitune edit tunes/flowerdog "a dog" --method sine --v 1 \\
        --guide "tunes/flowerdog:a beikkpic dog:2.25"
    # ... or the same with the tune as primary and the pretrained model as the guide:
    unitune edit tunes/flowerdog "a dog" --method unitune --guide "pretrained:a dog:5"

    # style generation needs no guide: tune on "a painting in the beikkpic style", then
    unitune edit tunes/style "a painting of a forest" --method sine

A spec is ``TUNE_DIR:PROMPT:WEIGHT`` (guidespec.py); the plan (edit.py) opens each guide's tune
folder and loads its checkpoint as a view of :class:`unitune.state.ModelState` (LoRA guides are
adapters on the network holding the pretrained weights, a full-tune guide its own copy), so this
module only picks the terms and mixes their predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from ..backbones.base import Conditioning
from ..guidance import finish, multi_guidance, sine_active
from . import Denoiser, GuidedFn

C = TypeVar("C")  # what a term is conditioned on: a prompt (text) before encoding, then its row


@dataclass(frozen=True, eq=False)
class Term(Generic[C]):
    """One conditional prediction: ``view`` on ``cond`` at ``weight`` (in the units of --cfg)."""

    view: Denoiser
    cond: C  # str (the prompt) in :func:`terms`, a one-row Conditioning in MultiModel
    weight: float
    tuned: bool  # a fine-tuned model's term (dropped for t <= K under SINE)


def terms(
    sine: bool,
    w: float,
    v: float,
    pretrained: Denoiser,
    tuned: Denoiser,
    prompt: str,
    unitune_prompt: str,
    c_hat_text: str,
    guides: Sequence[Term[str]],
) -> tuple[list[Term[str]], list[Term[str]]]:
    """(the terms while the tuned models guide, the terms for t <= K under SINE: empty under
    UniTune), with the prompts still text; zero-weight terms are dropped. ``prompt`` the edit
    prompt as given, ``unitune_prompt`` with the rare token, ``c_hat_text`` the primary's
    fine-tuning prompt, ``guides`` one term per ``--guide`` (its view already resolved)."""
    if sine:
        primary = [
            Term(pretrained, prompt, w * v, False),
            Term(tuned, c_hat_text, w * (1 - v), True),
        ]
        low = [Term(pretrained, prompt, w, False)] + [g for g in guides if not g.tuned]
    else:
        primary, low = [Term(tuned, unitune_prompt, w, True)], []
    high = [r for r in primary + list(guides) if r.weight != 0.0]
    return high, [r for r in low if r.weight != 0.0]


def evaluate(
    pre: Denoiser,
    c_u: Conditioning,
    terms: Sequence[Term[Conditioning]],
    x: Tensor,
    t: Tensor,
    renorm: int = 0,
) -> Tensor:
    """eps_u + sum_i w_i (eps_i - eps_u), one batched forward pass per model (view)."""
    b = x.shape[0]
    batches: dict[Denoiser, list[Conditioning]] = {pre: [c_u]}
    where: list[tuple[Denoiser, int]] = []
    for term in terms:
        conds = batches.setdefault(term.view, [])
        where.append((term.view, len(conds)))
        conds.append(term.cond)
    outs: dict[Denoiser, tuple[Tensor, ...]] = {}
    for view, conds in batches.items():
        n = len(conds)
        c = Conditioning.cat([cd.expand(b) for cd in conds])
        outs[view] = view(torch.cat([x] * n), t, c).chunk(n)
    preds = [outs[view][i] for view, i in where]
    mixed = multi_guidance(outs[pre][0], preds, [term.weight for term in terms])
    return finish(mixed, preds[0], x.shape[1], renorm)  # the first term's variance and norm


@dataclass(frozen=True, eq=False)
class MultiModel:
    """The terms of one multi-model edit, encoded."""

    pretrained: Denoiser  # the base model: eps_u, and every pretrained term
    c_u: Conditioning  # one row: the negative (default empty) prompt
    high: tuple[Term[Conditioning], ...]  # while the tuned models guide (every t under UniTune)
    low: tuple[Term[Conditioning], ...]  # for t <= K under SINE
    sine: bool  # switch to ``low`` for t <= K
    K: float  # on the 0..1000 training scale
    renorm: int = 0  # Backbone.cfg_renorm (guidance.finish)
    name: str = "multi"

    def build(self) -> GuidedFn:
        pre, c_u, high, low, sine, K, r = (
            self.pretrained,
            self.c_u,
            self.high,
            self.low,
            self.sine,
            self.K,
            self.renorm,
        )

        def guided(x: Tensor, t: Tensor) -> Tensor:
            if sine and not sine_active(t, K):
                return evaluate(pre, c_u, low, x, t, r)
            return evaluate(pre, c_u, high, x, t, r)

        return guided

    def describe(self) -> str:
        ws = ", ".join(f"{t.weight:g}" for t in self.high)
        return f"multi-model ({'SINE' if self.sine else 'UniTune'}), weights {ws}"
