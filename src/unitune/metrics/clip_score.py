"""CLIP score (image-text agreement) with a locally available CLIP model; never downloads.

``clip_score`` returns, per (image, text) pair, ``100 * max(cos(E_img, E_txt), 0)`` where ``E`` are
CLIP's projected embeddings (the convention of torchmetrics' ``CLIPScore``; Hessel et al. 2021's
CLIPScore is the same cosine with weight 2.5). The model is loaded with
``transformers.CLIPModel.from_pretrained(..., local_files_only=True)``: a hub id works only if it is
already in the local Hugging Face cache, otherwise a ``UserError`` explains that the metric is
skipped offline.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import UserError


def _offline_error(model_id_or_path: str, why: str) -> UserError:
    return UserError(
        f"CLIP weights {model_id_or_path!r} are not available locally, so the CLIP score is "
        f"skipped offline ({why})",
        "pass a local CLIP model folder (CLIPModel + processor files), or pre-download the "
        "hub id into the Hugging Face cache on a machine with network access",
    )


def _available_locally(model_id_or_path: str) -> bool:
    """Cheap check (no transformers import): an existing folder, or a hub id in the HF cache."""
    if Path(model_id_or_path).expanduser().exists():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id_or_path, "config.json"), str)
    except ValueError:  # not a valid hub id (e.g. a missing local path)
        return False


@functools.lru_cache(maxsize=2)
def _load(model_id_or_path: str, device: str) -> tuple[Any, Any]:
    if not _available_locally(model_id_or_path):
        raise _offline_error(model_id_or_path, "not a folder, and not in the Hugging Face cache")
    try:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(model_id_or_path, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(model_id_or_path, local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        raise _offline_error(
            model_id_or_path,
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        ) from exc
    return model.eval().requires_grad_(False).to(device), processor


def _to_pil(images: torch.Tensor | Sequence[Image.Image]) -> list[Image.Image]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images in [0, 1], got {tuple(images.shape)}")
        arr = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)
        return [Image.fromarray(np.ascontiguousarray(a.cpu().numpy())) for a in arr]
    return [im.convert("RGB") for im in images]


@torch.no_grad()
def clip_score(
    images: torch.Tensor | Sequence[Image.Image],
    texts: str | Sequence[str],
    model_id_or_path: str = "openai/clip-vit-large-patch14",
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """(B,) CLIP scores in [0, 100] for images ((B, 3, H, W) in [0, 1], or PIL images) against
    texts (one per image, or a single string for all). Raises ``UserError`` if the CLIP weights
    are not available locally."""
    pil = _to_pil(images)
    texts = [texts] * len(pil) if isinstance(texts, str) else list(texts)
    if len(texts) != len(pil):
        raise ValueError(f"{len(pil)} images but {len(texts)} texts")
    dev = str(torch.device(device))
    model, processor = _load(str(model_id_or_path), dev)
    inputs = processor(text=texts, images=pil, return_tensors="pt", padding=True, truncation=True)
    out = model(**{k: v.to(dev) for k, v in inputs.items()})
    img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    return 100.0 * (img * txt).sum(dim=-1).clamp(min=0).cpu()
