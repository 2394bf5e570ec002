"""The one set of typed defaults, shared by the library, the CLI, `unitune batch` and the web app.

Every field carries a comment; the CLI builds its flags from these defaults and passes a
``dataclasses.replace``-d copy to the library; batch lines and the web app's forms start from
the same dataclasses. Paper values are marked (UniTune §3.2-3.3; SINE §3.2 / §4). Two parts live
beside this file and are re-exported here, so ``from unitune.config import X`` names them all:
config_models.py (the per-family ``ModelDefaults``) and config_limits.py (``WorkLimits``, the
server's ``SERVE_LIMITS``, ``Limits``); config_checks.py holds the one-line value checks the
``validate`` methods are written with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

# the parts beside this module; ``X as X``: re-exported, so `from unitune.config import X` works
from .config_checks import (
    _bad,
    _choice,
    _flag,
    _int,
    _ints,
    _opt_int,
    _real,
    _text,
    show_value,
)
from .config_export import EXPORT_DTYPES as EXPORT_DTYPES
from .config_export import ExportConfig as ExportConfig
from .config_limits import SERVE_LIMITS as SERVE_LIMITS
from .config_limits import Limits as Limits
from .config_limits import WorkLimits
from .config_limits import check_prompt as check_prompt
from .config_limits import parse_limits as parse_limits
from .config_models import FLUX2_DEFAULTS as FLUX2_DEFAULTS
from .config_models import FLUX2_KLEIN_DEFAULTS as FLUX2_KLEIN_DEFAULTS
from .config_models import FLUX2_KLEIN_DISTILLED_DEFAULTS as FLUX2_KLEIN_DISTILLED_DEFAULTS
from .config_models import FLUX_DEFAULTS as FLUX_DEFAULTS
from .config_models import FLUX_SCHNELL_DEFAULTS as FLUX_SCHNELL_DEFAULTS
from .config_models import IF_DEFAULTS as IF_DEFAULTS
from .config_models import IF_SR_DEFAULTS as IF_SR_DEFAULTS
from .config_models import QWENIMAGE_DEFAULTS as QWENIMAGE_DEFAULTS
from .config_models import SD3_DEFAULTS as SD3_DEFAULTS
from .config_models import SD_DEFAULTS as SD_DEFAULTS
from .config_models import ZIMAGE_DEFAULTS as ZIMAGE_DEFAULTS
from .config_models import ModelDefaults

RARE_TOKEN = "beikkpic"  # UniTune's rare-token string (3 rare tokens in T5; 4 BPE pieces in CLIP)
DEFAULT_MODEL = "world"  # --model: the embedded model shipped in the package (offline)
ADAPTER = "unitune"  # the PEFT adapter name a tune folder's own LoRA checkpoints load under

# the choices of the string fields below (the CLI offers exactly these)
TUNE_METHODS = ("full", "lora")  # TuneConfig.method
RESIZE_MODES = ("crop", "pad")  # TuneConfig.resize
PRECISIONS = ("auto", "no", "bf16")  # TuneConfig.mixed_precision
SWITCHES = ("auto", "on", "off")  # TuneConfig.gradient_checkpointing
# EditConfig.sampler: DDIM and DPM-Solver++ (2nd order) for the noise-prediction families, the
# flow-matching Euler and Heun (2nd order) steps for the rectified-flow ones; each model offers
# its own (Backbone.samplers)
# and DDPM with learned variances for the pixel cascades (DeepFloyd IF's own)
SAMPLERS = ("ddim", "dpm++", "euler", "heun", "ddpm")
SINGLE_STEP = (
    "ddim",
    "euler",
    "ddpm",
)  # the samplers without multistep history: a batch may mix starts
DENSITIES = ("uniform", "logit_normal")  # TuneConfig.timestep_density
LR_SCHEDULES = ("constant", "cosine")  # TuneConfig.lr_schedule (tune_schedule.py)
EDIT_METHODS = ("unitune", "sine")  # EditConfig.method
# EditConfig.start: "noise" = SDEdit (the photo noised to t0 with the seed's noise), "inversion"
# = the photo inverted to t0 by the sampler's ODE under the tuned model (inversion.py)
STARTS = ("noise", "inversion")
# how --auto-mask turns its difference map into a mask (automask.py): "diffedit" (DiffEdit's
# cut at a fraction of the clamped map) or "otsu" (the cut best separating two levels)
AUTO_MASK_RULES = ("diffedit", "otsu")
# EditConfig.route: "off" samples as set; "auto" reads the automatic mask's map first and samples
# a local edit with the keep config, a global one as set (route.py)
ROUTES = ("off", "auto")
GRID_ROWS = ("checkpoint", "sr_checkpoint")  # GridConfig.rows
# `unitune export --format`: a LoRA file diffusers loads (load_lora_weights), a LoRA file in kohya's
# layout (A1111/Forge, ComfyUI), a full tune's delta compressed to a LoRA by SVD, and the tuned
# model merged into a whole model (a diffusers folder, or one .safetensors in the original layout)
EXPORT_FORMATS = ("diffusers-lora", "kohya-lora", "lora-from-full", "merged")
LORA_FORMATS = ("diffusers-lora", "kohya-lora", "lora-from-full")  # the ones that write a LoRA


def from_json(cls, fields: dict[str, Any]):
    """One of these configs from its fields as JSON keeps them (lists back to tuples), the
    defaults for the rest; unknown fields raise TypeError."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


BIG = 2**31 - 1  # bound of the step numbers that name checkpoints (no tune has more)


@dataclass(frozen=True)
class TuneSchedule:
    """A tune method's default length and checkpoints (TuneConfig.steps / save_at = None)."""

    steps: int  # fine-tuning steps of ONE run
    save_at: tuple[int, ...]  # steps at which checkpoints are saved


# Measured on the embedded model by the time-to-quality study (docs/BENCHMARKS.md "Time to
# quality"). Full: 32 steps, not the paper's 128: the default edit reads checkpoint 32
# (EditConfig.auto_checkpoint), which a constant-rate run reaches bit for bit whatever --steps
# is, so the last 96 steps only cost time; 8 and 16 steps lose fidelity on 40 scenes. LoRA
# (whose edit reads the last checkpoint): the paper's 128; 32 LoRA steps lose fidelity on 40
# scenes. --preset unitune runs the paper's 128 for either method.
TUNE_SCHEDULES = {
    "full": TuneSchedule(32, (8, 16, 24, 32)),
    "lora": TuneSchedule(128, (16, 32, 64, 128)),
}


@dataclass(frozen=True)
class TuneConfig:
    """How to fine-tune a model on one image (UniTune §3.2)."""

    steps: int | None = None  # fine-tuning steps of ONE run; None -> TUNE_SCHEDULES[method]
    save_at: tuple[int, ...] | None = None  # checkpoint steps; None -> TUNE_SCHEDULES[method]
    batch_size: int = 4  # copies of the base latent, each with its own noise and timestep (paper)
    lr: float | None = None  # None -> the model's for the method (ModelDefaults.lr_full / lr_lora)
    method: str | None = None  # "full": the whole denoiser (paper); "lora": PEFT LoRA adapters;
    # None -> the model's (ModelDefaults.tune_method: full for SD, lora for SD3 / FLUX)
    lora_rank: int | None = None  # LoRA rank (method lora); None -> ModelDefaults.lora_rank
    lora_conv: bool = False  # LoRA also on the ResNet convs (UNets) / feed-forward (transformers)
    # flow-matching families: training sigma density, "uniform" or "logit_normal" (SD3's);
    # None -> ModelDefaults.timestep_density (noise-prediction families: uniform timesteps)
    timestep_density: str | None = None
    rare_token: str = RARE_TOKEN  # the token string the image is bound to
    base_prompt: str | None = None  # tune on "<rare> <base prompt>"; verbatim if it has <rare>
    class_noun: str | None = None  # SINE template: tune on "a photo of a <rare> <class noun>"
    seed: int = 0  # seeds the noise and timesteps of every step (bit-exact resume)
    resize: str = "crop"  # "crop" (center-crop to the model's aspect) or "pad" (white bars)
    resolution: int | None = None  # None -> the model's native size (unet sample_size * vae factor)
    mixed_precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or "no" / "bf16"
    gradient_checkpointing: str = "auto"  # "auto": on for CUDA, off on CPU; or "on" / "off"
    max_grad_norm: float | None = None  # optional gradient clipping (paper: none)
    # the learning rate over --steps (tune_schedule.py): "constant" (paper) or "cosine" (down to
    # 0 at the last step), each after ``warmup_steps`` of linear warm-up from 0
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # linear warm-up steps (paper: none)
    # train only on timesteps up to this fraction of the 0..1000 scale (1 = all, paper): an edit
    # that starts at t0 never asks the model about later ones (the density squeezed into it)
    max_timestep: float = 1.0
    # stop early once a fixed-noise reconstruction loss of the tune prompt, probed every
    # ``probe_every`` steps, has not improved by 1% for this many probes (0: run all --steps);
    # the stopping step is saved as a checkpoint
    auto_stop: int = 0
    probe_every: int = 8  # steps between auto_stop's probes
    patches: bool = False  # SINE patch-based fine-tuning with a positional embedding of the crop
    patch_min_frac: float = 0.1  # SINE: crop sides uniform in [min_frac, 1] x the image's sides
    pos_freqs: int = 6  # SINE: Fourier frequencies per coordinate in the positional embedding
    # pixel cascades (DeepFloyd IF): also tune the super-resolution stage in the same run, on
    # (the image at the base size -> the image at its size), same steps and checkpoints, as
    # UniTune tunes Imagen's 64 -> 256 model; False: the base stage only
    cascade: bool = True
    # the super-resolution model (a diffusers IFSuperResolutionPipeline); None -> the one the
    # base model names (the embedded world-if: world-if-sr); recorded resolved
    sr_model: str | None = None

    def validate(self, *, limits: WorkLimits = WorkLimits()) -> None:
        """Raise a UserError (one line: the flag, the value, a fix) for any value out of range or
        of the wrong type, or beyond ``limits``; needs no model, so the CLI checks it before
        anything heavy loads (a save_at step beyond --steps is never reached: it is ignored)."""
        lim = limits
        _opt_int(
            self.steps, "--steps", 0, lim.max_tune_steps, "pass e.g. --steps 32", "max_tune_steps"
        )
        if self.save_at is not None:
            _ints(
                self.save_at,
                "--save-at",
                1,
                lim.max_tune_steps,
                "e.g. --save-at 16,32,64",
                lim.max_tune_steps,
                "max_tune_steps",
            )
        _int(
            self.batch_size, "--batch-size", 1, lim.max_batch_size, "pass e.g. 4", "max_batch_size"
        )
        _real(self.lr, "--lr", "e.g. --lr 1e-4", gt=0, none_ok=True)
        _choice(self.method, "--method", TUNE_METHODS, none_ok=True)
        _opt_int(self.lora_rank, "--lora-rank", 1, 1024, "e.g. --lora-rank 16")
        _flag(self.lora_conv, "--lora-conv")
        _choice(self.timestep_density, "--timestep-density", DENSITIES, none_ok=True)
        _text(self.rare_token, "--rare-token", lim.max_prompt_chars, required=True)
        _text(self.base_prompt, "--base-prompt", lim.max_prompt_chars, none_ok=True)
        _text(self.class_noun, "--class-noun", lim.max_prompt_chars, none_ok=True)
        _int(self.seed, "--seed", 0, lim.max_seed, "e.g. --seed 0", "max_seed")
        _choice(self.resize, "--resize", RESIZE_MODES)
        _opt_int(
            self.resolution, "--resolution", 8, lim.max_side, "e.g. --resolution 512", "max_side"
        )
        _choice(self.mixed_precision, "--mixed-precision", PRECISIONS)
        _choice(self.gradient_checkpointing, "--gradient-checkpointing", SWITCHES)
        _real(
            self.max_grad_norm,
            "max_grad_norm",
            "e.g. 1.0, or None for no clipping",
            gt=0,
            none_ok=True,
        )
        _choice(self.lr_schedule, "--lr-schedule", LR_SCHEDULES)
        _int(self.warmup_steps, "--warmup-steps", 0, lim.max_tune_steps, "e.g. 4", "max_tune_steps")
        _real(self.max_timestep, "--max-timestep", "e.g. 0.9 (the edit's t0)", gt=0, le=1)
        _int(self.auto_stop, "--auto-stop", 0, 1000, "e.g. --auto-stop 2 (probes), or 0: off")
        _int(self.probe_every, "--probe-every", 1, lim.max_tune_steps, "e.g. 8", "max_tune_steps")
        _bad(
            not (self.auto_stop and self.patches is True),
            "--auto-stop does not combine with --patches (its probe sees the whole image)",
            "drop one of them",
        )
        _flag(self.patches, "--patches")
        _real(self.patch_min_frac, "--patch-min-frac", "e.g. 0.1 (SINE)", gt=0, le=1)
        _int(self.pos_freqs, "pos_freqs", 1, 64, "e.g. 6 (SINE)")
        _flag(self.cascade, "--cascade")
        _text(self.sr_model, "--sr-model", 4096, none_ok=True)

    def uses_gradient_checkpointing(self, cuda: bool) -> bool:
        """Recompute activations in the backward pass (less memory, more time)?"""
        return self.gradient_checkpointing == "on" or (
            self.gradient_checkpointing == "auto" and cuda
        )

    def uses_bf16(self, cuda: bool) -> bool:
        """bf16 autocast for the denoiser's forward pass?"""
        return self.mixed_precision == "bf16" or (self.mixed_precision == "auto" and cuda)

    def learning_rate(self, defaults: ModelDefaults = ModelDefaults()) -> float:
        if self.lr is not None:
            return self.lr
        method = self.method or defaults.tune_method
        return defaults.lr_full if method == "full" else defaults.lr_lora

    def schedule(self, method: str) -> TuneSchedule:
        """Steps and checkpoints for ``method``: the ones set here, else TUNE_SCHEDULES'."""
        d = TUNE_SCHEDULES[method]
        steps = d.steps if self.steps is None else self.steps
        return TuneSchedule(steps, d.save_at if self.save_at is None else tuple(self.save_at))

    def for_model(self, defaults: ModelDefaults) -> TuneConfig:
        """Every ``None`` that means "the model's" (or its method's) filled in from its family's
        defaults (what a tune runs with and records)."""
        method = self.method or defaults.tune_method
        sched = self.schedule(method)
        return replace(
            self,
            steps=sched.steps,
            save_at=sched.save_at,
            method=method,
            lora_rank=self.lora_rank or defaults.lora_rank,
            lr=self.learning_rate(defaults),
            timestep_density=self.timestep_density or defaults.timestep_density,
        )

    def prompt(self) -> str:
        """The fine-tuning prompt the image is paired with."""
        if self.class_noun:
            return f"a photo of a {self.rare_token} {self.class_noun}"
        if self.base_prompt:
            # a base prompt that already places the rare token is the whole prompt, e.g.
            # "a beikkpic dog with a flower in its mouth" or "a painting in the beikkpic style"
            if re.search(rf"(?<!\w){re.escape(self.rare_token)}(?!\w)", self.base_prompt):
                return self.base_prompt
            return f"{self.rare_token} {self.base_prompt}"
        return self.rare_token


QUANTIZATIONS = ("int8",)  # Acceleration.quantize: torchao int8 weight-only linear layers


@dataclass(frozen=True)
class Acceleration:
    """How the denoiser runs, for tune and edit alike: speed, not results (up to float rounding),
    except ``quantize``, which trades accuracy for memory. The speed switches are measured on and
    off by `unitune bench speed` (docs/SPEED.md) before any becomes a default; none is one today."""

    compile: bool = False  # torch.compile the denoiser in place (a one-off compile per shape)
    channels_last: bool = False  # the denoiser's weights in NHWC memory format (convolutions)
    tf32: bool = False  # CUDA: TF32 tensor cores for fp32 matmuls and convolutions (Ampere+)
    # the denoiser's linear weights quantized (torchao, "int8" weight-only: half of bf16) for
    # LoRA tunes and their edits; None = the weights as loaded
    quantize: str | None = None


@dataclass(frozen=True)
class EditConfig:
    """How to sample an edit from a tune folder (UniTune §3.3, SINE §3.2)."""

    checkpoint: int | None = None  # fine-tuning step to use; None -> auto_checkpoint or the last
    # checkpoint=None with --method unitune on a full-UNet tune that saved this step: use it, as
    # the full benchmark edits more often from it than from the last at about the same fidelity
    # (docs/BENCHMARKS.md "Defaults"); LoRA tunes, SINE and other save_at get the last one saved
    auto_checkpoint: int = 32
    # guidance weight w: classifier-free guidance (paper: 32), or a guidance-distilled model's
    # embedded guidance (FLUX.1-dev); None -> the model's (ModelDefaults.cfg)
    cfg: float | None = None
    true_cfg: float = 1.0  # guidance-distilled models: true CFG on top (> 1: a negative pass)
    # SDEdit start in [0, 1]; 1.0 = pure noise, <= 0.8 mostly reproduces input. 0.9: the full
    # benchmark's success equals t0 1.0's at every checkpoint, with higher fidelity
    t0: float = 0.9
    steps: int | None = None  # sampling steps; None -> the model's (ModelDefaults.steps)
    sampler: str | None = None  # one of SAMPLERS the model offers; None -> the model's own
    seeds: tuple[int, ...] = (0,)  # one image per seed, sampled in one batched call
    negative_prompt: str = ""  # replaces the empty unconditional prompt in CFG
    rare_token: bool = True  # prepend the tune's rare token to the edit prompt
    prompt_guidance: str | None = None  # base prompt: eps = eps(base) + w (eps(edit) - eps(base))
    # blend toward the original where neighbourhoods agree (§3.4); on: in the full benchmark it
    # raised fidelity at all 72 UniTune configs (+0.014..+0.028) at the same success (+0.003)
    interpolate: bool = True
    interp_window: int = 5  # interpolation window (pixels, odd)
    interp_threshold: float = 0.1  # mean |diff| in [0,1] units above which a pixel is left edited
    lora_scale: float = 1.0  # LoRA tunes: 0 = pretrained model, 1 = tuned
    method: str = "unitune"  # "unitune" (CFG on the tuned model) or "sine" (model-based guidance)
    sine_K: int = 400  # SINE: model-based guidance for timesteps t > K (0..1000 scale; paper 400)
    sine_v: float = 0.7  # SINE: weight v of the pretrained model's edit prediction (paper 0.7)
    size: tuple[int, int] | None = None  # (H, W) output size; None -> the tune's resolution
    paste_back: bool = False  # paste the edit back into the original photo at its size
    eta: float = 0.0  # DDIM eta (0 = deterministic DDIM)
    # how the samples reach t0: "noise" (SDEdit: the photo noised with each seed's noise) or
    # "inversion" (the photo carried to t0 by the sampler's ODE backwards under the tuned model
    # and the tune prompt at CFG 1: DDIM for SD / IF, Euler for SD3 / FLUX; inversion.py)
    start: str = "noise"
    # inversion only: negative-prompt inversion (Miyake et al. 2023), the tune prompt instead of
    # the negative prompt as CFG's unconditional one, against CFG's drift from the inversion
    inversion_negative: bool = False
    # DiffEdit's automatic mask from the tuned model (automask.py): where "<rare> <edit>" and
    # the tune prompt predict different noise may change, the rest follows the photo
    auto_mask: bool = False
    # where the map is cut: "diffedit" marks what exceeds auto_mask_threshold of the map clamped
    # at 3x its mean, at most ~2/3 of the image; "otsu" cuts where the two sides' levels differ
    # most (Otsu 1979), whatever the area: a background edit's region is most of the image
    auto_mask_rule: str = "diffedit"
    auto_mask_threshold: float = 0.5  # rule diffedit: on the normalised map in [0, 1] (0.5)
    auto_mask_dilate: int = 1  # grow the mask by this many latent cells (0 = DiffEdit's own)
    auto_mask_t0: float = 0.5  # the noise level the map is taken at (DiffEdit: strength 0.5)
    auto_mask_draws: int = 10  # noise draws averaged (DiffEdit: num_maps_per_mask 10)
    auto_mask_seed: int = 0  # seeds those draws (the mask is deterministic)
    # the global / local route (route.py): "auto" takes the automatic mask's map first; a peaked
    # map (a local edit) samples negative-prompt inversion from route_t0 at CFG route_cfg inside
    # the automatic mask, a broad one (a global edit: background, style) samples as set
    route: str = "off"
    # spread (std / mean) of the map at or above which an edit is local: the automask-rules
    # bench's background edits had 0.31-0.80, its recolour / reshape / outline edits >= 1.28
    route_spread: float = 0.85
    route_t0: float = 0.8  # a local edit's start (the bench's most faithful keep config)
    route_cfg: float = 3.0  # a local edit's CFG, and the map's
    guides: tuple[str, ...] = ()  # multi-model guidance terms "TUNE_DIR:PROMPT:WEIGHT" (multi.py)
    # cascade tunes (DeepFloyd IF): the super-resolution stage after the base stage's edit
    sr_checkpoint: int | None = None  # its checkpoint: None -> the base stage's step if saved,
    # else the last; 0 = pretrained
    sr_t0: float = 1.0  # its SDEdit start from the base image at the output size (1 = none)
    sr_cfg: float | None = None  # its guidance weight; None -> the SR model's (IF: 4.0)
    sr_steps: int | None = None  # its steps; None -> the SR model's (IF: 50)
    sr_noise_level: int = 250  # noise augmentation of the base stage's output (IF's default 250)
    # stage III: an x4 upscaler (a StableDiffusionUpscalePipeline: hub id or folder) run on the
    # output, untuned; None = none. Its steps and noise level (IF's docs: 100; the pipeline's: 20)
    upscaler: str | None = None
    upscale_steps: int = 75  # the pipeline's default
    upscale_noise_level: int = 100

    def validate(self, *, limits: WorkLimits = WorkLimits()) -> None:
        """Raise a UserError (one line) for any value out of range or of the wrong type, or
        beyond ``limits`` (no model needed; the edit prompt itself: check_prompt)."""
        lim = limits
        _opt_int(
            self.checkpoint, "--checkpoint", 0, BIG, "a saved step, or 0 for the pretrained model"
        )
        _int(self.auto_checkpoint, "auto_checkpoint", 0, BIG, "e.g. 32")
        _real(self.cfg, "--cfg", "e.g. --cfg 7.5 (paper: 32)", ge=0, none_ok=True)
        _real(self.true_cfg, "--true-cfg", "e.g. --true-cfg 2 (1 = off)", ge=1)
        _real(self.t0, "--t0", "e.g. --t0 0.9 (1.0 = pure noise)", ge=0, le=1)
        _opt_int(
            self.steps, "--steps", 1, lim.max_sample_steps, "e.g. --steps 50", "max_sample_steps"
        )
        _choice(self.sampler, "--sampler", SAMPLERS, none_ok=True)
        _bad(
            not isinstance(self.seeds, (tuple, list)) or bool(self.seeds),
            "no seeds given",
            "pass e.g. --seeds 0,1,2,3",
        )
        _ints(
            self.seeds,
            "--seeds",
            0,
            lim.max_seed,
            "e.g. --seeds 0,1,2,3",
            lim.max_seeds,
            "max_seed",
            "max_seeds",
        )
        _text(self.negative_prompt, "--negative-prompt", lim.max_prompt_chars)
        _flag(self.rare_token, "rare_token (--no-rare-token)")
        _text(self.prompt_guidance, "--prompt-guidance", lim.max_prompt_chars, none_ok=True)
        _flag(self.interpolate, "--interpolate")
        _int(self.interp_window, "--interp-window", 1, 255, "an odd number, e.g. 5")
        _bad(
            self.interp_window % 2 == 1,
            f"--interp-window must be odd, got {self.interp_window}",
            "e.g. 5",
        )
        _real(self.interp_threshold, "--interp-threshold", "e.g. 0.1", gt=0)
        _real(self.lora_scale, "--lora-scale", "e.g. 1 (tuned) or 0 (pretrained)")
        _choice(self.method, "--method", EDIT_METHODS)
        _int(self.sine_K, "--sine-until-t (--K)", 0, 1000, "e.g. --sine-until-t 400 (SINE)")
        _real(
            self.sine_v,
            "--sine-pretrained-weight (--v)",
            "e.g. --sine-pretrained-weight 0.7 (SINE)",
            ge=0,
            le=1,
        )
        if self.size is not None:
            ok = isinstance(self.size, (tuple, list)) and len(self.size) == 2
            _bad(
                ok,
                f"--size must be (height, width), got {show_value(self.size)}",
                "e.g. --size 512x768",
            )
            for side in self.size:
                _int(side, "--size", 1, lim.max_side, "e.g. --size 512x768", "max_side")
        _flag(self.paste_back, "--paste-back")
        _real(self.eta, "--eta", "e.g. --eta 0 (deterministic DDIM)", ge=0)
        _choice(self.start, "--start", STARTS)
        _flag(self.inversion_negative, "--inversion-negative")
        inverting = self.start == "inversion"
        _bad(
            not inverting or self.eta == 0,
            "--start inversion runs the deterministic sampler backwards; --eta is "
            + show_value(self.eta),
            "drop --eta (or use --start noise)",
        )
        _bad(
            inverting or not self.inversion_negative,
            "--inversion-negative is a fix for --start inversion",
            "add --start inversion, or drop --inversion-negative",
        )
        plain = self.method == "unitune" and not self.guides and self.prompt_guidance is None
        _bad(
            plain or not self.inversion_negative,
            "--inversion-negative sets CFG's baseline itself: it does not combine with "
            "--prompt-guidance, --guide or --method sine",
            "drop --inversion-negative",
        )
        _flag(self.auto_mask, "--auto-mask")
        _choice(self.route, "--route", ROUTES)
        _real(self.route_spread, "--route-spread", "e.g. 0.85", gt=0)
        _real(self.route_t0, "--route-t0", "e.g. 0.8", gt=0, le=1)
        _real(self.route_cfg, "--route-cfg", "e.g. 3", ge=0)
        routing = self.route == "auto"
        for clash, flag in (
            (self.method == "sine", "--method sine"),
            (bool(self.guides), "--guide"),
            (self.prompt_guidance is not None, "--prompt-guidance"),
            (self.eta != 0, "--eta"),
        ):
            _bad(
                not (routing and clash),
                f"--route auto picks between UniTune's CFG edits; it does not combine with {flag}",
                f"drop {flag}, or --route off",
            )
        _choice(self.auto_mask_rule, "--auto-mask-rule", AUTO_MASK_RULES)
        _real(self.auto_mask_threshold, "--auto-mask-threshold", "e.g. 0.5", ge=0, le=1)
        _int(self.auto_mask_dilate, "--auto-mask-dilate", 0, 64, "e.g. 1 (latent cells)")
        _real(self.auto_mask_t0, "--auto-mask-t0", "e.g. 0.5 (DiffEdit)", gt=0, le=1)
        _int(self.auto_mask_draws, "--auto-mask-draws", 1, 64, "e.g. 10 (DiffEdit)")
        _int(self.auto_mask_seed, "--auto-mask-seed", 0, lim.max_seed, "e.g. 0", "max_seed")
        ok = isinstance(self.guides, (tuple, list)) and len(self.guides) <= lim.max_guides
        _bad(
            ok,
            f"--guide: at most {lim.max_guides} terms (work limit max_guides), "
            f"got {show_value(self.guides)}",
            "drop some",
        )
        for g in self.guides:
            _text(g, "--guide", lim.max_prompt_chars + 4096)
        _opt_int(
            self.sr_checkpoint,
            "--sr-checkpoint",
            0,
            BIG,
            "a saved step, or 0 for the pretrained SR model",
        )
        _real(self.sr_t0, "--sr-t0", "e.g. --sr-t0 0.7 (1.0 = pure noise)", ge=0, le=1)
        _real(self.sr_cfg, "--sr-cfg", "e.g. --sr-cfg 4", ge=0, none_ok=True)
        _opt_int(
            self.sr_steps,
            "--sr-steps",
            1,
            lim.max_sample_steps,
            "e.g. --sr-steps 50",
            "max_sample_steps",
        )
        _int(self.sr_noise_level, "--sr-noise-level", 0, 999, "e.g. 250 (IF's)")
        _text(self.upscaler, "--upscaler", 4096, none_ok=True)
        _int(
            self.upscale_steps,
            "--upscale-steps",
            1,
            lim.max_sample_steps,
            "e.g. 75",
            "max_sample_steps",
        )
        _int(self.upscale_noise_level, "--upscale-noise-level", 0, 350, "e.g. 100")

    def for_model(self, defaults: ModelDefaults) -> EditConfig:
        """Every ``None`` that means "the model's" filled in (what an edit runs with and
        records)."""
        return replace(
            self,
            cfg=defaults.cfg if self.cfg is None else self.cfg,
            steps=self.steps or defaults.steps,
            sampler=self.sampler or defaults.sampler,
        )


@dataclass(frozen=True)
class RankConfig:
    """How best-of-N ranks candidates (``unitune edit --best-of N``)."""

    balance: float = 1.0  # weight of fidelity (LPIPS z-score) against the edit score's z-score
    probes: int = 8  # (timestep, noise) pairs of the diffusion classifier; cost: 2 x probes evals
    t_lo: int = 100  # probe timesteps are evenly spaced in [t_lo, t_hi] (0..1000 scale): very low
    t_hi: int = 900  # t says little about the prompt, very high t little about the image
    threshold: float = (
        0.5  # DiffEdit: a pixel is "edited" above this fraction of the max difference
    )
    min_keep: float = 0.05  # less than this fraction left outside the region: judge the whole image
    seed: int = 0  # seeds the probe noise (the ranking is deterministic)


# `unitune tune --preset NAME`: TuneConfig field overrides, applied under the flags given
# explicitly.
TUNE_PRESETS: dict[str, dict[str, Any]] = {
    # UniTune §3.2: 128 steps saving 16, 32, 64, 128 (batch 4 and Adafactor 1e-4 are the
    # TuneConfig defaults); a full tune's default 32 steps end where the default edit reads
    "unitune": {"steps": 128, "save_at": (16, 32, 64, 128)},
    # SINE §4 implementation details: batch size 1, base learning rate 1e-6, 800 optimisation
    # steps without patch-based fine-tuning (their optimiser: LDM's AdamW; ours: Adafactor at the
    # same rate). Tunes on "a photo of a <rare> <class noun>" (--class-noun is required).
    "sine": {"steps": 800, "save_at": (200, 400, 600, 800), "batch_size": 1, "lr": 1e-6},
}
# SINE §4: 10,000 optimisation steps WITH patch-based fine-tuning (--preset sine --patches)
SINE_PATCH_OVERRIDES: dict[str, Any] = {"steps": 10_000, "save_at": (2500, 5000, 7500, 10_000)}


def tune_preset(name: str | None, *, patches: bool = False, method: str = "full") -> dict[str, Any]:
    """The TuneConfig field overrides of preset ``name`` (None: none, the defaults) for a run
    with these choices."""
    over = dict(TUNE_PRESETS[name]) if name is not None else {}
    if name == "sine":
        if patches:
            over.update(SINE_PATCH_OVERRIDES)
        if method == "lora":  # 1e-6 is SINE's full-UNet rate: an adapter would barely move
            over.pop("lr")  # keep the LoRA default (3e-4)
    return over


@dataclass(frozen=True)
class GridConfig:
    """The paper's figure-10 view: checkpoints x t0 (x seeds)."""

    checkpoints: tuple[int, ...] = ()  # rows; () -> every checkpoint the tune saved
    rows: str = "checkpoint"  # what the rows vary: "checkpoint", or "sr_checkpoint" (cascades)
    t0s: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 1.0)  # columns
    seeds: tuple[int, ...] = (0,)  # extra columns per t0
    cell: int = 128  # cell size in pixels on the sheet (images are upscaled, never downscaled)

    def for_tune(self, saved: list[int] | tuple[int, ...]) -> GridConfig:
        """This grid with its rows filled in for a tune that saved ``saved`` (no checkpoints
        named: all of them)."""
        return self if self.checkpoints else replace(self, checkpoints=tuple(saved))

    def validate(self, *, limits: WorkLimits = WorkLimits()) -> None:
        """Raise a UserError (one line) for a bad value, or a grid beyond ``limits`` (no
        checkpoints named: checked again once the tune's are known, ``for_tune``)."""
        lim = limits
        if self.checkpoints != ():
            _ints(
                self.checkpoints,
                "--checkpoints",
                0,
                BIG,
                "e.g. --checkpoints 16,32,64",
                lim.max_grid_cells,
                None,
                "max_grid_cells",
            )
        ok = isinstance(self.t0s, (tuple, list)) and 1 <= len(self.t0s) <= lim.max_grid_cells
        _bad(
            ok,
            f"--t0 must list 1 to {lim.max_grid_cells} values, got {show_value(self.t0s)}",
            "e.g. --t0 0.8,0.9,1",
        )
        for t in self.t0s:
            _real(t, "--t0 values", "e.g. --t0 0.8,0.9,1", ge=0, le=1)
        _ints(
            self.seeds,
            "--seeds",
            0,
            lim.max_seed,
            "e.g. --seeds 0",
            lim.max_seeds,
            "max_seed",
            "max_seeds",
        )
        _choice(self.rows, "--rows", GRID_ROWS)
        _int(self.cell, "--cell", 16, 2048, "e.g. --cell 128")
        cells = len(self.checkpoints) * len(self.t0s) * len(self.seeds)
        _bad(
            cells <= lim.max_grid_cells,
            f"the grid has {cells} cells (checkpoints x t0s x seeds), "
            f"at most {lim.max_grid_cells} (work limit max_grid_cells)",
            "fewer checkpoints, t0s or seeds",
        )
