"""The one set of typed defaults, shared by the library, the CLI and the web UI.

Every field carries a comment; the CLI builds its flags from these defaults and passes a
``dataclasses.replace``-d copy to the library. Paper values are marked (UniTune §3.2-3.3;
SINE §3.2 / §4).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UserError

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
EDIT_METHODS = ("unitune", "sine")  # EditConfig.method
# `unitune export --format`: a LoRA file diffusers loads (load_lora_weights), a LoRA file in kohya's
# layout (A1111/Forge, ComfyUI), a full tune's delta compressed to a LoRA by SVD, and the tuned
# model merged into a whole model (a diffusers folder, or one .safetensors in the original layout)
GRID_ROWS = ("checkpoint", "sr_checkpoint")  # GridConfig.rows
EXPORT_FORMATS = ("diffusers-lora", "kohya-lora", "lora-from-full", "merged")
LORA_FORMATS = ("diffusers-lora", "kohya-lora", "lora-from-full")  # the ones that write a LoRA


def from_json(cls, fields: dict[str, Any]):
    """One of these configs from its fields as JSON keeps them (lists back to tuples), the
    defaults for the rest; unknown fields raise TypeError."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


@dataclass(frozen=True)
class ModelDefaults:
    """The defaults that depend on the model family (README "Model families"). The values here
    are Stable Diffusion's (1.x / 2.x / XL and the embedded model); ``backbones.FAMILIES`` gives
    the other families theirs. A ``None`` in TuneConfig / EditConfig means "this model's"."""

    tune_method: str = "full"  # UniTune §3.2 fine-tunes the whole denoiser
    lora_rank: int = 16  # LoRA rank when method is lora
    lr_full: float = 1e-4  # learning rate of a full tune (paper: Adafactor 1e-4)
    lr_lora: float = 3e-4  # learning rate of a LoRA tune
    timestep_density: str = "uniform"  # training timesteps: uniform, or logit-normal in sigma
    cfg: float = 7.5  # guidance weight (SD's usual default; paper: 32 on Imagen)
    steps: int = 50  # sampling steps
    sampler: str = "ddim"  # the model's own single-step sampler


def _bad(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise UserError(problem, fix)


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class TuneConfig:
    """How to fine-tune a model on one image (UniTune §3.2)."""

    steps: int = 128  # fine-tuning steps of ONE run (paper: 128)
    save_at: tuple[int, ...] = (16, 32, 64, 128)  # steps at which checkpoints are saved (paper)
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

    def validate(self) -> None:
        """Raise a UserError (one line: the flag, the value, a fix) for any value out of range;
        needs no model, so the CLI checks it before anything heavy loads."""
        _bad(self.steps >= 0, f"--steps must be >= 0, got {self.steps}", "pass e.g. --steps 128")
        _bad(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}", "pass e.g. 4")  # fmt: skip
        _bad(self.method in (None, *TUNE_METHODS), f"unknown --method {self.method!r}", f"use one of {', '.join(TUNE_METHODS)}")  # fmt: skip
        _bad(self.resize in RESIZE_MODES, f"unknown --resize {self.resize!r}", f"use one of {', '.join(RESIZE_MODES)}")  # fmt: skip
        _bad(self.mixed_precision in PRECISIONS, f"unknown --mixed-precision {self.mixed_precision!r}", f"use one of {', '.join(PRECISIONS)}")  # fmt: skip
        _bad(self.gradient_checkpointing in SWITCHES, f"unknown --gradient-checkpointing {self.gradient_checkpointing!r}", f"use one of {', '.join(SWITCHES)}")  # fmt: skip
        _bad(bool(self.save_at) and all(s > 0 for s in self.save_at), f"--save-at must list positive steps, got {self.save_at}", "e.g. 16,32,64")  # fmt: skip
        lr = self.learning_rate()
        _bad(_finite(lr) and lr > 0, f"--lr must be a positive number, got {self.lr}", "e.g. --lr 1e-4")  # fmt: skip
        _bad(self.timestep_density in (None, *DENSITIES), f"unknown --timestep-density {self.timestep_density!r}", f"use one of {', '.join(DENSITIES)}")  # fmt: skip
        _bad(self.lora_rank is None or self.lora_rank >= 1, f"--lora-rank must be >= 1, got {self.lora_rank}", "e.g. --lora-rank 16")  # fmt: skip
        _bad(self.resolution is None or self.resolution >= 8, f"--resolution must be >= 8, got {self.resolution}", "e.g. --resolution 512")  # fmt: skip
        _bad(0.0 < self.patch_min_frac <= 1.0, f"--patch-min-frac must be in (0, 1], got {self.patch_min_frac}", "e.g. 0.1 (SINE)")  # fmt: skip
        _bad(self.max_grad_norm is None or self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}", "e.g. 1.0, or None for no clipping")  # fmt: skip
        _bad(bool(self.rare_token.strip()), "--rare-token is empty", "e.g. --rare-token beikkpic")

    def uses_gradient_checkpointing(self, cuda: bool) -> bool:
        """Recompute activations in the backward pass (less memory, more time)?"""
        return self.gradient_checkpointing == "on" or (self.gradient_checkpointing == "auto" and cuda)  # fmt: skip

    def uses_bf16(self, cuda: bool) -> bool:
        """bf16 autocast for the denoiser's forward pass?"""
        return self.mixed_precision == "bf16" or (self.mixed_precision == "auto" and cuda)

    def learning_rate(self, defaults: ModelDefaults = ModelDefaults()) -> float:
        if self.lr is not None:
            return self.lr
        method = self.method or defaults.tune_method
        return defaults.lr_full if method == "full" else defaults.lr_lora

    def for_model(self, defaults: ModelDefaults) -> TuneConfig:
        """Every ``None`` that means "the model's" filled in from its family's defaults (what a
        tune runs with and records)."""
        method = self.method or defaults.tune_method
        return replace(
            self,
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
    guides: tuple[str, ...] = ()  # multi-model guidance terms "TUNE_DIR:PROMPT:WEIGHT" (multi.py)
    # cascade tunes (DeepFloyd IF): the super-resolution stage after the base stage's edit
    sr_checkpoint: int | None = None  # its checkpoint: None -> the base stage's step if saved, else the last; 0 = pretrained  # fmt: skip
    sr_t0: float = 1.0  # its SDEdit start from the base image at the output size (1 = none)
    sr_cfg: float | None = None  # its guidance weight; None -> the SR model's (IF: 4.0)
    sr_steps: int | None = None  # its steps; None -> the SR model's (IF: 50)
    sr_noise_level: int = 250  # noise augmentation of the base stage's output (IF's default 250)
    # stage III: an x4 upscaler (a StableDiffusionUpscalePipeline: hub id or folder) run on the
    # output, untuned; None = none. Its steps and noise level (IF's docs: 100; the pipeline's: 20)
    upscaler: str | None = None
    upscale_steps: int = 75  # the pipeline's default
    upscale_noise_level: int = 100

    def validate(self) -> None:
        """Raise a UserError for any value out of range (no model needed)."""
        t0, w = self.t0, self.cfg
        _bad(_finite(t0) and 0.0 <= t0 <= 1.0, f"--t0 must be in [0, 1], got {t0}", "e.g. --t0 0.9 (1.0 = pure noise)")  # fmt: skip
        _bad(w is None or (_finite(w) and w >= 0), f"--cfg must be >= 0, got {w}", "e.g. --cfg 7.5 (paper: 32)")  # fmt: skip
        _bad(_finite(self.true_cfg) and self.true_cfg >= 1, f"--true-cfg must be >= 1, got {self.true_cfg}", "e.g. --true-cfg 2 (1 = off)")  # fmt: skip
        _bad(self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}", "e.g. --steps 50")  # fmt: skip
        _bad(self.sampler in (None, *SAMPLERS), f"unknown --sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")  # fmt: skip
        _bad(bool(self.seeds), "no seeds given", "pass e.g. --seeds 0,1,2,3")
        _bad(all(s >= 0 for s in self.seeds), f"--seeds must be >= 0, got {self.seeds}", "e.g. --seeds 0,1,2,3")  # fmt: skip
        _bad(self.checkpoint is None or self.checkpoint >= 0, f"--checkpoint must be >= 0, got {self.checkpoint}", "a saved step, or 0 for the pretrained model")  # fmt: skip
        _bad(self.interp_window >= 1 and self.interp_window % 2 == 1, f"--interp-window must be odd, got {self.interp_window}", "e.g. 5")  # fmt: skip
        _bad(_finite(self.interp_threshold) and self.interp_threshold > 0, f"--interp-threshold must be > 0, got {self.interp_threshold}", "e.g. 0.1")  # fmt: skip
        _bad(self.method in EDIT_METHODS, f"unknown --method {self.method!r}", f"use one of {', '.join(EDIT_METHODS)}")  # fmt: skip
        _bad(_finite(self.lora_scale), f"--lora-scale must be a number, got {self.lora_scale}", "e.g. 1 (tuned) or 0 (pretrained)")  # fmt: skip
        _bad(0 <= self.sine_K <= 1000, f"--K must be in [0, 1000], got {self.sine_K}", "e.g. --K 400 (SINE)")  # fmt: skip
        _bad(_finite(self.sine_v) and 0.0 <= self.sine_v <= 1.0, f"--v must be in [0, 1], got {self.sine_v}", "e.g. --v 0.7 (SINE)")  # fmt: skip
        _bad(self.size is None or min(self.size) > 0, f"--size must be positive, got {self.size}", "e.g. --size 512x768")  # fmt: skip
        _bad(_finite(self.eta) and self.eta >= 0, f"--eta must be >= 0, got {self.eta}", "e.g. --eta 0 (deterministic DDIM)")  # fmt: skip
        _bad(self.sr_checkpoint is None or self.sr_checkpoint >= 0, f"--sr-checkpoint must be >= 0, got {self.sr_checkpoint}", "a saved step, or 0 for the pretrained SR model")  # fmt: skip
        _bad(_finite(self.sr_t0) and 0.0 <= self.sr_t0 <= 1.0, f"--sr-t0 must be in [0, 1], got {self.sr_t0}", "e.g. --sr-t0 0.7 (1.0 = pure noise)")  # fmt: skip
        _bad(self.sr_cfg is None or (_finite(self.sr_cfg) and self.sr_cfg >= 0), f"--sr-cfg must be >= 0, got {self.sr_cfg}", "e.g. --sr-cfg 4")  # fmt: skip
        _bad(self.sr_steps is None or self.sr_steps >= 1, f"--sr-steps must be >= 1, got {self.sr_steps}", "e.g. --sr-steps 50")  # fmt: skip
        _bad(self.upscale_steps >= 1, f"--upscale-steps must be >= 1, got {self.upscale_steps}", "e.g. 75")  # fmt: skip
        _bad(0 <= self.upscale_noise_level <= 350, f"--upscale-noise-level must be in [0, 350], got {self.upscale_noise_level}", "e.g. 100")  # fmt: skip
        _bad(0 <= self.sr_noise_level < 1000, f"--sr-noise-level must be in [0, 1000), got {self.sr_noise_level}", "e.g. 250 (IF's)")  # fmt: skip

    def for_model(self, defaults: ModelDefaults) -> EditConfig:
        """Every ``None`` that means "the model's" filled in (what an edit runs with and records)."""
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


# `unitune tune --preset NAME`: TuneConfig field overrides, applied under the flags given explicitly.
TUNE_PRESETS: dict[str, dict[str, Any]] = {
    # UniTune §3.2: the TuneConfig defaults (128 steps, batch 4, Adafactor 1e-4, saves 16..128)
    "unitune": {},
    # SINE §4 implementation details: batch size 1, base learning rate 1e-6, 800 optimisation
    # steps without patch-based fine-tuning (their optimiser: LDM's AdamW; ours: Adafactor at the
    # same rate). Tunes on "a photo of a <rare> <class noun>" (--class-noun is required).
    "sine": {"steps": 800, "save_at": (200, 400, 600, 800), "batch_size": 1, "lr": 1e-6},
}
# SINE §4: 10,000 optimisation steps WITH patch-based fine-tuning (--preset sine --patches)
SINE_PATCH_OVERRIDES: dict[str, Any] = {"steps": 10_000, "save_at": (2500, 5000, 7500, 10_000)}


def tune_preset(name: str, *, patches: bool = False, method: str = "full") -> dict[str, Any]:
    """The TuneConfig field overrides of preset ``name`` for a run with these choices."""
    over = dict(TUNE_PRESETS[name])
    if name == "sine":
        if patches:
            over.update(SINE_PATCH_OVERRIDES)
        if method == "lora":  # 1e-6 is SINE's full-UNet rate: an adapter would barely move
            over.pop("lr")  # keep the LoRA default (3e-4)
    return over


@dataclass(frozen=True)
class GridConfig:
    """The paper's figure-10 view: checkpoints x t0 (x seeds)."""

    checkpoints: tuple[int, ...] = (16, 32, 64, 128)  # rows
    rows: str = "checkpoint"  # what the rows vary: "checkpoint", or "sr_checkpoint" (cascades)
    t0s: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 1.0)  # columns
    seeds: tuple[int, ...] = (0,)  # extra columns per t0
    cell: int = 128  # cell size in pixels on the sheet (images are upscaled, never downscaled)

    def validate(self) -> None:
        _bad(bool(self.checkpoints) and min(self.checkpoints) >= 0, f"--checkpoints must list steps >= 0, got {self.checkpoints}", "e.g. --checkpoints 16,32,64")  # fmt: skip
        _bad(bool(self.t0s) and all(_finite(t) and 0 <= t <= 1 for t in self.t0s), f"--t0 values must be in [0, 1], got {self.t0s}", "e.g. --t0 0.8,0.9,1")  # fmt: skip
        _bad(bool(self.seeds) and min(self.seeds) >= 0, f"--seeds must be >= 0, got {self.seeds}", "e.g. --seeds 0")  # fmt: skip
        _bad(self.rows in GRID_ROWS, f"unknown --rows {self.rows!r}", f"use one of {', '.join(GRID_ROWS)}")  # fmt: skip
        _bad(16 <= self.cell <= 2048, f"--cell must be in [16, 2048] pixels, got {self.cell}", "e.g. --cell 128")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """Input limits."""

    max_megapixels: float = 40.0  # refuse larger images (decompression bombs)
    refused_suffixes: tuple[str, ...] = field(
        default=(".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
    )  # pickle-based weight files are never loaded
