"""unitune's ComfyUI nodes (V1 API: ComfyUI's executor calls ``INPUT_TYPES()``, instantiates the
class, and calls ``FUNCTION`` with every input as a keyword; outputs are a tuple matching
``RETURN_TYPES``). Images are ComfyUI's own types: IMAGE a float32 tensor (B, H, W, 3) in [0, 1],
MASK float32 (B, H, W) in [0, 1] with 1 where the picture may change (ComfyUI's inpainting
convention, unitune's white). A tune travels between nodes as UNITUNE_TUNE: its folder's path.

- Unitune Tune: fine-tune a model on the first image of a batch (the paper's schedule by default).
- Unitune Load Tune: a tune folder made before (CLI, web app or this node).
- Unitune Edit: sample an edit with every main option (checkpoint, t0, CFG, steps, seed, sampler
  start, prompt guidance, negative prompt, interpolation, automatic mask, an optional MASK).
- Unitune Grid: the checkpoint x t0 contact sheet, as one IMAGE.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import (
    AUTO_MASK_RULES,
    DEFAULT_MODEL,
    ROUTES,
    STARTS,
    TUNE_METHODS,
    EditConfig,
    GridConfig,
    TuneConfig,
    WorkLimits,
)

TUNE = "UNITUNE_TUNE"  # the tune folder's path, as a string
CATEGORY = "unitune"
_ED, _TC, _LIM = EditConfig(), TuneConfig(), WorkLimits()
DEVICE = (["auto", "cpu", "cuda", "mps"], {"default": "auto"})  # every node's optional device


def to_pil(image: torch.Tensor, index: int = 0):
    """ComfyUI IMAGE (B, H, W, C) float in [0, 1] -> PIL RGB of one image of the batch."""
    from PIL import Image

    arr = image[index].detach().cpu().clamp(0, 1).numpy()
    return Image.fromarray((arr[..., :3] * 255.0 + 0.5).astype(np.uint8), "RGB")


def from_pil(images) -> torch.Tensor:
    """PIL images (one size) -> ComfyUI IMAGE (B, H, W, 3) float32 in [0, 1]."""
    arrs = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrs))


def mask_to_pil(mask: torch.Tensor):
    """ComfyUI MASK (B, H, W) or (H, W), 1 = may change -> PIL L (white = may change)."""
    from PIL import Image

    m = mask if mask.ndim == 2 else mask[0]
    return Image.fromarray((m.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8))


def mask_from_pil(img, size: tuple[int, int] | None, batch: int) -> torch.Tensor:
    """PIL L mask (or None: everything may change) -> MASK (B, H, W) at ``size`` (W, H)."""
    if img is None:
        w, h = size
        return torch.ones(batch, h, w)
    if size is not None and img.size != size:
        img = img.resize(size)
    m = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)
    return m[None].expand(batch, -1, -1).clone()


class UnituneTune:
    """Fine-tune a model on one photo; returns the tune (its folder)."""

    CATEGORY = CATEGORY
    FUNCTION = "tune"
    RETURN_TYPES = (TUNE,)
    RETURN_NAMES = ("tune",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "folder": ("STRING", {"default": "unitune/tunes/photo"}),
                "model": ("STRING", {"default": DEFAULT_MODEL}),
                "method": (list(TUNE_METHODS), {"default": _TC.method}),
                # 0: the method's default (config.TUNE_SCHEDULES), as resolution 0 is the model's
                "steps": ("INT", {"default": 0, "min": 0, "max": _LIM.max_tune_steps}),
                "resolution": ("INT", {"default": 0, "min": 0, "max": _LIM.max_side, "step": 8}),
            },
            "optional": {"device": DEVICE},
        }

    def tune(self, image, folder, model, method, steps, resolution, device="auto"):
        from ..tune import tune

        # the default checkpoints: tune() skips those past ``steps`` and always saves the last
        cfg = replace(_TC, method=method, steps=steps or None, resolution=resolution or None)
        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "photo.png"
            to_pil(image).save(photo)
            done = tune(photo, folder, cfg, model=model, device=device, progress=False)
        return (str(done.path),)


class UnituneLoadTune:
    """A tune folder made before."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (TUNE,)
    RETURN_NAMES = ("tune",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"folder": ("STRING", {"default": "unitune/tunes/photo"})}}

    def load(self, folder):
        from ..checks import open_tune

        return (str(open_tune(folder).path),)


def _edit_inputs() -> dict:
    return {
        "tune": (TUNE,),
        "prompt": ("STRING", {"default": "wearing sunglasses", "multiline": True}),
        "checkpoint": (
            "INT",
            {"default": -1, "min": -1, "max": _LIM.max_tune_steps},
        ),  # -1: default
        "t0": ("FLOAT", {"default": _ED.t0, "min": 0.0, "max": 1.0, "step": 0.05}),
        "cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 50.0, "step": 0.5}),  # 0: default
        "steps": ("INT", {"default": 0, "min": 0, "max": _LIM.max_sample_steps}),  # 0: model's
        "seed": ("INT", {"default": 0, "min": 0, "max": _LIM.max_seed}),
    }


def _edit_config(checkpoint, t0, cfg, steps, seed, **over) -> EditConfig:
    return replace(
        _ED,
        checkpoint=None if checkpoint < 0 else checkpoint,
        t0=t0,
        cfg=cfg or None,
        steps=steps or None,
        seeds=(seed,),
        **over,
    )


class UnituneEdit:
    """Sample an edit of the tuned photo; returns the image and the mask it used."""

    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_edit_inputs(),
                "start": (list(STARTS), {"default": _ED.start}),
                "auto_mask": ("BOOLEAN", {"default": _ED.auto_mask}),
                "interpolate": ("BOOLEAN", {"default": _ED.interpolate}),
            },
            "optional": {
                "mask": ("MASK",),
                "auto_mask_rule": (list(AUTO_MASK_RULES), {"default": _ED.auto_mask_rule}),
                "route": (list(ROUTES), {"default": _ED.route}),
                "negative_prompt": ("STRING", {"default": "", "multiline": True}),
                "prompt_guidance": ("STRING", {"default": ""}),
                "batch": ("INT", {"default": 1, "min": 1, "max": _LIM.max_seeds}),
                "device": DEVICE,
            },
        }

    def edit(
        self,
        tune,
        prompt,
        checkpoint,
        t0,
        cfg,
        steps,
        seed,
        start,
        auto_mask,
        interpolate,
        mask=None,
        auto_mask_rule=_ED.auto_mask_rule,
        route=_ED.route,
        negative_prompt="",
        prompt_guidance="",
        batch=1,
        device="auto",
    ):
        ec = _edit_config(
            checkpoint,
            t0,
            cfg,
            steps,
            seed,
            start=start,
            auto_mask=auto_mask,
            auto_mask_rule=auto_mask_rule,
            route=route,
            interpolate=interpolate,
            negative_prompt=negative_prompt,
            prompt_guidance=prompt_guidance or None,
        )
        ec = replace(ec, seeds=tuple(range(seed, seed + batch)))
        with tempfile.TemporaryDirectory() as tmp:  # the MASK as the PNG --mask reads
            path = None if mask is None else Path(tmp) / "mask.png"
            if path is not None:
                mask_to_pil(mask).save(path)
            res = _editor(tune, device).edit(prompt, ec, mask=path, progress=False)
        # the mask the edit used: the automatic one (within a MASK given), else the MASK given
        used = res.mask if res.mask is not None else None if mask is None else mask_to_pil(mask)
        size = res.images[0].size
        return from_pil(res.images), mask_from_pil(used, size, len(res.images))


class UnituneGrid:
    """The checkpoint x t0 exploration grid of an edit, as one image."""

    CATEGORY = CATEGORY
    FUNCTION = "grid"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("grid",)

    @classmethod
    def INPUT_TYPES(cls):
        g = GridConfig()
        inputs = _edit_inputs()
        del inputs["checkpoint"], inputs["t0"]
        return {
            "required": {
                **inputs,
                "checkpoints": ("STRING", {"default": ",".join(map(str, g.checkpoints))}),
                "t0s": ("STRING", {"default": ",".join(f"{t:g}" for t in g.t0s)}),
            },
            "optional": {"device": DEVICE},
        }

    def grid(self, tune, prompt, cfg, steps, seed, checkpoints, t0s, device="auto"):
        from PIL import Image

        from ..outputs import render_grid

        gcfg = replace(
            GridConfig(),
            checkpoints=tuple(int(c) for c in checkpoints.split(",") if c.strip()),
            t0s=tuple(float(t) for t in t0s.split(",") if t.strip()),
            seeds=(seed,),
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "grid.png"
            ec = _edit_config(-1, _ED.t0, cfg, steps, seed)
            render_grid(_editor(tune, device), prompt, ec, gcfg, out, progress=False)
            with Image.open(out) as im:
                return (from_pil([im.convert("RGB")]),)


_EDITORS: dict[tuple[str, str], object] = {}


def _editor(tune: str, device: str):
    """One loaded Editor per (tune, device), kept while ComfyUI runs (a model loads once)."""
    from ..edit import Editor

    key = (str(Path(tune).resolve()), device)
    if key not in _EDITORS:
        _EDITORS.clear()  # one model in memory at a time
        _EDITORS[key] = Editor(tune, device)
    return _EDITORS[key]


NODE_CLASS_MAPPINGS = {
    "UnituneTune": UnituneTune,
    "UnituneLoadTune": UnituneLoadTune,
    "UnituneEdit": UnituneEdit,
    "UnituneGrid": UnituneGrid,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "UnituneTune": "Unitune Tune (fine-tune on one photo)",
    "UnituneLoadTune": "Unitune Load Tune",
    "UnituneEdit": "Unitune Edit",
    "UnituneGrid": "Unitune Grid (checkpoints x t0)",
}
