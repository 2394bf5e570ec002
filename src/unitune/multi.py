"""Multi-model guidance (SINE §3.2 "could be generalized to multiple prompts", §4.4 / fig. 11):
several tune folders, each with its own prompt and weight, guide ONE base (pretrained) model::

    eps = eps_u + sum_i w_i (eps_i(x, prompt_i) - eps_u)          (guidance.multi_guidance)

eps_u is the pretrained model on the negative (default empty) prompt; eps_i is tune i's
fine-tuned UNet, or the pretrained model itself, on prompt_i. The edit's positional tune and
prompt stay the primary content model and give the first terms; each ``--guide`` adds one:

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

A spec is ``TUNE_DIR:PROMPT:WEIGHT`` (see :func:`parse_guide`); TUNE_DIR may be ``pretrained``
(the shared base model) or end in ``@STEP`` to pick a checkpoint (``@0`` = its base model).

Memory: every model is a view of :class:`unitune.state.ModelState`, which loads each guide
once: LoRA guides are adapters on the network holding the pretrained weights, a full-tune guide
is its own copy of the network (heavy, but exact). Further edits with the same guides load
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .backbones.base import Conditioning
from .config import EditConfig
from .errors import UserError
from .guidance import keep_variance, multi_guidance, sine_active
from .guidespec import GuideSpec, as_spec, check_same_base
from .sampling import Denoiser, GuidedFn
from .state import ModelState
from .tunefolder import TuneFolder


@dataclass(eq=False)
class _Term:
    view: Denoiser
    cond: Conditioning  # one row
    weight: float


def _evaluate(pre: Denoiser, c_u: Conditioning, terms: list[_Term], x: Tensor, t: Tensor) -> Tensor:
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
    return keep_variance(mixed, preds[0], x.shape[1])  # learned variances: the first term's


def multi_guided(
    state: ModelState,
    primary: TuneFolder,
    encode: Callable[[list[str]], list[Conditioning]],
    c_u: Conditioning,
    prompt: str,
    unitune_prompt: str,
    c_hat_text: str,
    cfg: EditConfig,
) -> GuidedFn:
    """The multi-model guided denoiser for one edit: the primary (the state's applied checkpoint
    of ``primary``) plus one term per ``cfg.guides`` entry (see the module docstring).
    ``encode``: prompts -> one-row conditionings; ``prompt`` the edit prompt as given,
    ``unitune_prompt`` with the rare token, ``c_hat_text`` the primary's fine-tuning prompt."""
    if cfg.prompt_guidance is not None:
        raise UserError(
            "--prompt-guidance does not combine with --guide",
            "drop one (a 'pretrained:PROMPT:-W' guide pushes away from a prompt)",
        )
    specs = [(str(g), as_spec(g)) for g in cfg.guides]
    pre = state.pretrained()
    tuned = state.tuned(cfg.lora_scale)

    def view_for(text: str, g: GuideSpec) -> Denoiser:
        if g.tune is None:
            return pre
        folder = TuneFolder.open(g.tune)
        check_same_base(primary, folder, text)
        step = folder.resolve_checkpoint(g.step)
        if step == 0:
            return pre
        if (str(folder.path.resolve()), step) == state.current:
            return tuned
        return state.guide(folder, step)

    views = [view_for(text, g) for text, g in specs]  # loads (and checks) before encoding
    w, v, K = cfg.cfg, cfg.sine_v, cfg.sine_K
    sine = cfg.method == "sine"
    # (model, prompt, weight, fine-tuned?) for t > K (every t under method unitune)
    if sine:
        primary_rows = [(pre, prompt, w * v, False), (tuned, c_hat_text, w * (1 - v), True)]
    else:
        primary_rows = [(tuned, unitune_prompt, w, True)]
    extra = [(vw, g.prompt, g.weight, vw is not pre) for vw, (_, g) in zip(views, specs)]
    rows = [r for r in primary_rows + extra if r[2] != 0.0]
    # t <= K under SINE: plain CFG on the pretrained model, plus the guides that are pretrained
    low_rows = [(pre, prompt, w, False)] + [r for r in extra if not r[3]] if sine else []
    low_rows = [r for r in low_rows if r[2] != 0.0]
    conds = encode([r[1] for r in rows + low_rows])
    terms = [_Term(r[0], c, r[2]) for r, c in zip(rows, conds[: len(rows)])]
    low = [_Term(r[0], c, r[2]) for r, c in zip(low_rows, conds[len(rows) :])]

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if sine and not sine_active(t, K):
            return _evaluate(pre, c_u, low, x, t)
        return _evaluate(pre, c_u, terms, x, t)

    return guided
