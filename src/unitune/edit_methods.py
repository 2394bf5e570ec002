"""What an edit's plan resolves for its method and its start, against an :class:`~unitune.
edit.Editor`: the guider (guiders/: its views opened, guide tunes checked and loaded, prompts
encoded), and the inversion start and automatic mask (inversion.py, automask.py), both under the
checkpoint the editor has applied. ``Editor.plan`` calls these; they use the editor's public
API only (its state, folder, encoders)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Protocol

from torch import Tensor

from . import automask, route
from .backbones.base import Backbone, Conditioning
from .config import EditConfig, TuneConfig
from .errors import UnituneWarning, UserError
from .guiders import Guider
from .guiders.cfg import CFG
from .guiders.multi import MultiModel, Term, terms
from .guiders.sine import SINE
from .guidespec import GuideSpec, as_spec, check_same_base
from .inversion import Inversion
from .route import Route
from .tunefolder import TuneFolder


class Editor(Protocol):
    """What these functions use of an ``edit.Editor`` (typed here: edit.py imports this)."""

    backbone: Backbone
    state: Any  # state.ModelState
    folder: TuneFolder
    tune_cfg: TuneConfig

    def encode(
        self, prompts: list[str], hw: tuple[int, int], warn: bool = True, guidance=None
    ) -> list[Conditioning]: ...

    def negative(self, cfg: EditConfig, hw: tuple[int, int], guidance=None) -> Conditioning: ...

    def prompt_text(self, prompt: str, cfg: EditConfig) -> str: ...

    def full_prompt(self, prompt: str, cfg: EditConfig) -> str: ...


def source_prompt(ed: Editor, cfg: EditConfig) -> str:
    """What the photo is inverted under and the auto mask compares the edit with: the tune
    prompt; with ``rare_token`` off (e.g. SDEdit on the pretrained model) the same words without
    the rare token, as the edit prompt is sampled without it."""
    text = ed.folder.manifest.tuned_prompt
    if cfg.rare_token:
        return text
    return " ".join(w for w in text.split() if w != ed.tune_cfg.rare_token)


def make_guider(
    ed: Editor,
    prompt: str,
    cfg: EditConfig,
    hw: tuple[int, int],
    weights: tuple[float, float | None] | None = None,
) -> Guider:
    """The guider of this edit's method on the checkpoint applied now: its views resolved
    (guide tunes opened and loaded here) and its prompts encoded. ``weights``: (w, g) of
    ``Backbone.guidance_weights`` when already computed."""
    w, g = weights or ed.backbone.guidance_weights(cfg.cfg, cfg.true_cfg)
    r = ed.backbone.cfg_renorm  # the family's norm matching of every mix (guidance.finish)
    st, text = ed.state, ed.prompt_text(prompt, cfg)
    c_u = ed.negative(cfg, hw, g)
    c_hat_text = ed.folder.manifest.tuned_prompt
    pre, tuned = st.pretrained(), st.tuned(cfg.lora_scale)
    if cfg.guides:  # multi-model guidance: extra TUNE_DIR:PROMPT:WEIGHT terms
        if cfg.prompt_guidance is not None:
            raise UserError(
                "--prompt-guidance does not combine with --guide",
                "drop one (a 'pretrained:PROMPT:-W' guide pushes away from a prompt)",
            )
        # views load (and are checked) before any prompt is encoded; a guide that is the
        # pretrained model or the applied checkpoint IS that view (one batched pass)
        specs = [(str(s), as_spec(s)) for s in cfg.guides]  # each spec parsed once
        views = [guide_view(ed, text, g, pre, tuned) for text, g in specs]
        guides = [Term(v, g.prompt, g.weight, v is not pre) for v, (_, g) in zip(views, specs)]
        sine = cfg.method == "sine"
        high, low = terms(
            sine,
            w,
            cfg.sine_v,
            pre,
            tuned,
            prompt,
            ed.full_prompt(prompt, cfg),
            c_hat_text,
            guides,
        )
        conds = ed.encode([t.cond for t in high + low], hw, guidance=g)
        enc = [replace(t, cond=c) for t, c in zip(high + low, conds)]
        hi, lo = tuple(enc[: len(high)]), tuple(enc[len(high) :])
        return MultiModel(pre, c_u, hi, lo, sine, cfg.sine_K, r)
    if cfg.method == "sine":
        c_edit, c_hat = ed.encode([prompt, c_hat_text], hw, guidance=g)
        return SINE(pre, tuned, c_u, c_edit, c_hat, w, cfg.sine_v, cfg.sine_K, r)
    if cfg.prompt_guidance is not None:
        pg = ed.full_prompt(cfg.prompt_guidance, cfg)
        base, cond = ed.encode([pg, text], hw, guidance=g)
        return CFG(tuned, base, cond, w, prompt_guidance=True, renorm=r)
    if cfg.inversion_negative:  # negative-prompt inversion: the tune prompt as baseline
        base, cond = ed.encode([source_prompt(ed, cfg), text], hw, guidance=g)
        return CFG(tuned, base, cond, w, prompt_guidance=True, renorm=r)
    (cond,) = ed.encode([text], hw, guidance=g)
    return CFG(tuned, c_u, cond, w, renorm=r)


def guide_view(ed: Editor, spec: str, g: GuideSpec, pre, tuned):
    """A ``--guide`` spec's model (``spec`` its text, ``g`` parsed) as a view: ``pre`` (the
    pretrained model), ``tuned`` (the applied checkpoint) or another tune's checkpoint (its
    folder opened, checked and its weights loaded once)."""
    if g.tune is None:
        return pre
    folder = TuneFolder.open(g.tune)
    check_same_base(ed.folder, folder, spec)
    step = folder.resolve_checkpoint(g.step)
    if step == 0:
        return pre
    if (str(folder.path.resolve()), step) == ed.state.current:
        return tuned
    return ed.state.guide(folder, step)


def route_of(
    ed: Editor, prompt: str, cfg: EditConfig, hw: tuple[int, int], wg, x0: Tensor
) -> Route:
    """The global / local route of an edit (route.py): DiffEdit's raw map under ``cfg`` (the
    resolved ``route.local_config``, whose mask a local edit then uses; ``wg``: its (w, g)) and
    the tuned checkpoint applied now, against ``cfg.route_spread``."""
    texts = [source_prompt(ed, cfg), ed.full_prompt(prompt, cfg)]
    c_src, c_edit = ed.encode(texts, hw, warn=False, guidance=wg[1])
    return route.decide(edit_map(ed, cfg, hw, wg, x0, c_src, c_edit), cfg.route_spread)


def edit_map(ed: Editor, cfg: EditConfig, hw, wg, x0: Tensor, c_src, c_edit) -> Tensor:
    """DiffEdit's raw map (1, 1, h, w) of the edit ``c_edit`` against the source ``c_src`` under
    the tuned checkpoint applied now, at ``cfg``'s mask settings and CFG ``wg`` = (w, g)."""
    neg = ed.negative(cfg, hw, wg[1])
    tuned = ed.state.tuned(cfg.lora_scale)
    return automask.map_for_edit(tuned, ed.backbone, cfg, hw, x0, c_edit, c_src, neg, wg[0])


def plan_start(
    ed: Editor,
    prompt: str,
    cfg: EditConfig,
    hw: tuple[int, int],
    w: float,
    g: float | None,
    x0: Tensor | None,
    routed: Route | None = None,
) -> tuple[Inversion | None, Tensor | None]:
    """(the inversion start, the automatic mask (1, 1, h, w) at latent size), each None when
    ``cfg`` does not ask for it; both under the tuned checkpoint applied now. ``routed``: the
    route's map, taken under this ``cfg`` already (a local edit's mask is cut from it)."""
    if cfg.start != "inversion" and not cfg.auto_mask:
        return None, None
    tuned = ed.state.tuned(cfg.lora_scale)
    texts = [source_prompt(ed, cfg), ed.full_prompt(prompt, cfg)]
    c_src, c_edit = ed.encode(texts, hw, warn=False, guidance=g)
    inversion = auto = None
    if cfg.start == "inversion":
        inversion = Inversion(tuned, c_src, cfg.inversion_negative)
        if len(cfg.seeds) > 1:
            what = "--start inversion" if routed is None else "a routed local edit (an inversion)"
            warnings.warn(
                f"{what} is deterministic: every seed gives the same image "
                "(use one seed, or --start noise / --route off for variations)",
                UnituneWarning,
                stacklevel=4,
            )
    if cfg.auto_mask:
        local = routed is not None and routed.local  # the route's map is this cfg's already
        m = routed.map if local else edit_map(ed, cfg, hw, (w, g), x0, c_src, c_edit)
        auto = automask.for_map(m, cfg)
    return inversion, auto
