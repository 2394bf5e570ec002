"""`merged`: the pretrained network with a checkpoint folded in, in place, one tensor at a time.

Memory is the point: a merged export must fit the machine that made the tune. So the exporter
loads the model once, in the dtype the file will have (``--dtype``; ``auto`` = the dtype the
model's own weights are stored in: an fp16 SD 1.5 gives an fp16 file, not a 4 GB fp32 one), and
for every weight the checkpoint changes adds the change in fp32 and casts back:

- a full tune's checkpoint holds deltas (tuned - pretrained, fp16): W <- W + dW, read lazily from
  the checkpoint file, one tensor in memory at a time;
- a LoRA's: W <- W + (alpha / r) B A per layer (B (out, r), A (r, in) or, for a conv, A the k x k
  conv into r channels and B the 1x1 conv out of them: B.flatten(1) @ A.flatten(1) reshaped to
  W's shape), alpha per layer from the LoraConfig's pattern and r the layer's own (A's rows),
  as PEFT's merge does.

The result equals State.merged's (PEFT's own merge) to float rounding (tests/test_export_tools).
The module is the exporter's own freshly loaded copy; nothing else holds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .lora import LORA_A, LORA_B, alphas

# `unitune export --dtype`: what a merged file's floating tensors are stored as
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_CODES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def stored_dtype(ref: str) -> torch.dtype | None:
    """The dtype a model's weights are stored in, from safetensors headers (no weights read): the
    largest weight file's most common floating dtype (the denoiser dominates). None: unknown
    (a hub id not in the local cache)."""
    from safetensors import safe_open

    path = Path(ref)
    if not path.exists():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(ref, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: unknown
            return None
    files = [path] if path.is_file() else list(path.rglob("*.safetensors"))
    if not files:
        return None
    counts: dict[str, int] = {}
    with safe_open(str(max(files, key=lambda p: p.stat().st_size)), framework="pt") as f:
        for k in f.keys():
            code = f.get_slice(k).get_dtype()
            if code in _CODES:
                counts[code] = counts.get(code, 0) + 1
    return _CODES[max(counts, key=counts.get)] if counts else None


def output_dtype(ref: str, requested: str) -> tuple[torch.dtype, str | None]:
    """(the merged file's dtype, a note for the user or None) for ``--dtype requested``."""
    if requested != "auto":
        return DTYPES[requested], None
    found = stored_dtype(ref)
    if found is None:
        return torch.float32, "the base model's stored dtype is unknown: fp32 (choose with --dtype)"
    return found, None


@torch.no_grad()
def merge_into(module: nn.Module, ckpt: Path, meta: dict) -> int:
    """Fold checkpoint file ``ckpt`` (its unitune metadata ``meta``) into ``module``'s weights in
    place; returns the number of weights changed."""
    from safetensors import safe_open

    params = dict(module.named_parameters())
    changed = 0
    with safe_open(str(ckpt), framework="pt") as f:
        keys = [k for k in f.keys() if not k.startswith("pos.")]
        if meta.get("kind") == "lora":
            mods = sorted(k[: -len(LORA_A)] for k in keys if k.endswith(LORA_A))
            alpha = alphas(meta["lora_config"], mods)  # per layer, PEFT's pattern lookup
            for mod in mods:
                w = params.get(mod + ".weight")
                if w is None:
                    raise UserError(
                        f"the LoRA names {mod}, which the model lacks",
                        "export with the model the tune was made on",
                    )
                a, b = f.get_tensor(mod + LORA_A).float(), f.get_tensor(mod + LORA_B).float()
                scale = alpha[mod] / a.shape[0]  # PEFT's alpha / r, r the layer's own (A's rows)
                delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape) * scale
                w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
                changed += 1
            return changed
        if meta.get("kind") != "delta-fp16":
            raise ValueError(f"unknown checkpoint kind {meta.get('kind')!r}")
        for k in keys:
            w = params.get(k)
            if w is None:
                raise UserError(
                    f"the checkpoint names {k}, which the model lacks",
                    "export with the model the tune was made on",
                )
            w.copy_((w.float() + f.get_tensor(k).float().to(w.device)).to(w.dtype))
            changed += 1
    return changed
