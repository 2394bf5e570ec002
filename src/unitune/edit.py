"""UniTune editing (§3.3): sample "<rare> <edit prompt>" from a tune folder's checkpoint with CFG,
optional SDEdit start t0, prompt guidance, in-painting mask, pixel interpolation, paste-back."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch import Tensor

from . import __version__, adapters, patches, sine
from .checks import tune_model_ref
from .config import EditConfig, TuneConfig
from .errors import UnituneWarning, UserError
from .guidance import cfg as cfg_mix
from .guidance import latent_mask
from .images import Placement, fit_image, load_mask, paste_back, pil_to_tensor, tensor_to_pil
from .interpolate import interpolate
from .models import Components, decode_latents, encode_image, encode_prompts, load_components
from .sampling import GuidedFn, make_scheduler, sample
from .tunefolder import TuneFolder

# (x (B, C, h, w), t, embeddings (B, 77, D)) -> model output (B, C, h, w)
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def unet_denoiser(unet) -> Denoiser:
    """Adapter: a diffusers UNet2DConditionModel as a denoiser callable."""

    def den(x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return unet(x, t, encoder_hidden_states=emb).sample

    return den


def cfg_guided(den: Denoiser, emb_base: Tensor, emb_cond: Tensor, w: float) -> GuidedFn:
    """CFG (or prompt guidance when emb_base is a base prompt) with ONE batched forward pass:
    [baseline x B ; conditional x B]."""

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        if w == 1.0:  # pure conditional: the baseline would be multiplied by zero
            return den(x, t, emb_cond.expand(b, -1, -1))
        embs = torch.cat([emb_base.expand(b, -1, -1), emb_cond.expand(b, -1, -1)])
        out = den(torch.cat([x, x]), t, embs)
        base, cond = out.chunk(2)
        return cfg_mix(base, cond, w)

    return guided


@dataclass
class EditResult:
    images: list[Image.Image]
    params: list[dict[str, Any]] = field(default_factory=list)
    pixels: Tensor | None = None  # (B, 3, H, W) float in [0, 1] before 8-bit rounding
    latents: Tensor | None = None  # (B, C, h, w) final scaled latents, before decoding


class Editor:
    """A tune folder with its model loaded; switches checkpoints without reloading the model."""

    def __init__(
        self, tune_dir: str | Path, device: str = "auto", comp: Components | None = None
    ) -> None:
        self.folder = TuneFolder.open(tune_dir)
        m = self.folder.manifest
        self.tune_cfg = TuneConfig(**{**m["settings"], "save_at": tuple(m["settings"]["save_at"])})
        self.comp = comp or load_components(tune_model_ref(self.folder), device)
        tuned_on = m.get("model_digest")  # absent in manifests written before it existed
        if tuned_on and self.comp.digest and tuned_on != self.comp.digest:
            warnings.warn(
                f"{tune_dir} was tuned on other weights of {m['model']!r} (weights digest "
                f"{tuned_on}, now {self.comp.digest}): its checkpoints are applied to the weights "
                "loaded now, so edits will not match the tune — retune it with --overwrite",
                UnituneWarning,
                stacklevel=2,
            )
        if self.tune_cfg.patches:  # zero-initialised: step 0 is still the pretrained model
            patches.install(self.comp.unet, self.tune_cfg.pos_freqs)
        self.placement = Placement.from_dict(m["placement"])
        self.base_image = Image.open(self.folder.path / "base.png").convert("RGB")
        self._original: Image.Image | None = None
        self._pretrained: dict[str, Tensor] | None = None  # CPU copy, made before a delta lands
        self._dirty = False  # UNet weights currently hold a full-tune delta
        self.step: int | None = None

    @property
    def original(self) -> Image.Image:
        if self._original is None:
            self._original = Image.open(self.folder.path / "original.png").convert("RGB")
        return self._original

    def default_step(self, cfg: EditConfig) -> int | None:
        """cfg.checkpoint, or for None cfg.auto_checkpoint where the benchmark measured it (plain
        UniTune on a full-UNet tune that saved that step), else None (= the last one saved)."""
        if cfg.checkpoint is not None:
            return cfg.checkpoint
        measured = cfg.method == "unitune" and not cfg.guides and self.tune_cfg.method == "full"
        if measured and cfg.auto_checkpoint in self.folder.checkpoints:
            return cfg.auto_checkpoint
        return None

    @torch.no_grad()
    def use_checkpoint(self, step: int | None) -> int:
        """Load a checkpoint (None = last, 0 = pretrained) onto the pretrained UNet."""
        step = self.folder.resolve_checkpoint(step)
        if step == self.step:
            return step
        unet = self.comp.unet
        if sine.has_adapter(unet, sine.ADAPTER):  # multi-model guides may hold other adapters
            unet.delete_adapters(sine.ADAPTER)
        if self._dirty and self._pretrained is not None:
            for n, p in unet.named_parameters():
                p.copy_(self._pretrained[n].to(p.device))
            self._dirty = False
        if step > 0:
            tensors, meta = self.folder.load_checkpoint(step)
            if meta.get("kind") != "lora" and self._pretrained is None:
                self._pretrained = {n: p.detach().cpu().clone() for n, p in unet.named_parameters()}
            adapters.apply_checkpoint(unet, tensors, meta)
            self._dirty = meta.get("kind") != "lora"
        unet.eval()
        self.step = step
        return step

    def base_latents(self, hw: tuple[int, int]) -> Tensor:
        """(1, C, h, w) scaled base latents at output size hw (re-encoded if it differs)."""
        res = tuple(self.folder.manifest["resolution"])
        if hw == res:
            return self.folder.base_latents().to(self.comp.device, self.comp.dtype)
        fitted, _ = fit_image(self.original, hw, self.tune_cfg.resize)
        return encode_image(self.comp, pil_to_tensor(fitted))

    def base_image_at(self, hw: tuple[int, int]) -> Image.Image:
        """The base image at output size hw: the tune's own, or the original center-cropped."""
        res = tuple(self.folder.manifest["resolution"])
        return self.base_image if tuple(hw) == res else fit_image(self.original, hw, "crop")[0]

    def full_prompt(self, prompt: str, cfg: EditConfig) -> str:
        return f"{self.tune_cfg.rare_token} {prompt}".strip() if cfg.rare_token else prompt

    @torch.no_grad()
    def edit(
        self,
        prompt: str,
        cfg: EditConfig = EditConfig(),
        mask: str | Path | None = None,
        progress: bool = True,
    ) -> EditResult:
        cfg.validate()
        comp = self.comp
        step = self.use_checkpoint(self.default_step(cfg))
        sine.set_home(comp.unet, cfg.lora_scale)  # own adapter at lora_scale, any guide's off
        res = tuple(self.folder.manifest["resolution"])
        hw = tuple(cfg.size) if cfg.size else res
        vs = comp.vae_scale
        if hw[0] % vs or hw[1] % vs:
            raise UserError(f"--size {hw[0]}x{hw[1]} is not a multiple of {vs}", "round it")
        # SINE feeds the edit prompt to the PRETRAINED model: no rare token (multi.py, sine.py)
        text = prompt if cfg.method == "sine" else self.full_prompt(prompt, cfg)
        need_x0 = cfg.t0 < 1.0 or mask is not None
        x0 = self.base_latents(hw) if need_x0 else None
        pix_mask = lat_mask = None
        if mask is not None:
            pix_mask = load_mask(mask, hw, self.placement).to(comp.device)[None]  # (1,1,H,W)
            lat_mask = latent_mask(pix_mask, (hw[0] // vs, hw[1] // vs))
        if cfg.guides:  # multi-model guidance: extra TUNE_DIR:PROMPT:WEIGHT terms
            from .guidespec import guide_strings
            from .multi import multi_guided

            cfg = replace(cfg, guides=guide_strings(cfg.guides))  # as recorded in the params
            guided = multi_guided(self, prompt, cfg)
        elif cfg.method == "sine":
            guided = sine.sine_guided(self, prompt, cfg)
        else:
            base_text = cfg.negative_prompt
            if cfg.prompt_guidance is not None:
                base_text = self.full_prompt(cfg.prompt_guidance, cfg)
            emb_base, emb_cond = encode_prompts(comp, [base_text, text]).chunk(2)
            guided = cfg_guided(unet_denoiser(comp.unet), emb_base, emb_cond, cfg.cfg)
        # one CPU generator per seed: the same noise on any device and in any batch
        lat_shape = (1, comp.unet.config.in_channels, hw[0] // vs, hw[1] // vs)
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in cfg.seeds]
        noise = torch.cat(
            [
                randn_tensor(lat_shape, generator=g, device=comp.device, dtype=comp.dtype)
                for g in gens
            ]
        )
        sched = make_scheduler(cfg.sampler, comp.scheduler_config)
        latents = sample(
            guided,
            sched,
            noise,
            steps=cfg.steps,
            t0=cfg.t0,
            x0=x0,
            mask=lat_mask,
            generator=gens[0] if len(gens) == 1 else None,
            eta=cfg.eta,
            progress=progress,
        )
        pixels = (decode_latents(comp, latents).float() / 2 + 0.5).clamp(0, 1)  # (B,3,H,W)
        base = None
        if pix_mask is not None or cfg.interpolate:
            base = (pil_to_tensor(self.base_image_at(hw)).to(pixels.device) / 2 + 0.5).clamp(0, 1)
        if pix_mask is not None:  # outside the mask the output IS the input, in pixel space too
            pixels = pix_mask * pixels + (1 - pix_mask) * base
        if cfg.interpolate:
            pixels = interpolate(pixels, base, cfg.interp_window, cfg.interp_threshold)
        images = tensor_to_pil(pixels * 2 - 1)
        if cfg.paste_back:
            images = [paste_back(im, self.placement, self.original) for im in images]
        params = [self._params(prompt, text, cfg, step, s, hw, mask) for s in cfg.seeds]
        return EditResult(images, params, pixels, latents)

    def _params(self, prompt, text, cfg: EditConfig, step, seed, hw, mask) -> dict[str, Any]:
        m = self.folder.manifest
        return {
            "prompt": text,
            "negative_prompt": cfg.negative_prompt,
            "steps": cfg.steps,
            "sampler": cfg.sampler,
            "cfg_scale": cfg.cfg,
            "seed": int(seed),
            "size": f"{hw[1]}x{hw[0]}",
            "model": m["model"],
            "tune": str(self.folder.path),
            "tune_method": self.tune_cfg.method,
            "image_sha256": m["image"]["sha256"],
            "edit_prompt": prompt,
            # the whole batch: a UNet batch of N is not bit-identical to N batches of 1 (kernel
            # choice depends on the batch), so --params re-runs this batch and keeps "seed"
            "edit_config": {
                **asdict(cfg),
                "checkpoint": step,
                "seeds": [int(x) for x in cfg.seeds],
            },
            "mask": str(mask) if mask is not None else None,
            "unitune": __version__,
        }


def output_name(prompt: str, params: dict[str, Any]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "edit"
    ec = params["edit_config"]
    return f"{slug}_c{ec['checkpoint']}_t{ec['t0']:g}_w{ec['cfg']:g}_s{params['seed']}.png"


def a1111_params(p: dict[str, Any]) -> dict[str, Any]:
    """The A1111-style key order for the PNG `parameters` chunk."""
    ec = p["edit_config"]
    out = {
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "Steps": p["steps"],
        "Sampler": p["sampler"],
        "CFG scale": p["cfg_scale"],
        "Seed": p["seed"],
        "Batch seeds": ",".join(str(x) for x in ec["seeds"]),
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
    if p.get("mask"):
        out["Mask"] = p["mask"]
    if ec["interpolate"]:
        out["Interpolate"] = f"window {ec['interp_window']}, threshold {ec['interp_threshold']}"
    if p["tune_method"] == "lora":
        out["LoRA scale"] = ec["lora_scale"]
    out["Version"] = f"unitune {p['unitune']}"
    return out
