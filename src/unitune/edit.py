"""UniTune editing (§3.3): sample "<rare> <edit prompt>" from a tune folder's checkpoint with CFG,
optional SDEdit start t0, prompt guidance, in-painting mask, pixel interpolation, paste-back;
SINE (sine.py) and multi-model guidance (multi.py) through the same loop. Family-agnostic: the
backbone encodes, denoises and decodes; the model state owns the weights."""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch import Tensor

from . import __version__
from .backbones import load_model
from .backbones.base import Backbone, Conditioning, warn_long_prompts
from .cascade import Upscaler
from .checks import check_steps_table, open_tune, refuse_quantized_full, tune_model_ref
from .config import Acceleration, EditConfig, WorkLimits, check_prompt
from .errors import UnituneWarning, UserError
from .guidance import latent_mask
from .guidespec import guide_strings
from .images import Placement, fit_image, load_mask, paste_back, pil_to_tensor, tensor_to_pil
from .interpolate import interpolate
from .multi import multi_guided
from .sampling import GuidedFn, cfg_guided, sample
from .sine import sine_guided, tuned_prompt
from .state import state_of
from .tunefolder import is_cascade


@dataclass
class EditResult:
    images: list[Image.Image]
    params: list[dict[str, Any]] = field(default_factory=list)
    pixels: Tensor | None = None  # (B, 3, H, W) float in [0, 1] before 8-bit rounding
    latents: Tensor | None = None  # (B, C, h, w) the final x0 in model space, before decoding
    base_stage: Tensor | None = None  # cascades: (B, 3, h, w) the base stage's samples, in [-1, 1]


class Editor:
    """A tune folder with its model loaded; switches checkpoints without reloading the model."""

    def __init__(
        self,
        tune_dir: str | Path,
        device: str = "auto",
        backbone: Backbone | None = None,
        vae: str | None = None,
        offload: bool = False,
        accel: Acceleration | None = None,
    ) -> None:
        """``backbone``: an already loaded model (else the tune's own is loaded); ``vae``: another
        VAE (default: the one the tune was made with); ``offload``: keep the text encoders and
        the VAE on the CPU between uses (GPUs with little memory); ``accel``: torch.compile /
        channels_last for the model loaded here."""
        self.folder = open_tune(tune_dir)  # its manifest's shape checked too
        m = self.folder.manifest
        self.tune_cfg = self.folder.tune_config()
        refuse_quantized_full(accel, self.tune_cfg.method)
        self.backbone = backbone or load_model(
            tune_model_ref(self.folder),
            device,
            vae=vae or m.get("vae"),
            offload=offload,
            accel=accel,
        )
        self.state = state_of(self.backbone)
        tuned_on = m.get("model_digest")  # absent in manifests written before it existed
        if tuned_on and tuned_on != self.backbone.digest:
            warnings.warn(
                f"{tune_dir} was tuned on other weights of {m['model']!r} (weights digest "
                f"{tuned_on}, now {self.backbone.digest}): its checkpoints are applied to the "
                "weights loaded now, so edits will not match the tune — retune it with --overwrite",
                UnituneWarning,
                stacklevel=2,
            )
        # a cascade tune (pixel cascades): its super-resolution stage, loaded beside the base
        self.upscaler = Upscaler(tune_dir, device, offload, accel) if is_cascade(tune_dir) else None
        self.placement = Placement.from_dict(m["placement"])
        self.base_image = Image.open(self.folder.path / "base.png").convert("RGB")
        self._original: Image.Image | None = None
        self._x4: tuple[str, Any] | None = None  # stage III (--upscaler), loaded on first use

    @property
    def original(self) -> Image.Image:
        if self._original is None:
            self._original = Image.open(self.folder.path / "original.png").convert("RGB")
        return self._original

    @property
    def step(self) -> int | None:
        """The checkpoint of this tune the model holds now (None: another tune's, or none)."""
        cur = self.state.current
        return cur[1] if cur is not None and cur[0] == str(self.folder.path.resolve()) else None

    def default_step(self, cfg: EditConfig) -> int | None:
        """cfg.checkpoint, or for None cfg.auto_checkpoint where the benchmark measured it (plain
        UniTune on a full-UNet tune that saved that step), else None (= the last one saved)."""
        if cfg.checkpoint is not None:
            return cfg.checkpoint
        measured = cfg.method == "unitune" and not cfg.guides and self.tune_cfg.method == "full"
        if measured and cfg.auto_checkpoint in self.folder.checkpoints:
            return cfg.auto_checkpoint
        return None

    def use_checkpoint(self, step: int | None) -> int:
        """Apply a checkpoint (None = last, 0 = pretrained) to the loaded model."""
        step = self.folder.resolve_checkpoint(step)
        self.state.use(self.folder, step)
        return step

    def base_latents(self, hw: tuple[int, int]) -> Tensor:
        """(1, C, h, w) base x0 in model space at output size hw (re-encoded if it differs)."""
        bb = self.backbone
        if hw == tuple(self.folder.manifest["resolution"]):
            return self.folder.base_latents().to(bb.device, bb.dtype)
        fitted, _ = fit_image(self.original, hw, self.tune_cfg.resize)
        return bb.encode_image(pil_to_tensor(fitted))

    def base_image_at(self, hw: tuple[int, int]) -> Image.Image:
        """The base image at output size hw: the tune's own, or the original center-cropped."""
        res = tuple(self.folder.manifest["resolution"])
        return self.base_image if tuple(hw) == res else fit_image(self.original, hw, "crop")[0]

    def full_prompt(self, prompt: str, cfg: EditConfig) -> str:
        return f"{self.tune_cfg.rare_token} {prompt}".strip() if cfg.rare_token else prompt

    def encode(
        self,
        prompts: list[str],
        hw: tuple[int, int],
        warn: bool = True,
        guidance: float | None = None,
    ) -> list[Conditioning]:
        """One-row conditionings of ``prompts`` for an output of size hw, encoded in one batch
        (``guidance``: a guidance-distilled model's embedded scale)."""
        if warn:
            warn_long_prompts(self.backbone, prompts)
        geo = self.placement.geometry(hw)
        return self.backbone.encode(prompts, geo, guidance).chunk(len(prompts))

    def negative(
        self, cfg: EditConfig, hw: tuple[int, int], guidance: float | None = None
    ) -> Conditioning:
        return self.backbone.encode_negative(
            cfg.negative_prompt, self.placement.geometry(hw), guidance
        )

    def _stage3(self, ref: str):
        """The x4 upscaler ``ref``, loaded on first use and kept."""
        from .upscale import Upscaler4x

        if self._x4 is None or self._x4[0] != ref:
            self._x4 = (ref, Upscaler4x(ref, self.backbone.device, self.backbone.dtype))
        return self._x4[1]

    def resolve(self, cfg: EditConfig) -> EditConfig:
        """``cfg`` with the model's defaults for what it leaves open (guidance, steps, sampler),
        checked against what the model offers."""
        cfg = cfg.for_model(self.backbone.defaults)
        self.backbone.check_sampler(cfg.sampler)
        self.backbone.guidance_weights(cfg.cfg, cfg.true_cfg)  # refuses --true-cfg where moot
        check_steps_table(cfg.steps, self.backbone.num_train_timesteps)  # the scheduler has no more
        return self.upscaler.resolve(cfg) if self.upscaler else cfg

    def sizes(self, cfg: EditConfig) -> tuple[tuple[int, int], tuple[int, int]]:
        """(the base stage's size, the output size): equal but for a cascade, whose output is its
        SR stage's (cfg.size, else the SR tune's resolution) and base stage that / its factor."""
        res = tuple(self.folder.manifest["resolution"])
        up = self.upscaler
        out = tuple(cfg.size) if cfg.size else (up.resolution if up else res)
        f = up.factor(res) if up else 1
        k = self.backbone.size_multiple * f
        if out[0] % k or out[1] % k:
            raise UserError(f"--size {out[0]}x{out[1]} is not a multiple of {k}", "round it")
        return (out[0] // f, out[1] // f), out

    def prompt_text(self, prompt: str, cfg: EditConfig) -> str:
        """What the edit samples: "<rare> <prompt>"; SINE feeds the edit prompt to the
        PRETRAINED model, so no rare token there (sine.py, multi.py)."""
        return prompt if cfg.method == "sine" else self.full_prompt(prompt, cfg)

    def guided(self, prompt: str, cfg: EditConfig, hw: tuple[int, int]) -> GuidedFn:
        """The guided denoiser of this edit's method, on the checkpoint applied now."""
        st, text = self.state, self.prompt_text(prompt, cfg)
        # w mixes predictions; g (guidance-distilled models) is embedded in every conditioning
        w, g = self.backbone.guidance_weights(cfg.cfg, cfg.true_cfg)
        c_u = self.negative(cfg, hw, g)
        c_hat_text = tuned_prompt(self.folder.manifest, self.tune_cfg)
        if cfg.guides:  # multi-model guidance: extra TUNE_DIR:PROMPT:WEIGHT terms
            return multi_guided(
                st,
                self.folder,
                lambda ps: self.encode(ps, hw, guidance=g),
                c_u,
                prompt,
                self.full_prompt(prompt, cfg),
                c_hat_text,
                replace(cfg, cfg=w),
            )
        if cfg.method == "sine":
            c_edit, c_hat = self.encode([prompt, c_hat_text], hw, guidance=g)
            return sine_guided(
                st.pretrained(),
                st.tuned(cfg.lora_scale),
                c_u,
                c_edit,
                c_hat,
                w,
                cfg.sine_v,
                cfg.sine_K,
            )
        if cfg.prompt_guidance is not None:
            base, cond = self.encode(
                [self.full_prompt(cfg.prompt_guidance, cfg), text], hw, guidance=g
            )
        else:
            (cond,) = self.encode([text], hw, guidance=g)
            base = c_u
        return cfg_guided(st.tuned(cfg.lora_scale), base, cond, w)

    @torch.no_grad()
    def edit(
        self,
        prompt: str,
        cfg: EditConfig = EditConfig(),
        mask: str | Path | None = None,
        progress: bool = True,
        t0s: tuple[float, ...] | None = None,
        limits: WorkLimits = WorkLimits(),
    ) -> EditResult:
        """Sample ``cfg.seeds`` in one batch. ``t0s``: instead of ``cfg.t0``, every seed at each
        of these SDEdit starts, still one batch (the grid's row; single-step samplers only);
        images and params come t0-major: (t0s[0], seeds...), (t0s[1], seeds...), ...
        ``limits``: the work one call may ask for (the CLI's checks, unitune.checks)."""
        check_prompt(prompt, limits, required=False)  # "": the tuned prompt alone
        cfg.validate(limits=limits)
        for t in t0s or ():
            replace(cfg, t0=t).validate(limits=limits)
        cfg = self.resolve(cfg)
        bb = self.backbone
        step = self.use_checkpoint(self.default_step(cfg))
        hw, out_hw = self.sizes(cfg)
        if cfg.guides:
            cfg = replace(cfg, guides=guide_strings(cfg.guides))  # as recorded in the params
        text = self.prompt_text(prompt, cfg)
        starts = t0s or (cfg.t0,)
        need_x0 = min(starts) < 1.0 or mask is not None
        x0 = self.base_latents(hw) if need_x0 else None
        pix_mask = lat_mask = None
        shape = bb.latent_shape(hw)  # (C, h, w)
        if mask is not None:
            pix_mask = load_mask(mask, hw, self.placement).to(bb.device)[None]  # (1,1,H,W)
            lat_mask = latent_mask(pix_mask, shape[1:])
        guided = self.guided(prompt, cfg, hw)
        # one CPU generator per sample (a seed at each start): the same noise, and the same step
        # noise of stochastic samplers, on any device and in any batch
        gens = [torch.Generator("cpu").manual_seed(int(s)) for _ in starts for s in cfg.seeds]
        noise = torch.cat(
            [randn_tensor((1, *shape), generator=g, device=bb.device, dtype=bb.dtype) for g in gens]
        )
        latents = sample(
            guided,
            bb.make_scheduler(cfg.sampler, hw),
            noise,
            steps=cfg.steps,
            t0=cfg.t0 if t0s is None else [t for t in t0s for _ in cfg.seeds],
            x0=x0,
            mask=lat_mask,
            generator=gens,
            eta=cfg.eta,
            progress=progress,
            renoise=bb.renoise,
            start=bb.start_index,
        )
        dec, sr_step, low = bb, None, None
        if self.upscaler is not None:
            low = latents  # the cascade's SR stage on the base stage's samples
            sr_step = self.upscaler.use(cfg, step)
            (c_sr,) = self.encode([self.full_prompt(prompt, cfg)], hw, warn=False)
            base_hi = pil_to_tensor(self.base_image_at(out_hw)).to(bb.device)
            if mask is not None:
                pix_mask = load_mask(mask, out_hw, self.placement).to(bb.device)[None]
            m_hi = None if pix_mask is None else latent_mask(pix_mask, out_hw)
            latents = self.upscaler.upscale(
                latents, c_sr, self.negative(cfg, hw), cfg, gens, base_hi, m_hi, progress
            )
            dec, hw = self.upscaler.backbone, out_hw
        pixels = (dec.decode(latents).float() / 2 + 0.5).clamp(0, 1)  # (B,3,H,W)
        base = None
        if pix_mask is not None or cfg.interpolate:
            base = (pil_to_tensor(self.base_image_at(hw)).to(pixels.device) / 2 + 0.5).clamp(0, 1)
        if pix_mask is not None:  # outside the mask the output IS the input, in pixel space too
            pixels = pix_mask * pixels + (1 - pix_mask) * base
        if cfg.interpolate:
            pixels = interpolate(pixels, base, cfg.interp_window, cfg.interp_threshold)
        if cfg.upscaler:  # stage III, untuned, on the finished output
            pixels = self._stage3(cfg.upscaler)(
                tensor_to_pil(pixels * 2 - 1),
                prompt,
                cfg.negative_prompt,
                gens,
                cfg.upscale_steps,
                cfg.upscale_noise_level,
            )
            hw = tuple(pixels.shape[-2:])
        images = tensor_to_pil(pixels * 2 - 1)
        if cfg.paste_back:
            images = [paste_back(im, self.placement, self.original) for im in images]
        params = [
            self._params(prompt, text, replace(cfg, t0=t, sr_checkpoint=sr_step), step, s, hw, mask)
            for t in starts
            for s in cfg.seeds
        ]
        return EditResult(images, params, pixels, latents, low)

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
    if ec.get("sr_checkpoint") is not None:  # a cascade's super-resolution stage
        out["SR checkpoint"], out["SR t0"] = ec["sr_checkpoint"], ec["sr_t0"]
    if p.get("mask"):
        out["Mask"] = p["mask"]
    if ec["interpolate"]:
        out["Interpolate"] = f"window {ec['interp_window']}, threshold {ec['interp_threshold']}"
    if p["tune_method"] == "lora":
        out["LoRA scale"] = ec["lora_scale"]
    out["Version"] = f"unitune {p['unitune']}"
    return out
