"""SINE model-based classifier-free guidance (Zhang et al. 2022, §3.2, eq. 3).

The fine-tuned model guides the PRETRAINED one: for t > K
    eps = eps_u + w (v eps_pre(x, edit) + (1 - v) eps_ft(x, c_hat) - eps_u)
and for t <= K plain CFG on the pretrained model, eps_u + w (eps_pre - eps_u). eps_u and eps_pre
come from the pretrained model (the negative / empty prompt and the edit prompt, WITHOUT the rare
token) and are evaluated in ONE batched forward pass; eps_ft comes from the tuned model with its own
fine-tuning prompt c_hat (``TuneConfig.prompt()``, as recorded in the tune's manifest), with the
positional module (patch tunes) given the whole image.

``v`` weights the PRETRAINED model, as in the paper (default 0.7). The official code's flags
mostly weight the OTHER model: its diffusers script's ``--model_based_guidance_scale`` (default
0.3) and its multi-model script's ``--beta`` weight the FINE-TUNED model(s), i.e. 1 - v (the
pretrained model gets 1 - their sum); only its LDM single-model ``--cond_beta`` is v itself. Its
LDM samplers switch inclusively (t >= K); ours follows the paper and its diffusers script (t > K).

With a LoRA tune both models are one UNet: the adapter is switched off for the pretrained
predictions and set to ``lora_scale`` for the tuned one (no second copy in memory). With a full tune
a second UNet holding the pretrained weights is built once and kept on the Editor.

The model "views" here (:class:`UNetView`) are shared with multi-model guidance (``multi.py``):
a view names a UNet plus the state it must be in (which LoRA adapter, which positional
projection), sets that state for one forward pass and puts the UNet back afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import adapters, patches
from .config import ADAPTER
from .guidance import cfg as cfg_mix
from .guidance import sine_active, sine_mix
from .models import encode_prompts
from .sampling import GuidedFn

if TYPE_CHECKING:
    from .config import EditConfig
    from .edit import Denoiser, Editor


def has_adapter(unet, name: str) -> bool:
    return adapters.has_lora(unet) and name in getattr(unet, "peft_config", {})


def activate_adapter(unet, name: str | None, scale: float = 1.0) -> None:
    """Make ``name`` the only active LoRA adapter at ``scale``; None switches every adapter off
    (the base weights alone). A no-op on a UNet without adapters."""
    if not adapters.has_lora(unet):
        return
    if name is None:
        unet.disable_adapters()
        return
    unet.enable_adapters()  # disable_adapters() is a separate flag set_adapters() does not clear
    unet.set_adapters([name], weights=[scale])


def set_home(unet, lora_scale: float) -> None:
    """The state the Editor samples plain UniTune edits in: the tune's own adapter at
    ``lora_scale`` when one is loaded, every other adapter (multi-model guides) off."""
    activate_adapter(unet, ADAPTER if has_adapter(unet, ADAPTER) else None, lora_scale)


@dataclass(eq=False)
class UNetView:
    """One model as a state of a UNet (a ``Denoiser``).

    adapter: the LoRA adapter to activate (None: all adapters off). pos: (projection, n_freq) to
    put in the positional module (None: the module is switched off, i.e. the pretrained input
    conv). home_scale: the scale of the tune's own adapter restored after the call.
    """

    unet: Any
    adapter: str | None = None
    scale: float = 1.0
    pos: tuple[nn.Module, int] | None = None
    home_scale: float = 1.0

    def __call__(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        unet = self.unet
        mod = patches.get(unet)
        saved = (mod.pos_proj, mod.n_freq, mod.enabled) if mod is not None else None
        if mod is None and self.pos is not None:
            raise RuntimeError("positional projection given for a UNet without the module")
        try:
            activate_adapter(unet, self.adapter, self.scale)
            if mod is not None:
                if self.pos is None:
                    mod.enabled = False
                else:
                    mod.pos_proj, mod.n_freq = self.pos
                    mod.enabled = True
            return unet(x, t, encoder_hidden_states=emb).sample
        finally:
            if mod is not None:
                mod.pos_proj, mod.n_freq, mod.enabled = saved
            set_home(unet, self.home_scale)


def pretrained_unet(editor: Editor, stable: bool = False):
    """A UNet holding the PRETRAINED weights (adapters and positional module are the views' job).

    LoRA tunes never touch the base weights: the editor's own UNet. Full tunes at step 0 (nothing
    applied): the editor's UNet too, unless ``stable`` (the caller keeps state on it across
    checkpoint switches, as multi-model guidance does with its adapters). Otherwise a second UNet
    built once from the editor's pretrained snapshot and kept as ``editor._pretrained_unet``.
    """
    unet = editor.comp.unet
    if editor.tune_cfg.method == "lora" and not editor._dirty:
        return unet
    if not stable and not editor._dirty and getattr(editor, "_pretrained_unet", None) is None:
        return unet
    pre = getattr(editor, "_pretrained_unet", None)
    if pre is None:
        pre = copy.deepcopy(unet)
        if editor._dirty:  # the editor's UNet holds a full-tune delta: restore the snapshot
            with torch.no_grad():
                for n, p in pre.named_parameters():
                    p.copy_(editor._pretrained[n].to(p.device))
        pre.eval()
        editor._pretrained_unet = pre
    return pre


def tuned_view(editor: Editor, lora_scale: float) -> UNetView:
    """The editor's current checkpoint (the fine-tuned model) as a view."""
    unet = editor.comp.unet
    mod = patches.get(unet)
    pos = (mod.pos_proj, mod.n_freq) if mod is not None and editor.tune_cfg.patches else None
    adapter = ADAPTER if has_adapter(unet, ADAPTER) else None
    return UNetView(unet, adapter, lora_scale, pos, home_scale=lora_scale)


def pretrained_and_tuned(editor: Editor, lora_scale: float) -> tuple[Denoiser, Denoiser]:
    """Two denoisers over the editor's current checkpoint: (pretrained, fine-tuned)."""
    pre = UNetView(pretrained_unet(editor), None, pos=None, home_scale=lora_scale)
    return pre, tuned_view(editor, lora_scale)


def tuned_prompt(editor: Editor) -> str:
    """c_hat: the prompt the tune was fine-tuned on, e.g. "a photo of a beikkpic cat"."""
    return editor.folder.manifest.get("prompt") or editor.tune_cfg.prompt()


def sine_guided(editor: Editor, prompt: str, cfg: EditConfig) -> GuidedFn:
    """The SINE guided denoiser for one edit prompt (the rare token is NOT added to it)."""
    pre, tuned = pretrained_and_tuned(editor, cfg.lora_scale)
    emb_u, emb_edit, emb_hat = encode_prompts(
        editor.comp, [cfg.negative_prompt, prompt, tuned_prompt(editor)]
    ).chunk(3)
    w, v, K = cfg.cfg, cfg.sine_v, cfg.sine_K

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        # one batched pass of the pretrained model for [eps_u ; eps_pre]
        embs = torch.cat([emb_u.expand(b, -1, -1), emb_edit.expand(b, -1, -1)])
        eps_u, eps_pre = pre(torch.cat([x, x]), t, embs).chunk(2)
        if not sine_active(t, K) or v == 1.0:  # t <= K (or v = 1): plain CFG, pretrained model
            return cfg_mix(eps_u, eps_pre, w)
        eps_ft = tuned(x, t, emb_hat.expand(b, -1, -1))
        return sine_mix(eps_u, eps_pre, eps_ft, w, v)

    return guided
