"""What fine-tuning trains and how checkpoints store it (the tune folder's checkpoint format).

- ``full``: every weight of the network trains. A checkpoint stores the DELTA (tuned -
  pretrained) in fp16: Adafactor at lr 1e-4 moves weights by ~1e-4..1e-3, below fp16's
  resolution at typical weight magnitudes, so storing tuned weights in fp16 would round the
  fine-tune away, while the delta's own fp16 error is ~1e-3 of the delta. Size = 2 bytes x
  parameters (SD1.5's UNet: 859.5M -> 1.72 GB).
- ``lora``: PEFT LoRA adapters on the modules the backbone names (``lora_targets``, and with
  ``lora_conv`` its ``lora_conv_targets``); the pretrained weights stay frozen and a checkpoint
  is the adapter weights in fp32 (megabytes).

A SINE patch tune adds its positional module's projection (``pos.*``, fp32) to either kind.
Only :mod:`unitune.state` and :mod:`unitune.tune` call these.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import patches
from .config import ADAPTER, TuneConfig

if TYPE_CHECKING:
    from .backbones.base import Backbone


def lora_config_dict(cfg: TuneConfig, backbone: Backbone) -> dict[str, Any]:
    targets = list(backbone.lora_targets) + (
        list(backbone.lora_conv_targets) if cfg.lora_conv else []
    )
    return {
        "r": cfg.lora_rank,
        "lora_alpha": cfg.lora_rank,  # alpha = r: scale 1, so lr does not depend on the rank
        "target_modules": targets,
        "init_lora_weights": "gaussian",
    }


def add_lora(module: nn.Module, config: dict[str, Any], name: str = ADAPTER) -> None:
    from peft import LoraConfig

    module.add_adapter(LoraConfig(**config), adapter_name=name)


def load_lora(module: nn.Module, tensors: dict[str, torch.Tensor], name: str = ADAPTER) -> None:
    from peft.utils import set_peft_model_state_dict

    lora = {k: v for k, v in tensors.items() if not k.startswith("pos.")}
    set_peft_model_state_dict(module, lora, adapter_name=name)
    module.to(next(iter(module.parameters())).device)


def has_lora(module: nn.Module) -> bool:
    return bool(getattr(module, "_hf_peft_config_loaded", False))


def make_trainable(module: nn.Module, cfg: TuneConfig, backbone: Backbone) -> list[nn.Parameter]:
    """Mark what trains, return those parameters (fp32 masters)."""
    pos_params: list[nn.Parameter] = []
    if cfg.patches:
        pos_params = list(
            patches.install(module, cfg.pos_freqs, backbone.patch_site).pos_proj.parameters()
        )
    if cfg.method == "lora":
        torch.manual_seed(cfg.seed)  # LoRA init must be reproducible for bit-exact resume
        add_lora(module, lora_config_dict(cfg, backbone))
        params = [p for n, p in module.named_parameters() if "lora_" in n] + pos_params
    else:
        module.requires_grad_(True)
        params = list(module.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Exact fp32 trainable weights (for resume)."""
    return {
        f"w.{n}": p.detach().float().cpu() for n, p in module.named_parameters() if p.requires_grad
    }


def load_trainable_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for key, v in tensors.items():
            if key.startswith("w."):
                p = params[key[2:]]
                p.copy_(v.to(p.device, p.dtype))


def _in_delta(name: str) -> bool:
    return "pos_proj" not in name  # the positional module is new: stored whole, in fp32


def checkpoint_tensors(
    module: nn.Module, cfg: TuneConfig, backbone: Backbone, base: dict[str, torch.Tensor] | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint of the network as trained so far: (tensors, metadata). ``base``: the
    pretrained weights under the network's plain names (full tunes)."""
    site = backbone.patch_site
    pos_meta = {"patches": cfg.patches, "pos_freqs": cfg.pos_freqs}
    if cfg.method == "lora":
        from peft.utils import get_peft_model_state_dict

        sd = get_peft_model_state_dict(module, adapter_name=ADAPTER)
        out = {k: v.float() for k, v in sd.items()} | patches.state(module, site)
        return out, {"kind": "lora", "lora_config": lora_config_dict(cfg, backbone), **pos_meta}
    assert base is not None
    delta = {
        n: (p.detach().float().cpu() - base[patches.plain_name(n, site)].float()).half()
        for n, p in module.named_parameters()
        if _in_delta(n)
    }
    return delta | patches.state(module, site), {"kind": "delta-fp16", **pos_meta}


@torch.no_grad()
def apply_checkpoint(
    module: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any], site: str
) -> None:
    """Load a saved checkpoint onto a network holding the pretrained weights."""
    if meta.get("patches"):
        patches.load_state(module, tensors, meta["pos_freqs"], site)
    if meta.get("kind") == "lora":
        add_lora(module, meta["lora_config"])
        load_lora(module, tensors)
        return
    if meta.get("kind") != "delta-fp16":
        raise ValueError(f"unknown checkpoint kind {json.dumps(meta.get('kind'))}")
    for n, p in module.named_parameters():
        if n in tensors:
            p.add_(tensors[n].to(p.device, p.dtype))
