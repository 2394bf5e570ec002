"""UniTune editing (§3.3), plan then run: sample "<rare> <edit prompt>" from a tune folder's
checkpoint with CFG, optional SDEdit start t0, prompt guidance, in-painting mask, pixel
interpolation, paste-back; SINE and multi-model guidance through the same loop (guiders/).

``Editor.plan`` does all the I/O of an edit once (checks, the model's defaults, the checkpoint,
sizes, guide tunes, conditionings, base latents, masks, the SR and x4 stages) and returns a
frozen :class:`~unitune.editplan.EditPlan`; ``Editor.run`` samples it: base stage -> SR stage
(cascades) -> finish pixels (mask, interpolation, x4 upscaler, paste-back) -> params. Below
``plan`` nothing opens a file. Family-agnostic: the backbone encodes, denoises and decodes; the
model state owns the weights.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch import Tensor

from . import automask, route
from .backbones import load_model
from .backbones.base import Backbone, Conditioning, warn_long_prompts
from .cascade import SRStage
from .checks import check_steps_table, open_tune, refuse_quantized_full, tune_model_ref
from .config import Acceleration, EditConfig, WorkLimits, check_prompt
from .edit_methods import make_guider, plan_start, route_of
from .editplan import EditPlan, EditResult, SRPlan, a1111_params, edit_params, output_name
from .errors import UnituneWarning, UserError
from .guidance import latent_mask
from .guiders import Guider
from .guidespec import guide_strings
from .images import fit_image, load_mask, paste_back, pil_to_tensor, tensor_to_pil
from .interpolate import interpolate
from .inversion import check_aligned, invert
from .sampling import Start, join_index, sample
from .state import state_of
from .tunefolder import is_cascade

__all__ = ["EditPlan", "EditResult", "Editor", "a1111_params", "output_name"]


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
            vae=vae or m.vae,
            offload=offload,
            accel=accel,
        )
        self.state = state_of(self.backbone)
        tuned_on = m.model_digest  # absent in manifests written before it existed
        if tuned_on and tuned_on != self.backbone.digest:
            warnings.warn(
                f"{tune_dir} was tuned on other weights of {m.model!r} (weights digest "
                f"{tuned_on}, now {self.backbone.digest}): its checkpoints are applied to the "
                "weights loaded now, so edits will not match the tune — retune it with --overwrite",
                UnituneWarning,
                stacklevel=2,
            )
        # a cascade tune (pixel cascades): its super-resolution stage II, loaded beside the base
        self.sr = SRStage(tune_dir, device, offload, accel) if is_cascade(tune_dir) else None
        self.placement = m.placement
        self.base_image = Image.open(self.folder.path / "base.png").convert("RGB")
        self._original: Image.Image | None = None
        self._x4: tuple[str, Any] | None = None  # stage III (--upscaler), loaded on first use
        # what a plan has encoded: it asks for the same prompts more than once (the route, the
        # guider, the start), and an LM text encoder is the slow part; None outside a plan
        self._encoded: dict[tuple, Any] | None = None

    @property
    def upscaler(self) -> SRStage | None:
        """Deprecated name of :attr:`sr` (the cascade's SR stage II, not the x4 upscaler)."""
        warnings.warn("Editor.upscaler is Editor.sr", DeprecationWarning, stacklevel=2)
        return self.sr

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
        if hw == self.folder.manifest.resolution:
            return self.folder.base_latents().to(bb.device, bb.dtype)
        fitted, _ = fit_image(self.original, hw, self.tune_cfg.resize)
        return bb.encode_image(pil_to_tensor(fitted))

    def base_image_at(self, hw: tuple[int, int]) -> Image.Image:
        """The base image at output size hw: the tune's own, or the original center-cropped."""
        res = self.folder.manifest.resolution
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
        key = ("encode", tuple(prompts), tuple(hw), guidance)
        return self._once(
            key, lambda: self.backbone.encode(prompts, geo, guidance).chunk(len(prompts))
        )

    def negative(
        self, cfg: EditConfig, hw: tuple[int, int], guidance: float | None = None
    ) -> Conditioning:
        geo = self.placement.geometry(hw)
        key = ("negative", cfg.negative_prompt, tuple(hw), guidance)
        return self._once(
            key, lambda: self.backbone.encode_negative(cfg.negative_prompt, geo, guidance)
        )

    def _once(self, key: tuple, make):
        """``make()``, or inside a plan what the plan already made under ``key``."""
        if self._encoded is None:
            return make()
        if key not in self._encoded:
            self._encoded[key] = make()
        return self._encoded[key]

    def _stage3(self, ref: str):
        """The x4 upscaler ``ref`` (stage III), loaded on first use and kept."""
        from .upscale import X4Upscaler

        if self._x4 is None or self._x4[0] != ref:
            self._x4 = (ref, X4Upscaler(ref, self.backbone.device, self.backbone.dtype))
        return self._x4[1]

    def _resolve(self, cfg: EditConfig) -> tuple[EditConfig, float, float | None]:
        """(cfg with the model's defaults, w of the CFG-style mix, the embedded guidance g)."""
        bb = self.backbone
        if cfg.start == "inversion":  # the sampler whose ODE the inversion runs backwards
            if cfg.sampler not in (None, bb.inversion_sampler):
                raise UserError(
                    f"--start inversion runs the {bb.inversion_sampler} sampler backwards, "
                    f"not --sampler {cfg.sampler}",
                    f"use --sampler {bb.inversion_sampler}, or drop --sampler",
                )
            cfg = replace(cfg, sampler=bb.inversion_sampler)
        cfg = cfg.for_model(bb.defaults)
        bb.check_sampler(cfg.sampler)
        # w mixes predictions; g (guidance-distilled models) is embedded in every conditioning
        w, g = bb.guidance_weights(cfg.cfg, cfg.true_cfg)  # refuses a moot --true-cfg
        check_steps_table(cfg.steps, self.backbone.num_train_timesteps)  # the scheduler has no more
        return (self.sr.resolve(cfg) if self.sr else cfg), w, g

    def resolve(self, cfg: EditConfig) -> EditConfig:
        """``cfg`` with the model's defaults for what it leaves open (guidance, steps, sampler),
        checked against what the model offers."""
        return self._resolve(cfg)[0]

    def sizes(self, cfg: EditConfig) -> tuple[tuple[int, int], tuple[int, int]]:
        """(the base stage's size, the output size): equal but for a cascade, whose output is its
        SR stage's (cfg.size, else the SR tune's resolution) and base stage that / its factor."""
        res = self.folder.manifest.resolution
        sr = self.sr
        out = tuple(cfg.size) if cfg.size else (sr.resolution if sr else res)
        f = sr.factor(res) if sr else 1
        k = self.backbone.size_multiple * f
        if out[0] % k or out[1] % k:
            raise UserError(f"--size {out[0]}x{out[1]} is not a multiple of {k}", "round it")
        return (out[0] // f, out[1] // f), out

    def prompt_text(self, prompt: str, cfg: EditConfig) -> str:
        """What the edit samples: "<rare> <prompt>"; SINE feeds the edit prompt to the
        PRETRAINED model, so no rare token there (guiders/sine.py, guiders/multi.py)."""
        return prompt if cfg.method == "sine" else self.full_prompt(prompt, cfg)

    def guider(
        self,
        prompt: str,
        cfg: EditConfig,
        hw: tuple[int, int],
        weights: tuple[float, float | None] | None = None,
    ) -> Guider:
        """The guider of this edit's method on the checkpoint applied now (edit_methods.py)."""
        return make_guider(self, prompt, cfg, hw, weights)

    # --- plan, then run -----------------------------------------------------------------------
    @torch.no_grad()
    def plan(
        self,
        prompt: str,
        cfg: EditConfig = EditConfig(),
        mask: str | Path | None = None,
        t0s: tuple[float, ...] | None = None,
        limits: WorkLimits = WorkLimits(),
    ) -> EditPlan:
        """Everything an edit needs, read, loaded and checked once (see the module docstring).
        ``t0s``: instead of ``cfg.t0``, every seed at each of these SDEdit starts, still one batch
        (the grid's row; single-step samplers only). ``limits``: the work one call may ask for
        (the CLI's checks, unitune.checks). Applies the plan's checkpoint to the model state:
        run a plan before making the next one."""
        self._encoded = {}  # each prompt encoded once in this plan
        try:
            return self._plan(prompt, cfg, mask, t0s, limits)
        finally:
            self._encoded = None

    def _plan(
        self,
        prompt: str,
        cfg: EditConfig,
        mask: str | Path | None,
        t0s: tuple[float, ...] | None,
        limits: WorkLimits,
    ) -> EditPlan:
        check_prompt(prompt, limits, required=False)  # "": the tuned prompt alone
        cfg.validate(limits=limits)
        for t in t0s or ():
            replace(cfg, t0=t).validate(limits=limits)
        routed = None
        if cfg.route == "auto":
            if t0s:
                raise UserError(
                    "--route auto sets each edit's start itself: it does not combine with a row "
                    "of t0s",
                    "drop --route auto from the grid, or the t0 row",
                )
            routed = self._route(prompt, cfg)
            if routed.local:
                cfg = route.local_config(cfg)
        cfg, w, g = self._resolve(cfg)
        bb = self.backbone
        step = self.use_checkpoint(self.default_step(cfg))
        hw, out_hw = self.sizes(cfg)
        if cfg.guides:
            cfg = replace(cfg, guides=guide_strings(cfg.guides))  # as recorded in the params
        starts = t0s or (cfg.t0,)
        inverting = cfg.start == "inversion"
        keeps = mask is not None or cfg.auto_mask
        x0 = self.base_latents(hw) if min(starts) < 1.0 or keeps or inverting else None
        pix_mask = lat_mask = None
        if mask is not None:
            pix_mask = load_mask(mask, hw, self.placement).to(bb.device)[None]  # (1, 1, H, W)
            lat_mask = latent_mask(pix_mask, bb.latent_shape(hw)[1:])
        guider = self.guider(prompt, cfg, hw, (w, g))
        inversion, auto = plan_start(self, prompt, cfg, hw, w, g, x0, routed)
        if auto is not None:  # intersection: a --mask bounds what may change, the auto mask
            lat_mask = auto if lat_mask is None else lat_mask * auto  # narrows it within
            pix_mask = automask.within(pix_mask, auto, hw)
        sr = sr_step = None
        final_hw = hw  # the size before stage III: the base stage's, or the SR stage's
        if self.sr is not None:
            sr_step = self.sr.use(cfg, step)
            (c_sr,) = self.encode([self.full_prompt(prompt, cfg)], hw, warn=False)
            base_hi = pil_to_tensor(self.base_image_at(out_hw)).to(bb.device)
            pix_mask = None
            if mask is not None:
                pix_mask = load_mask(mask, out_hw, self.placement).to(bb.device)[None]
            if auto is not None:  # stage I's mask upsampled for stage II
                pix_mask = automask.within(pix_mask, auto, out_hw)
            m_hi = None if pix_mask is None else latent_mask(pix_mask, out_hw)
            sr = SRPlan(c_sr, self.negative(cfg, hw), base_hi, m_hi)
            final_hw = out_hw
        base_pixels = None  # what a mask and pixel interpolation keep of the input, in [0, 1]
        if pix_mask is not None or cfg.interpolate:
            base_pixels = (pil_to_tensor(self.base_image_at(final_hw)) / 2 + 0.5).clamp(0, 1)
        return EditPlan(
            prompt=prompt,
            text=self.prompt_text(prompt, cfg),
            cfg=replace(cfg, sr_checkpoint=sr_step),
            checkpoint=step,
            applied=self.state.current,
            hw=hw,
            out_hw=final_hw,
            t0s=tuple(t0s) if t0s else None,
            guider=guider,
            x0=x0,
            mask=mask,
            pixel_mask=pix_mask,
            latent_mask=lat_mask,
            base_pixels=base_pixels,
            sr=sr,
            inversion=inversion,
            auto_mask=auto,
            x4=self._stage3(cfg.upscaler) if cfg.upscaler else None,
            original=self.original if cfg.paste_back else None,
            route=routed,
        )

    def _route(self, prompt: str, cfg: EditConfig) -> route.Route:
        """The route of an edit (route.py), from the map under its local config: that config's
        checkpoint (the same as the edit's) applied, its size and CFG."""
        local, w, g = self._resolve(route.local_config(cfg))
        self.use_checkpoint(self.default_step(local))
        hw, _ = self.sizes(local)
        return route_of(self, prompt, local, hw, (w, g), self.base_latents(hw))

    @torch.no_grad()
    def run(self, plan: EditPlan, progress: bool = True) -> EditResult:
        """Sample a plan: base stage -> SR stage -> finish pixels -> params."""
        stale = self.state.current != plan.applied
        stale = stale or (self.sr is not None and self.sr.step != plan.cfg.sr_checkpoint)
        if stale:
            raise RuntimeError("the model state changed since this plan was made: plan again")
        bb, cfg = self.backbone, plan.cfg
        # one CPU generator per sample (a seed at each start): the same noise, and the same step
        # noise of stochastic samplers, on any device and in any batch
        gens = [torch.Generator("cpu").manual_seed(int(s)) for _ in plan.starts for s in cfg.seeds]
        shape = bb.latent_shape(plan.hw)  # (C, h, w)
        noise = torch.cat(
            [randn_tensor((1, *shape), generator=g, device=bb.device, dtype=bb.dtype) for g in gens]
        )
        t0 = cfg.t0 if plan.t0s is None else tuple(t for t in plan.t0s for _ in cfg.seeds)
        scheduler = bb.make_scheduler(cfg.sampler, plan.hw)
        path = None
        if plan.inversion is not None:  # the photo inverted up to the earliest start
            inverse = bb.inverse_scheduler(bb.make_scheduler(cfg.sampler, plan.hw))
            check_aligned(inverse, scheduler, cfg.steps)
            first = min(join_index(bb, scheduler, cfg.steps, t) for t in plan.starts)
            guided = plan.inversion.build()
            path = invert(guided, inverse, plan.x0, steps=cfg.steps, first=first, progress=progress)
        latents = sample(
            plan.guider.build(),
            scheduler,
            noise,
            steps=cfg.steps,
            start=Start(t0, plan.x0, plan.latent_mask, path),
            process=bb,
            generator=gens,
            eta=cfg.eta,
            progress=progress,
        )
        dec, low = bb, None
        if plan.sr is not None:  # the cascade's SR stage on the base stage's samples
            low = latents
            latents = self.sr.run(plan.sr, low, cfg, gens, progress)
            dec = self.sr.backbone
        pixels = (dec.decode(latents).float() / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)
        pixels = self._finish(plan, pixels, gens)
        images = tensor_to_pil(pixels * 2 - 1)
        if plan.original is not None:
            images = [paste_back(im, self.placement, plan.original) for im in images]
        hw = tuple(pixels.shape[-2:])
        params = [
            edit_params(self.folder, self.tune_cfg, plan, replace(cfg, t0=t), s, hw)
            for t in plan.starts
            for s in cfg.seeds
        ]
        shown = None  # the auto mask as used (with --mask: their intersection), for a user
        if plan.auto_mask is not None:
            m = automask.to_pixels(plan.pixel_mask, tuple(images[0].size[::-1]))
            shown = Image.fromarray((m[0, 0].cpu().numpy() * 255).round().astype("uint8"), "L")
        return EditResult(images, params, pixels, latents, low, shown)

    def _finish(self, plan: EditPlan, pixels: Tensor, gens: list[torch.Generator]) -> Tensor:
        """Pixels (B, 3, H, W) in [0, 1]: the mask's outside and interpolation from the input,
        then stage III (untuned) on the finished output."""
        cfg, base, m = plan.cfg, plan.base_pixels, plan.pixel_mask
        if base is not None:
            base = base.to(pixels.device)
        if m is not None:  # outside the mask the output IS the input, in pixel space too
            pixels = m * pixels + (1 - m) * base
        if cfg.interpolate:
            pixels = interpolate(pixels, base, cfg.interp_window, cfg.interp_threshold)
        if plan.x4 is not None:
            images = tensor_to_pil(pixels * 2 - 1)
            pixels = plan.x4(
                images,
                plan.prompt,
                cfg.negative_prompt,
                gens,
                cfg.upscale_steps,
                cfg.upscale_noise_level,
            )
        return pixels

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
        """Sample ``cfg.seeds`` in one batch: :meth:`plan` then :meth:`run`. With ``t0s`` images
        and params come t0-major: (t0s[0], seeds...), (t0s[1], seeds...), ..."""
        return self.run(self.plan(prompt, cfg, mask, t0s, limits), progress)
