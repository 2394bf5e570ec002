"""What fine-tuning trains and how checkpoints store it.

- ``full``: every UNet weight trains. A checkpoint stores the DELTA (tuned - pretrained) in fp16:
  Adafactor at lr 1e-4 moves weights by ~1e-4..1e-3, below fp16's resolution at typical weight
  magnitudes, so storing tuned weights in fp16 would round the fine-tune away, while the delta's
  own fp16 error is ~1e-3 of the delta. Size = 2 bytes x UNet params (SD1.5: 859.5M -> 1.72 GB).
- ``lora``: PEFT LoRA adapters on the UNet's attention projections (and optionally ResNet convs);
  the pretrained weights stay frozen and a checkpoint is the adapter weights in fp32 (megabytes).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from . import patches
from .config import ADAPTER, TuneConfig

LORA_ATTN = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
LORA_CONV = ["conv1", "conv2", "conv_shortcut"]


def lora_config_dict(cfg: TuneConfig) -> dict[str, Any]:
    targets = LORA_ATTN + (LORA_CONV if cfg.lora_conv else [])
    return {
        "r": cfg.lora_rank,
        "lora_alpha": cfg.lora_rank,  # alpha = r: scale 1, so lr does not depend on the rank
        "target_modules": targets,
        "init_lora_weights": "gaussian",
    }


def add_lora(unet, config: dict[str, Any]) -> None:
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(**config), adapter_name=ADAPTER)


def make_trainable(unet, cfg: TuneConfig) -> list[torch.nn.Parameter]:
    """Mark what trains, return those parameters (fp32 masters)."""
    pos_params: list[torch.nn.Parameter] = []
    if cfg.patches:
        pos_params = list(patches.install(unet, cfg.pos_freqs).pos_proj.parameters())
    if cfg.method == "lora":
        if not getattr(unet, "_hf_peft_config_loaded", False):
            torch.manual_seed(cfg.seed)  # LoRA init must be reproducible for bit-exact resume
            add_lora(unet, lora_config_dict(cfg))
        params = [p for n, p in unet.named_parameters() if "lora_" in n] + pos_params
    else:
        unet.requires_grad_(True)
        params = list(unet.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def trainable_state(unet, cfg: TuneConfig) -> dict[str, torch.Tensor]:
    """Exact fp32 trainable weights (for resume)."""
    return {
        f"w.{n}": p.detach().float().cpu() for n, p in unet.named_parameters() if p.requires_grad
    }


def load_trainable_state(unet, cfg: TuneConfig, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key, v in tensors.items():
            if key.startswith("w."):
                p = params[key[2:]]
                p.copy_(v.to(p.device, p.dtype))


def base_snapshot(unet, cfg: TuneConfig) -> dict[str, torch.Tensor] | None:
    """Pretrained weights kept on the CPU for full-tune deltas (None for LoRA)."""
    if cfg.method != "full":
        return None
    return {n: p.detach().float().cpu().clone() for n, p in unet.named_parameters() if _in_delta(n)}


def _in_delta(name: str) -> bool:
    return "pos_proj" not in name  # the positional module is new: stored whole, in fp32


def checkpoint_tensors(
    unet, cfg: TuneConfig, base: dict[str, torch.Tensor] | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if cfg.method == "lora":
        from peft.utils import get_peft_model_state_dict

        sd = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
        out = {k: v.float() for k, v in sd.items()} | patches.state(unet)
        return out, {"kind": "lora", "lora_config": lora_config_dict(cfg), **_pos_meta(cfg)}
    assert base is not None
    delta = {
        n: (p.detach().float().cpu() - base[n]).half()
        for n, p in unet.named_parameters()
        if _in_delta(n)
    }
    return delta | patches.state(unet), {"kind": "delta-fp16", **_pos_meta(cfg)}


def _pos_meta(cfg: TuneConfig) -> dict[str, Any]:
    return {"patches": cfg.patches, "pos_freqs": cfg.pos_freqs}


@torch.no_grad()
def apply_checkpoint(unet, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load a saved checkpoint onto a freshly loaded pretrained UNet."""
    if meta.get("patches"):
        patches.load_state(unet, tensors, meta["pos_freqs"])
    tensors = {k: v for k, v in tensors.items() if not k.startswith("pos.")}
    if meta.get("kind") == "lora":
        from peft.utils import set_peft_model_state_dict

        add_lora(unet, meta["lora_config"])
        set_peft_model_state_dict(unet, tensors, adapter_name=ADAPTER)
        unet.to(next(iter(unet.parameters())).device)
        return
    if meta.get("kind") != "delta-fp16":
        raise ValueError(f"unknown checkpoint kind {json.dumps(meta.get('kind'))}")
    for n, p in unet.named_parameters():
        if n in tensors:
            p.add_(tensors[n].to(p.device, p.dtype))


def has_lora(unet) -> bool:
    return bool(getattr(unet, "_hf_peft_config_loaded", False))
