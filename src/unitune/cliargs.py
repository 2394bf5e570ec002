"""The CLI's argument types and shared flag groups (the parser itself: cli.py). Flags take their
defaults from unitune.config, the one set of defaults."""

from __future__ import annotations

import argparse
import sys

from .config import (
    AUTO_MASK_RULES,
    EDIT_METHODS,
    EXPORT_DTYPES,
    EXPORT_FORMATS,
    LR_SCHEDULES,
    QUANTIZATIONS,
    ROUTES,
    SAMPLERS,
    STARTS,
    Acceleration,
    EditConfig,
    ExportConfig,
    TuneConfig,
)


class Parser(argparse.ArgumentParser):
    """argparse with unitune's error form: one line on stderr, exit 2 (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"unitune: error: {self.prog}: {message} — see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def _comma_list(text: str, cast: type, what: str) -> tuple:
    try:
        vals = tuple(cast(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {what}s, got {text!r}"
        ) from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one {what}")
    return vals


def ints(text: str) -> tuple[int, ...]:
    return _comma_list(text, int, "integer")


def floats(text: str) -> tuple[float, ...]:
    return _comma_list(text, float, "number")


def size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x768, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--verbose", action="store_true", help="show third-party logs, warnings and load bars"
    )


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    """config.Acceleration's switches (docs/SPEED.md has what each buys)."""
    a = Acceleration()
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=a.compile,
        help="torch.compile the denoiser (a one-off compile; faster per step after)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=a.channels_last,
        help="the denoiser's weights in channels-last (NHWC) memory format",
    )
    p.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=a.tf32,
        help="CUDA: TF32 tensor cores for fp32 matmuls and convolutions",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=a.quantize,
        help="int8 weight-only denoiser (torchao): less memory, LoRA tunes only",
    )


def add_schedule_flags(p: argparse.ArgumentParser) -> None:
    """TuneConfig's schedule levers (tune_schedule.py; docs/BENCHMARKS.md "Time to quality")."""
    td = TuneConfig()
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=td.lr_schedule)
    p.add_argument(
        "--warmup-steps", type=int, default=td.warmup_steps, help="linear learning-rate warm-up"
    )
    p.add_argument(
        "--max-timestep",
        type=float,
        default=td.max_timestep,
        help="train on timesteps up to this fraction only (e.g. the edits' t0)",
    )
    p.add_argument(
        "--auto-stop",
        type=int,
        default=td.auto_stop,
        metavar="PROBES",
        help="stop when the fixed-noise probe loss has not improved 1%% for PROBES probes",
    )
    p.add_argument(
        "--probe-every", type=int, default=td.probe_every, help="steps between --auto-stop probes"
    )


def acceleration(args: argparse.Namespace) -> Acceleration:
    return Acceleration(
        compile=args.compile,
        channels_last=args.channels_last,
        tf32=args.tf32,
        quantize=args.quantize,
    )


def add_edit_flags(p: argparse.ArgumentParser, d: EditConfig, grid: bool = False) -> None:
    # absent unless given (EditConfig's defaults apply), so --fidelity can tell they were not
    keep = argparse.SUPPRESS
    if not grid:
        p.add_argument(
            "--checkpoint",
            type=int,
            default=keep,
            help=f"step (0 = pretrained; default {d.auto_checkpoint} "
            "on a full tune that saved it, else the last)",
        )
        p.add_argument(
            "--t0", type=float, default=keep, help=f"SDEdit start in [0,1]; 1 = noise ({d.t0})"
        )
        p.add_argument("--seeds", type=ints, default=d.seeds, help="comma list, e.g. 0,1,2,3")
    p.add_argument(
        "--cfg",
        type=float,
        default=keep,
        help="guidance weight (default: the model's, e.g. 7.5 for SD; paper: 32); "
        "FLUX.1-dev: its embedded guidance",
    )
    p.add_argument(
        "--true-cfg",
        type=float,
        default=d.true_cfg,
        help="FLUX.1: true CFG with --negative-prompt on top of the embedded guidance (1 = off)",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help="sampling steps (default: the model's)"
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=d.sampler,
        help="default: the model's own (ddim for SD, euler for SD3 / FLUX)",
    )
    p.add_argument("--negative-prompt", default=d.negative_prompt)
    p.add_argument("--no-rare-token", action="store_true", help="do not prepend the rare token")
    p.add_argument("--prompt-guidance", metavar="BASE_PROMPT", default=d.prompt_guidance)
    p.add_argument("--mask", help="PNG, white = may change (in-painting)")
    p.add_argument(
        "--interpolate",
        action=argparse.BooleanOptionalAction,
        default=d.interpolate,
        help="pixel interpolation toward the original (§3.4)",
    )
    p.add_argument("--interp-window", type=int, default=d.interp_window)
    p.add_argument("--interp-threshold", type=float, default=d.interp_threshold)
    p.add_argument("--lora-scale", type=float, default=d.lora_scale, help="LoRA tunes: 0..1")
    p.add_argument("--method", choices=EDIT_METHODS, default=d.method)
    # SINE's paper symbols K and v stay as aliases (--K, --v)
    p.add_argument(
        "--sine-until-t",
        "--K",
        dest="sine_K",
        type=int,
        default=d.sine_K,
        metavar="K",
        help="SINE: the tuned model guides the pretrained one while the timestep t > K "
        f"(0..1000 scale; 1000 = never); below, plain CFG on the pretrained model ({d.sine_K})",
    )
    p.add_argument(
        "--sine-pretrained-weight",
        "--v",
        dest="sine_v",
        type=float,
        default=d.sine_v,
        metavar="V",
        help="SINE: weight v of the PRETRAINED model's edit prediction (paper eq. 3, default "
        f"{d.sine_v:g}); the fine-tuned model gets 1-v. NB the official code's "
        "--model_based_guidance_scale and multi-model --beta weight the fine-tuned model "
        "instead (= 1-v)",
    )
    p.add_argument("--size", type=size, default=d.size, help="HxW output size")
    p.add_argument("--paste-back", action="store_true", help="paste into the original photo")
    p.add_argument("--eta", type=float, default=d.eta, help="DDIM eta")
    k = p.add_argument_group("what the edit keeps: the start and the automatic mask")
    k.add_argument(
        "--start",
        choices=STARTS,
        default=d.start,
        help="how samples reach t0: noise (SDEdit: the photo noised with the seed's noise) or "
        "inversion (the photo inverted under the tuned model: DDIM, Euler for SD3 / FLUX)",
    )
    k.add_argument(
        "--inversion-negative",
        action="store_true",
        help="with --start inversion: the tune prompt as CFG's unconditional prompt "
        "(negative-prompt inversion)",
    )
    k.add_argument(
        "--auto-mask",
        action="store_true",
        help="only where the tuned model sees the edit may change (DiffEdit); the mask is "
        "written beside each image as NAME.mask.png; with --mask: their intersection",
    )
    k.add_argument(
        "--auto-mask-rule",
        choices=AUTO_MASK_RULES,
        default=d.auto_mask_rule,
        help="how the difference map becomes the mask: diffedit (above a fraction of its "
        "clamped mean: local edits) or otsu (the cut between its two levels, any area: also "
        f"backgrounds) ({d.auto_mask_rule})",
    )
    knobs = (  # (the field, its type, what it does)
        ("auto_mask_threshold", float, "on the normalised difference map, 0..1; lower = larger"),
        ("auto_mask_dilate", int, "grow it by this many latent cells"),
        ("auto_mask_t0", float, "the noise level of the map"),
        ("auto_mask_draws", int, "noise draws averaged"),
    )
    for name, kind, what in knobs:
        value = getattr(d, name)
        flag = "--" + name.replace("_", "-")
        k.add_argument(flag, type=kind, default=value, help=f"{what} ({value:g})")
    k.add_argument(
        "--route",
        choices=ROUTES,
        default=d.route,
        help="auto: read the automatic mask's map first; a local edit (a peaked map) samples "
        "negative-prompt inversion inside the automatic mask from --route-t0 at --route-cfg, a "
        f"global one (background, style) samples as set ({d.route})",
    )
    route_knobs = (
        ("route_spread", "the map's spread (std / mean) at or above which an edit is local"),
        ("route_t0", "a local edit's start"),
        ("route_cfg", "a local edit's CFG, and the map's"),
    )
    for name, what in route_knobs:
        value = getattr(d, name)
        flag = "--" + name.replace("_", "-")
        k.add_argument(flag, type=float, default=value, help=f"{what} ({value:g})")
    sr = p.add_argument_group("cascade tunes (DeepFloyd IF): the super-resolution stage")
    sr.add_argument(
        "--sr-checkpoint",
        type=int,
        default=d.sr_checkpoint,
        help="its step (0 = the pretrained SR model; "
        "default: the base stage's step if saved, else the last)",
    )
    sr.add_argument(
        "--sr-t0",
        type=float,
        default=d.sr_t0,
        help=f"its SDEdit start from the base image at the output size ({d.sr_t0:g} = none)",
    )
    sr.add_argument(
        "--sr-cfg",
        type=float,
        default=d.sr_cfg,
        help="its guidance weight (default: the SR model's, IF 4)",
    )
    sr.add_argument(
        "--sr-steps",
        type=int,
        default=d.sr_steps,
        help="its steps (default: the SR model's, IF 50)",
    )
    sr.add_argument(
        "--sr-noise-level",
        type=int,
        default=d.sr_noise_level,
        help=f"noise augmentation of the base stage's output ({d.sr_noise_level})",
    )
    x4 = p.add_argument_group("stage III: an x4 upscaler on the output (untuned)")
    x4.add_argument(
        "--upscaler",
        default=d.upscaler,
        help="a StableDiffusionUpscalePipeline (hub id or folder), "
        "e.g. stabilityai/stable-diffusion-x4-upscaler",
    )
    x4.add_argument(
        "--upscale-steps", type=int, default=d.upscale_steps, help=f"({d.upscale_steps})"
    )
    x4.add_argument(
        "--upscale-noise-level",
        type=int,
        default=d.upscale_noise_level,
        help=f"({d.upscale_noise_level}, as IF's docs)",
    )
    p.add_argument("--vae", help="another VAE (folder or .safetensors); default: the tune's")
    p.add_argument(
        "--offload",
        action="store_true",
        help="keep the text encoders and VAE on the CPU between uses (small GPUs)",
    )


def add_export_parser(sub) -> None:
    """`unitune export`'s arguments (ExportConfig's defaults)."""
    x = sub.add_parser(
        "export",
        help="a tune's checkpoint for other tools: diffusers, A1111/ComfyUI, merged models",
    )
    x.add_argument("tune")
    x.add_argument(
        "--format",
        required=True,
        choices=EXPORT_FORMATS,
        help="diffusers-lora, kohya-lora, lora-from-full (--rank) or merged",
    )
    x.add_argument(
        "--out",
        required=True,
        help="a .safetensors file (merged: one file in the original layout) or a folder "
        "(diffusers-lora, lora-from-full: pytorch_lora_weights.safetensors + a model card; "
        "merged: a diffusers model folder)",
    )
    x.add_argument("--checkpoint", type=int, help="the step to export (default: the last saved)")
    x.add_argument("--rank", type=int, help="compress a full tune's delta to this LoRA rank by SVD")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    xd = ExportConfig()
    x.add_argument(
        "--dtype",
        choices=EXPORT_DTYPES,
        default=xd.dtype,
        help="merged: the weights' dtype (auto: the base model's own, e.g. fp16 -> fp16)",
    )
    x.add_argument(
        "--card",
        action="store_true",
        help="a file export: write a model card (README.md) beside it (folders always get one)",
    )
    x.add_argument(
        "--sample",
        dest="samples",
        action="append",
        metavar="PROMPT",
        help="repeatable: render this edit at the exported checkpoint for the card's widget",
    )
    x.add_argument(
        "--push-to-hub", metavar="REPO", help="upload the export and its card to this hub repo"
    )
    x.add_argument(
        "--public", action="store_true", help="--push-to-hub: create the repo public (private)"
    )
    add_common(x)


def export_config(args: argparse.Namespace) -> ExportConfig:
    """The ExportConfig of parsed `unitune export` arguments (validated by check_export)."""
    return ExportConfig(
        dtype=args.dtype,
        card=args.card,
        samples=tuple(args.samples or ()),
        push_to_hub=args.push_to_hub,
        private=not args.public,
    )
