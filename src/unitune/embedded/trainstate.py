"""Training state in safetensors: prefixed module weights, the optimiser state, the loss log,
and a warm start from an exported model. Used by train.py (nothing here is pickled)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..fileio import atomic_save_safetensors


def opt_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_opt_tensors(opt: torch.optim.Optimizer, t: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in t.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def unprefixed(prefix: str, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in t.items() if k.startswith(prefix + ".")}


def log_record(work: Path, rec: dict) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    with open(work / "log.jsonl", "a") as f:
        f.write(line + "\n")


def warm_start(init: Path, work: Path) -> None:
    """Warm start: seed the work folder with an exported model's VAE and (EMA) diffusion
    weights; the optimiser and the learning-rate schedule start afresh."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    if (work / "vae.safetensors").exists():
        return
    vae = AutoencoderKL.from_pretrained(init / "vae", torch_dtype=torch.float32)
    sf = torch.tensor(float(vae.config.scaling_factor))
    atomic_save_safetensors(
        {**prefixed("vae", vae), "scaling_factor": sf}, work / "vae.safetensors"
    )
    unet = UNet2DConditionModel.from_pretrained(init / "unet", torch_dtype=torch.float32)
    te = CLIPTextModel.from_pretrained(init / "text_encoder", dtype=torch.float32)
    params = list(unet.parameters()) + list(te.parameters())
    t = {**prefixed("unet", unet), **prefixed("te", te), "step": torch.tensor(0)}
    t.update({f"ema.{i}": p.detach().clone() for i, p in enumerate(params)})
    atomic_save_safetensors(t, work / "warm.safetensors")
