"""LoRA files other tools read: diffusers' ``pytorch_lora_weights.safetensors`` layout and
kohya's (A1111/Forge, ComfyUI).

Input: a LoRA under PEFT's names for the network (``<module>.lora_A.weight`` = down,
``.lora_B.weight`` = up) and its LoraConfig (rank, alpha, patterns).

- diffusers: the keys prefixed ``unet.`` (``transformer.`` for SD3 / FLUX) and the config as
  ``lora_adapter_metadata``, written by the family pipeline's own ``save_lora_weights`` so
  ``pipe.load_lora_weights(file)`` reads it with the exact rank and alpha of every layer.
- kohya: ``lora_unet_<module path with '_' for '.'>.lora_down.weight`` / ``.lora_up.weight`` /
  ``.alpha`` (a scalar; the tools scale by alpha / rank), the module path being the diffusers
  one, which ComfyUI, A1111 and diffusers' own loader all map (SD 1.x and SDXL alike).
  Metadata: kohya's ``ss_*`` keys
  (network module, dim, alpha, base model version, the tuned prompt with the rare token as the
  dataset's one tag, steps, learning rate).

Both also carry ``unitune``: JSON saying which tune and checkpoint the file came from.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_save_safetensors, new_dir, writing

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def modules_of(tensors: dict[str, Tensor]) -> list[str]:
    return sorted(k[: -len(LORA_A)] for k in tensors if k.endswith(LORA_A))


def _layer(pattern: dict[str, Any], module: str, default):
    """PEFT's rank / alpha pattern lookup: a key matching the end of the module's name."""
    for key, value in pattern.items():
        if re.fullmatch(rf"(.*\.)?{re.escape(key)}", module):
            return value
    return default


def alphas(config: dict[str, Any], modules: list[str]) -> dict[str, float]:
    return {
        m: float(_layer(config.get("alpha_pattern") or {}, m, config["lora_alpha"]))
        for m in modules
    }


def kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def write_kohya(
    path: Path, tensors: dict[str, Tensor], config: dict[str, Any], meta: dict[str, str]
) -> None:
    """Write kohya's layout. One alpha for every layer (the config's): a layer whose own alpha
    differs (lora-from-full's small layers keep their full rank r_m with alpha r_m) has its up
    weights scaled by alpha_m / alpha, so every reader's alpha / rank gives the layer's scale.
    Why: with per-layer alphas, diffusers' kohya loader got the mid block's attention layers
    wrong (lora-from-full at full rank on the tiny SD: only those 6 layers, off by a factor, as
    if they had the common alpha); a uniform alpha leaves no per-layer pattern to lose."""
    mods = modules_of(tensors)
    alpha = alphas(config, mods)
    common = float(config["lora_alpha"])
    out: dict[str, Tensor] = {}
    for m in mods:
        name = kohya_name(m)
        up = tensors[m + LORA_B].float()
        out[f"{name}.lora_down.weight"] = tensors[m + LORA_A].float()
        out[f"{name}.lora_up.weight"] = up if alpha[m] == common else up * (alpha[m] / common)
        out[f"{name}.alpha"] = torch.tensor(common)
    atomic_save_safetensors(out, path, meta)


def write_diffusers(
    path: Path,
    tensors: dict[str, Tensor],
    config: dict[str, Any],
    pipeline_class,
    extra_meta: dict[str, str],
) -> None:
    """Write diffusers' layout with the family pipeline's own writer, then add ``extra_meta``."""
    import inspect

    from safetensors import safe_open
    from safetensors.torch import load_file

    # the denoiser's name in the writer's arguments: unet_... (SD, SDXL),
    # transformer_... (SD3, FLUX)
    params = inspect.signature(pipeline_class.save_lora_weights).parameters
    net = "unet" if "unet_lora_layers" in params else "transformer"
    layers = {k: v.float().contiguous() for k, v in tensors.items()}
    tmp = new_dir(path)  # hidden beside the file: a killed run's is removed by the next
    try:
        with writing(path):
            pipeline_class.save_lora_weights(
                str(tmp),
                **{
                    f"{net}_lora_layers": layers,
                    f"{net}_lora_adapter_metadata": json.loads(json.dumps(config)),
                },
                safe_serialization=True,
            )
        written = tmp / "pytorch_lora_weights.safetensors"
        with safe_open(str(written), framework="pt") as f:
            meta = dict(f.metadata() or {})
        atomic_save_safetensors(load_file(str(written)), path, {**meta, **extra_meta})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kohya_metadata(
    provenance: dict[str, Any], config: dict[str, Any], base_version: str, resolution: list[int]
) -> dict[str, str]:
    """kohya's ``ss_*`` keys as sd-scripts writes them (strings), from a unitune tune."""
    prompt = provenance["prompt"]
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config["r"]),
        "ss_network_alpha": str(config["lora_alpha"]),
        "ss_base_model_version": base_version,
        "ss_v2": "False",
        "ss_sd_model_name": str(provenance["base_model"]),
        "ss_resolution": f"({resolution[1]}, {resolution[0]})",
        "ss_num_train_images": "1",
        "ss_steps": str(provenance["checkpoint"]),
        "ss_max_train_steps": str(provenance["steps"]),
        "ss_learning_rate": str(provenance["learning_rate"]),
        "ss_output_name": provenance["name"],
        "ss_tag_frequency": json.dumps({"unitune": {prompt: 1}}),
        "ss_training_comment": (
            f"unitune: the photo is bound to {provenance['rare_token']!r}; prompt it as {prompt!r}"
        ),
    }
