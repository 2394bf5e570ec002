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

Memory: LoRA tunes share one UNet that holds the pretrained weights (the editor's own for a LoRA
primary, else the pretrained copy SINE keeps for full tunes), each as a named PEFT adapter that
is switched on for its own forward pass only. A full tune needs its own UNet (pretrained weights
+ its delta): heavy (one UNet per full guide) but exact. Everything loaded is kept on the Editor,
so further edits with the same guides load nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import adapters, patches
from .errors import UserError
from .guidance import multi_guidance, sine_active
from .guidespec import GuideSpec, as_spec, check_same_base
from .models import encode_prompts
from .sampling import GuidedFn
from .sine import (
    UNetView,
    pretrained_unet,
    set_home,
    tuned_prompt,
    tuned_view,
)
from .tunefolder import TuneFolder

if TYPE_CHECKING:
    from .config import EditConfig
    from .edit import Editor

# --- loading guide models ----------------------------------------------------------------------


def _canonical_state(unet) -> dict[str, Tensor]:
    """A pretrained UNet's weights under plain diffusers names: PEFT adapters and the positional
    module left out, their wrapped base layers under the original names; cloned."""
    out = {}
    for k, v in unet.state_dict().items():
        if "lora_" in k or k.startswith("conv_in.pos_proj."):
            continue
        k = k.replace(".base_layer.", ".")
        if k.startswith("conv_in.conv."):
            k = "conv_in." + k[len("conv_in.conv.") :]
        out[k] = v.detach().clone()
    return out


def _fresh_unet(src):
    """A new UNet with ``src``'s pretrained weights (no adapters, no positional module)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet = type(src).from_config(src.config)
    unet.load_state_dict(_canonical_state(src), strict=True, assign=True)
    dev = next(src.parameters()).device
    return unet.to(dev).requires_grad_(False).eval()


def _pos_proj(unet, tensors: dict[str, Tensor], n_freq: int) -> nn.Module:
    """A checkpoint's positional projection as a standalone module on ``unet``'s device."""
    conv = patches.get(unet).conv if patches.get(unet) is not None else unet.conv_in
    proj = nn.Conv2d(4 * n_freq, conv.out_channels, kernel_size=1)
    sd = {k[4:]: v for k, v in tensors.items() if k.startswith("pos.")}
    proj.load_state_dict(sd)
    return proj.to(conv.weight.device, conv.weight.dtype).requires_grad_(False).eval()


@dataclass(eq=False)
class _Loaded:
    """A guide tune's checkpoint, loaded: which UNet, adapter and positional projection."""

    unet: Any
    adapter: str | None
    pos: tuple[nn.Module, int] | None


def _load_guide(editor: Editor, folder: TuneFolder, step: int) -> _Loaded:
    cache: dict[tuple[str, int], _Loaded] = editor.__dict__.setdefault("_guides", {})
    key = (str(folder.path.resolve()), step)
    if key in cache:
        return cache[key]
    tensors, meta = folder.load_checkpoint(step)
    n_freq = int(meta["pos_freqs"]) if meta.get("patches") else 0
    if meta.get("kind") == "lora":
        from peft import LoraConfig
        from peft.utils import set_peft_model_state_dict

        unet = pretrained_unet(editor, stable=True)  # shared: adapters live on the base weights
        name = f"guide{len(cache)}"
        with warnings.catch_warnings():  # "multiple adapters in the model": that is the point
            warnings.simplefilter("ignore", UserWarning)
            unet.add_adapter(LoraConfig(**meta["lora_config"]), adapter_name=name)
        lora = {k: v for k, v in tensors.items() if not k.startswith("pos.")}
        set_peft_model_state_dict(unet, lora, adapter_name=name)
        unet.to(next(iter(unet.parameters())).device)
        set_home(unet, 1.0)
        pos = None
        if meta.get("patches"):
            if patches.get(unet) is None:
                patches.install(unet, n_freq).enabled = False  # off unless a view turns it on
            pos = (_pos_proj(unet, tensors, n_freq), n_freq)
        loaded = _Loaded(unet, name, pos)
    else:
        unet = _fresh_unet(pretrained_unet(editor))
        adapters.apply_checkpoint(unet, tensors, meta)  # installs + loads the positional module
        mod = patches.get(unet)
        loaded = _Loaded(unet, None, (mod.pos_proj, mod.n_freq) if mod is not None else None)
    cache[key] = loaded
    return loaded


# --- the guided function -----------------------------------------------------------------------


@dataclass(eq=False)
class _Term:
    view: UNetView
    emb: Tensor  # (1, 77, D)
    weight: float


def _evaluate(pre: UNetView, emb_u: Tensor, terms: list[_Term], x: Tensor, t: Tensor) -> Tensor:
    """eps_u + sum_i w_i (eps_i - eps_u), one batched forward pass per model (view)."""
    b = x.shape[0]
    batches: dict[UNetView, list[Tensor]] = {pre: [emb_u]}
    where: list[tuple[UNetView, int]] = []
    for term in terms:
        embs = batches.setdefault(term.view, [])
        where.append((term.view, len(embs)))
        embs.append(term.emb)
    outs: dict[UNetView, tuple[Tensor, ...]] = {}
    for view, embs in batches.items():
        n = len(embs)
        e = torch.cat([em.expand(b, -1, -1) for em in embs])
        outs[view] = view(torch.cat([x] * n), t, e).chunk(n)
    conds = [outs[view][i] for view, i in where]
    return multi_guidance(outs[pre][0], conds, [term.weight for term in terms])


def multi_guided(editor: Editor, prompt: str, cfg: EditConfig) -> GuidedFn:
    """The multi-model guided denoiser for one edit: the primary (the editor's current
    checkpoint, ``prompt``) plus one term per ``cfg.guides`` entry (see the module docstring)."""
    if cfg.prompt_guidance is not None:
        raise UserError(
            "--prompt-guidance does not combine with --guide",
            "drop one (a 'pretrained:PROMPT:-W' guide pushes away from a prompt)",
        )
    specs = [(str(g), as_spec(g)) for g in cfg.guides]
    lora_scale = cfg.lora_scale
    pre = UNetView(pretrained_unet(editor), None, pos=None, home_scale=lora_scale)
    tuned = tuned_view(editor, lora_scale)
    me = (str(editor.folder.path.resolve()), editor.step)

    def view_for(text: str, g: GuideSpec) -> UNetView:
        if g.tune is None:
            return pre
        folder = TuneFolder.open(g.tune)
        check_same_base(editor.folder, folder, text)
        step = folder.resolve_checkpoint(g.step)
        if step == 0:
            return pre
        if (str(folder.path.resolve()), step) == me:
            return tuned
        ld = _load_guide(editor, folder, step)
        return UNetView(ld.unet, ld.adapter, 1.0, ld.pos, home_scale=lora_scale)

    views = [view_for(text, g) for text, g in specs]  # loads (and checks) before encoding
    w, v, K = cfg.cfg, cfg.sine_v, cfg.sine_K
    sine = cfg.method == "sine"
    # (model, prompt, weight, fine-tuned?) for t > K (every t under method unitune)
    if sine:
        primary = [(pre, prompt, w * v, False), (tuned, tuned_prompt(editor), w * (1 - v), True)]
    else:
        primary = [(tuned, editor.full_prompt(prompt, cfg), w, True)]
    extra = [(vw, g.prompt, g.weight, vw is not pre) for vw, (_, g) in zip(views, specs)]
    rows = [r for r in primary + extra if r[2] != 0.0]
    # t <= K under SINE: plain CFG on the pretrained model, plus the guides that are pretrained
    low_rows = [(pre, prompt, w, False)] + [r for r in extra if not r[3]] if sine else []
    low_rows = [r for r in low_rows if r[2] != 0.0]
    texts = [cfg.negative_prompt] + [r[1] for r in rows + low_rows]
    embs = encode_prompts(editor.comp, texts).chunk(len(texts))
    terms = [_Term(r[0], e, r[2]) for r, e in zip(rows, embs[1 : 1 + len(rows)])]
    low = [_Term(r[0], e, r[2]) for r, e in zip(low_rows, embs[1 + len(rows) :])]

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if sine and not sine_active(t, K):
            return _evaluate(pre, embs[0], low, x, t)
        return _evaluate(pre, embs[0], terms, x, t)

    return guided
