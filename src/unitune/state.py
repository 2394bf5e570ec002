"""The one owner of the weights a backbone's network holds: :class:`ModelState`.

A backbone loads its network once (``backbone.module``, the pretrained weights). Everything
that changes those weights goes through here:

- a tune folder's checkpoint, applied as a full-tune delta (added in place; the pretrained
  weights are snapshotted to the CPU first) or as the LoRA adapter ``config.ADAPTER``, with its
  positional module for SINE patch tunes (:meth:`ModelState.use`);
- views: a view is a denoiser callable ``(x, t, cond) -> prediction`` for one model: the tuned
  checkpoint at a LoRA scale (:meth:`tuned`), the pretrained model (:meth:`pretrained`) or another
  tune's checkpoint (:meth:`guide`). A view sets the adapters and the positional module it needs
  for its own forward pass, so SINE, multi-model guidance and best-of's pretrained judge mix
  views freely and no caller touches a weight;
- the cache of guide models (multi-model guidance) and of the pretrained copy a full tune needs
  beside its delta;
- training (:meth:`training`): makes the weights trainable and, on exit, puts the network back
  exactly as it was (adapters unloaded, deltas removed, positional module taken out).

Memory: LoRA views share the loaded network (adapters switched per pass). A full-tune delta
lives in the loaded network; a pretrained view beside it needs a second copy (built once). Each
full-tune guide is its own copy; LoRA guides are adapters on the network that holds the
pretrained weights.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import adapters, patches
from .backbones.base import Backbone, Conditioning
from .config import ADAPTER, TuneConfig
from .tunefolder import TuneFolder

_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_of(backbone: Backbone) -> ModelState:
    """The ModelState of a loaded backbone (one per backbone, made on first use)."""
    st = _STATES.get(backbone)
    if st is None:
        st = _STATES[backbone] = ModelState(backbone)
    return st


@dataclass(eq=False)
class View:
    """One model as a weight state of a network: call it like a denoiser.

    adapter: the LoRA adapter to activate (None: every adapter off). pos: (projection, n_freq)
    for the positional module (None: the module off, i.e. the pretrained input layer)."""

    backbone: Backbone
    module: nn.Module
    adapter: str | None = None
    scale: float = 1.0
    pos: tuple[nn.Module, int] | None = None

    def __call__(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        _activate(self.module, self.adapter, self.scale)
        patches.select(self.module, self.backbone.patch_site, self.pos)
        return self.backbone.denoise(self.module, x, t, cond)


def _activate(module: nn.Module, name: str | None, scale: float) -> None:
    """Make ``name`` the only active LoRA adapter at ``scale``; None switches every adapter off."""
    if not adapters.has_lora(module):
        return
    if name is None:
        module.disable_adapters()
        return
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

    module.enable_adapters()  # disable_adapters() is a separate flag set_adapters() does not clear
    # what ModelMixin.set_adapters does for one float scale, without its per-block expansion of
    # scales, which fails on UNets with per-block layer counts (IF's super-resolution stages)
    set_weights_and_activate_adapters(module, [name], [scale])


@dataclass(eq=False)
class _Guide:
    """A loaded guide checkpoint: its network, adapter and positional projection."""

    module: nn.Module
    adapter: str | None
    pos: tuple[nn.Module, int] | None


class ModelState:
    """Which weights ``backbone.module`` holds, and views onto them (see the module docstring)."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.module = backbone.module
        self.site = backbone.patch_site
        self.current: tuple[str, int] | None = None  # (tune folder, step) applied; None = none
        self._meta: dict[str, Any] = {}  # the applied checkpoint's metadata
        self._snapshot: dict[str, Tensor] | None = None  # CPU copy of the pretrained weights
        self._delta = False  # the module holds pretrained + a full-tune delta
        self._pos: tuple[nn.Module, int] | None = None  # the applied checkpoint's positional proj
        self._pretrained_copy: nn.Module | None = None
        self._guides: dict[tuple[str, int, int], _Guide] = {}
        self._adapters_made = 0  # guide adapter names are never reused

    # --- the tuned checkpoint -----------------------------------------------------------------
    @torch.no_grad()
    def use(self, folder: TuneFolder, step: int) -> None:
        """Apply checkpoint ``step`` of ``folder`` (0 = the pretrained model itself)."""
        key = (str(folder.path.resolve()), step)
        if key == self.current:
            return
        self._clear_checkpoint()
        if step > 0:
            tensors, meta = folder.load_checkpoint(step)
            if meta.get("kind") != "lora":
                self._take_snapshot()
            adapters.apply_checkpoint(self.module, tensors, meta, self.site)
            self._delta = meta.get("kind") != "lora"
            self._meta = meta
            mod = patches.get(self.module, self.site)
            if meta.get("patches") and mod is not None:
                self._pos = (mod.pos_proj, mod.n_freq)
            if self._delta:  # LoRA guides on this network would now sit on tuned weights
                self._drop_guides_on(self.module)
        self.module.eval()
        self.current = key

    def _clear_checkpoint(self) -> None:
        if self._meta.get("kind") == "lora":
            self.module.delete_adapters(ADAPTER)
        if self._delta:
            self._load_snapshot(self.module)
            self._delta = False
            self._drop_guides_on(self.module)
        self._pos, self._meta, self.current = None, {}, None

    @property
    def lora(self) -> bool:
        """The applied checkpoint is a LoRA adapter (so ``lora_scale`` applies)."""
        return self._meta.get("kind") == "lora"

    # --- views --------------------------------------------------------------------------------
    def tuned(self, lora_scale: float = 1.0) -> View:
        """The applied checkpoint (the pretrained model at step 0)."""
        return View(
            self.backbone, self.module, ADAPTER if self.lora else None, lora_scale, self._pos
        )

    def pretrained(self) -> View:
        return View(self.backbone, self._pretrained_module())

    def guide(self, folder: TuneFolder, step: int) -> View:
        """Another tune's checkpoint (same base model), loaded once and cached."""
        if step == 0:
            return self.pretrained()
        if (str(folder.path.resolve()), step) == self.current:
            return self.tuned()
        home = self._pretrained_module()
        key = (str(folder.path.resolve()), step, id(home))
        g = self._guides.get(key)
        if g is None:
            g = self._guides[key] = self._load_guide(folder, step, home)
        return View(self.backbone, g.module, g.adapter, 1.0, g.pos)

    @torch.no_grad()
    def _load_guide(self, folder: TuneFolder, step: int, home: nn.Module) -> _Guide:
        tensors, meta = folder.load_checkpoint(step)
        if meta.get("kind") != "lora":  # a full tune: its own network, pretrained + its delta
            module = self._fresh()
            adapters.apply_checkpoint(module, tensors, meta, self.site)
            mod = patches.get(module, self.site)
            return _Guide(module, None, (mod.pos_proj, mod.n_freq) if mod is not None else None)
        name = f"guide{self._adapters_made}"
        self._adapters_made += 1
        with warnings.catch_warnings():  # "multiple adapters in the model": that is the point
            warnings.simplefilter("ignore", UserWarning)
            adapters.add_lora(home, meta["lora_config"], name)
            adapters.load_lora(home, tensors, name)
        pos = None
        if meta.get("patches"):
            pos = (
                patches.projection(home, self.site, tensors, meta["pos_freqs"]),
                meta["pos_freqs"],
            )
        return _Guide(home, name, pos)

    def _drop_guides_on(self, module: nn.Module) -> None:
        for key, g in list(self._guides.items()):
            if g.module is module:
                if g.adapter is not None:
                    module.delete_adapters(g.adapter)
                del self._guides[key]

    def _pretrained_module(self) -> nn.Module:
        """A network holding the pretrained weights: the loaded one unless a delta is in it."""
        if not self._delta:
            return self.module
        if self._pretrained_copy is None:
            self._pretrained_copy = self._fresh()
        return self._pretrained_copy

    # --- copies and the snapshot --------------------------------------------------------------
    def _take_snapshot(self) -> None:
        if self._snapshot is None:
            self._snapshot = {
                k: v.detach().cpu().clone() for k, v in _plain_params(self.module, self.site)
            }

    @torch.no_grad()
    def _load_snapshot(self, module: nn.Module) -> None:
        own = dict(_plain_params(module, self.site))
        for k, v in self._snapshot.items():
            if k in own:
                own[k].copy_(v.to(own[k].device, own[k].dtype))

    @torch.no_grad()
    def _fresh(self) -> nn.Module:
        """A new network with the pretrained weights (no adapters, no positional module)."""
        module = copy.deepcopy(self.module)
        if adapters.has_lora(module):
            module.unload_lora()
        patches.uninstall(module, self.site)
        if self._delta:
            self._load_snapshot(module)
        return module.requires_grad_(False).eval()

    @torch.no_grad()
    def merged(self, folder: TuneFolder, step: int) -> nn.Module:
        """A new network: the pretrained weights with checkpoint ``step`` folded in (a LoRA
        merged at scale 1), no adapter or wrapper left. The loaded network is not touched."""
        module = self._fresh()
        tensors, meta = folder.load_checkpoint(step)
        if meta.get("patches"):
            raise ValueError("a patch tune's positional module has no place in a merged network")
        adapters.apply_checkpoint(module, tensors, meta, self.site)
        if meta.get("kind") == "lora":
            from peft.tuners.tuners_utils import BaseTunerLayer

            for layer in module.modules():
                if isinstance(layer, BaseTunerLayer):
                    layer.merge(adapter_names=[ADAPTER])
            module.unload_lora()
        return module.requires_grad_(False).eval()

    # --- training -----------------------------------------------------------------------------
    @contextmanager
    def training(self, cfg: TuneConfig) -> Iterator[list[nn.Parameter]]:
        """The network's trainable parameters for ``cfg`` (full, LoRA, + positional module); on
        exit the network is back exactly as it was before: the caller's model is never changed."""
        self.restore()  # from the plain loaded network (no adapter or positional module left)
        if cfg.method == "full":
            self._take_snapshot()
        try:
            yield adapters.make_trainable(self.module, cfg, self.backbone)
        finally:
            self.restore()

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the network as loaded: adapters unloaded, deltas removed, no positional
        module, frozen, eval mode. Guides and the pretrained copy are dropped."""
        self._guides.clear()
        self._pretrained_copy = None
        self._pos, self._meta, self.current = None, {}, None
        if adapters.has_lora(self.module):
            self.module.unload_lora()
        patches.uninstall(self.module, self.site)
        if self._snapshot is not None:
            self._load_snapshot(self.module)
        self._delta = False
        self.module.requires_grad_(False).eval()

    def snapshot(self) -> dict[str, Tensor]:
        """The pretrained weights (CPU), for full-tune deltas."""
        self._take_snapshot()
        return self._snapshot


def _plain_params(module: nn.Module, site: str):
    """(name, parameter) under the network's own names: PEFT's and the positional module's
    wrappers are seen through (x.base_layer.weight is x.weight), their new weights left out."""
    for name, p in module.named_parameters():
        if "lora_" in name or ".pos_proj." in name:
            continue
        yield patches.plain_name(name.replace(".base_layer.", "."), site), p
