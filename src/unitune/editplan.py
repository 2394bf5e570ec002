"""What an edit will do, as data: the frozen :class:`EditPlan` that ``Editor.plan`` makes and
``Editor.run`` samples, what a run returns (:class:`EditResult`), and the parameters recorded
with every image (the JSON sidecar, and the A1111-style PNG ``parameters`` chunk)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from torch import Tensor

from . import __version__
from .config import EditConfig, TuneConfig
from .guiders import Guider
from .inversion import Inversion
from .route import Route

if TYPE_CHECKING:
    from .backbones.base import Conditioning
    from .tunefolder import TuneFolder


@dataclass(frozen=True, eq=False)
class SRPlan:
    """A cascade's super-resolution stage II for one edit (cascade.SRStage samples it)."""

    cond: Conditioning  # one row: "<rare> <edit prompt>", by the base stage's text encoder
    negative: Conditioning  # one row: the negative prompt
    base: Tensor  # (1, 3, H, W) the base image at the output size, in [-1, 1]
    mask: Tensor | None  # (1, 1, H, W) at the output size, 1 = may change


@dataclass(frozen=True, eq=False)
class EditPlan:
    """One edit, resolved and loaded: running it reads no file. ``describe()`` prints it."""

    prompt: str  # the edit prompt as given
    text: str  # what the base stage samples ("<rare> <prompt>"; SINE: the prompt itself)
    cfg: EditConfig  # the model's defaults filled in, guides as spec strings, sr_checkpoint used
    checkpoint: int  # the base stage's checkpoint (0 = the pretrained model)
    applied: tuple[str, int] | None  # ModelState.current when planned: a run refuses it changed
    hw: tuple[int, int]  # the base stage's sample size (H, W)
    out_hw: tuple[int, int]  # the size before stage III: hw, or the SR stage's output size
    t0s: tuple[float, ...] | None  # the grid's starts (one batch), or None: cfg.t0
    guider: Guider  # the method's views, conditionings and weights (guiders/)
    x0: Tensor | None  # (1, C, h, w) base latents, for t0 < 1 and the mask
    mask: str | Path | None  # the mask file as given (recorded in the params)
    pixel_mask: Tensor | None  # (1, 1, H, W) at out_hw, 1 = may change
    latent_mask: Tensor | None  # (1, 1, h, w) at the base stage's latent size
    base_pixels: Tensor | None  # (1, 3, H, W) at out_hw in [0, 1]: what mask/interpolation keep
    sr: SRPlan | None  # a cascade's SR stage
    inversion: Inversion | None = None  # --start inversion: what the photo is inverted under
    auto_mask: Tensor | None = None  # (1, 1, h, w) --auto-mask at latent size, 1 = may change
    x4: Any = None  # stage III (upscale.X4Upscaler), loaded, or None
    original: Image.Image | None = None  # the photo, for --paste-back
    route: Route | None = None  # --route auto: what the map said (cfg is the branch's config)

    @property
    def starts(self) -> tuple[float, ...]:
        """The SDEdit starts, one per group of seeds."""
        return self.t0s or (self.cfg.t0,)

    def describe(self) -> str:
        """A few lines saying what the run will do."""
        c = self.cfg
        size = f"{self.hw[1]}x{self.hw[0]}"
        if self.out_hw != self.hw:
            size += f" -> SR {self.out_hw[1]}x{self.out_hw[0]}"
        lines = [
            f"prompt: {self.text!r}",
            f"checkpoint {self.checkpoint}, {c.steps} {c.sampler} steps, seeds {list(c.seeds)}",
            f"guidance: {self.guider.describe()}",
            f"t0: {', '.join(f'{t:g}' for t in self.starts)}; size {size}",
        ]
        if self.route is not None:
            lines.append(f"route: {self.route.describe()}")
        if self.inversion is not None:
            lines.append(f"start: {self.inversion.describe()}")
        if self.mask is not None:
            lines.append(f"mask: {self.mask}")
        if self.auto_mask is not None:
            frac = float(self.auto_mask.mean())
            lines.append(f"auto mask: {frac:.0%} of the image may change (DiffEdit)")
        if c.interpolate:
            lines.append(f"interpolate: window {c.interp_window}, threshold {c.interp_threshold}")
        if self.x4 is not None:
            lines.append(f"x4 upscaler: {c.upscaler}")
        return "\n".join(lines)


@dataclass
class EditResult:
    images: list[Image.Image]
    params: list[dict[str, Any]] = field(default_factory=list)
    pixels: Tensor | None = None  # (B, 3, H, W) float in [0, 1] before 8-bit rounding
    latents: Tensor | None = None  # (B, C, h, w) the final x0 in model space, before decoding
    base_stage: Tensor | None = None  # cascades: (B, 3, h, w) the base stage's samples, in [-1, 1]
    mask: Image.Image | None = None  # --auto-mask: the mask the edit used (white = may change)


def edit_params(
    folder: TuneFolder,
    tune_cfg: TuneConfig,
    plan: EditPlan,
    cfg: EditConfig,
    seed: int,
    hw: tuple[int, int],
) -> dict[str, Any]:
    """The parameters of one image of ``plan`` (``cfg``: the plan's, at this image's t0)."""
    m = folder.manifest
    return {
        "prompt": plan.text,
        "negative_prompt": cfg.negative_prompt,
        "steps": cfg.steps,
        "sampler": cfg.sampler,
        "cfg_scale": cfg.cfg,
        "seed": int(seed),
        "size": f"{hw[1]}x{hw[0]}",
        "model": m.model,
        "tune": str(folder.path),
        "tune_method": tune_cfg.method,
        "image_sha256": m.image.sha256,
        "edit_prompt": plan.prompt,
        # the whole batch: a UNet batch of N is not bit-identical to N batches of 1 (kernel
        # choice depends on the batch), so --params re-runs this batch and keeps "seed"
        "edit_config": {
            **asdict(cfg),
            "checkpoint": plan.checkpoint,
            "seeds": [int(x) for x in cfg.seeds],
        },
        "mask": str(plan.mask) if plan.mask is not None else None,
        # --route auto: which branch the map chose (the config above is that branch's)
        "route": (
            {"edit": plan.route.kind, "spread": round(plan.route.spread, 4)} if plan.route else None
        ),
        "unitune": __version__,
    }


def slug(prompt: str) -> str:
    """A prompt as a file name's part: lower-case words joined by '-', at most 40 characters."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "edit"


def output_name(prompt: str, params: dict[str, Any]) -> str:
    ec = params["edit_config"]
    return f"{slug(prompt)}_c{ec['checkpoint']}_t{ec['t0']:g}_w{ec['cfg']:g}_s{params['seed']}.png"


# A1111's names of the samplers (what A1111 writes and its readers map); flow models' "euler"
# is A1111's Euler too
A1111_SAMPLERS = {"ddim": "DDIM", "dpm++": "DPM++ 2M", "euler": "Euler", "heun": "Heun"}


def a1111_params(p: dict[str, Any]) -> dict[str, Any]:
    """The A1111-style key order for the PNG `parameters` chunk, from an edit's parameters as
    they may be shared (public.public_params(edit_params(...)): names, no paths), with A1111's
    sampler names and every value one plain word or phrase (pngmeta.format_parameters keeps
    commas and colons out)."""
    ec = p["edit_config"]
    sampler = p["sampler"]
    out = {
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "Steps": p["steps"],
        "Sampler": A1111_SAMPLERS.get(sampler, sampler.upper() if sampler else None),
        "CFG scale": p["cfg_scale"],
        "Seed": p["seed"],
        "Batch seeds": " ".join(str(x) for x in ec["seeds"]),
        "Size": p["size"],
        "Model": p["model"],
        "Tune": p["tune"],
        "Checkpoint": ec["checkpoint"],
        "t0": ec["t0"],
        "Method": ec["method"],
    }
    if ec.get("prompt_guidance"):
        out["Prompt guidance"] = ec["prompt_guidance"]
    if ec["method"] == "sine":
        out["SINE K"], out["SINE v"] = ec["sine_K"], ec["sine_v"]
    if ec.get("guides"):
        out["Guides"] = " | ".join(ec["guides"])
    if ec.get("sr_checkpoint") is not None:  # a cascade's super-resolution stage
        out["SR checkpoint"], out["SR t0"] = ec["sr_checkpoint"], ec["sr_t0"]
    if ec.get("upscaler"):
        out["Upscaler"] = ec["upscaler"]
    if p.get("route"):
        out["Route"] = f"{p['route']['edit']} edit"
        out["Route spread"] = p["route"]["spread"]
    if ec.get("start", "noise") != "noise":
        out["Start"] = ec["start"] + (" (negative prompt)" if ec.get("inversion_negative") else "")
    if p.get("mask"):
        out["Mask"] = p["mask"]
    if ec.get("auto_mask"):
        out["Auto mask rule"] = ec["auto_mask_rule"]
        out["Auto mask threshold"] = ec["auto_mask_threshold"]
        out["Auto mask dilate"] = ec["auto_mask_dilate"]
        out["Auto mask t0"] = ec["auto_mask_t0"]
        out["Auto mask draws"] = ec["auto_mask_draws"]
    if ec["interpolate"]:
        out["Interpolate window"] = ec["interp_window"]
        out["Interpolate threshold"] = ec["interp_threshold"]
    if p["tune_method"] == "lora":
        out["LoRA scale"] = ec["lora_scale"]
    out["Version"] = f"unitune {p['unitune']}"
    return out
