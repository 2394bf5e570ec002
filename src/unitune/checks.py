"""Everything about a command that can be checked before a model loads: settings, the image, the
output folder, the model reference and family, a tune folder (manifest, checkpoints, images,
mask) and ``--guide`` specs. Torch-free, so a bad argument costs a fraction of a second and one
line on stderr; the library calls the same checks, so its errors are the CLI's."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from .backbones import SHORT_NAMES, ModelSpec, check_cascade, check_vae, probe
from .config import (
    BIG,
    Acceleration,
    EditConfig,
    GridConfig,
    TuneConfig,
    WorkLimits,
    check_prompt,
    show_value,
)
from .config_checks import plain_int
from .errors import UserError, reason
from .guidespec import check_guides
from .images import image_sha256, load_image, mask_image
from .manifest import check_manifest_shape as check_manifest_shape  # re-exported
from .manifest import settings_dict as settings_dict  # re-exported
from .tunefolder import MANIFEST, SR_DIR, TuneFolder, is_cascade


@dataclass
class TunePlan:
    """What `tune` will do, decided before the model loads."""

    image: Image.Image  # the photo, upright RGB
    sha256: str  # image_sha256 of it
    spec: ModelSpec  # the model, recognised
    resume: TuneFolder | None  # an existing tune of the same image, settings and model
    clear: bool  # --overwrite on an existing tune folder: delete it once the model has loaded
    cfg: TuneConfig  # the settings with the model's defaults filled in (what runs and is recorded)


def check_out(path: str | Path, kind: str, flag: str = "--out") -> Path:
    """An output path the command can write: ``kind`` "folder" (an existing folder, or a new
    path) or "file" (an existing regular file, or a new path). Refuses, in one line, a file where
    a folder is needed and the reverse, a device / FIFO / socket, and a place whose nearest
    existing parent is not a writable folder."""
    text = str(path)
    shown = show_value(text, 300)
    if not text or "\x00" in text:
        raise UserError(f"{flag} {shown} is not a path", f"pass a {kind} path")
    p = Path(text)
    st = _stat(p, flag, shown, kind)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            if kind == "file":
                raise UserError(f"{flag} {shown} is a folder", "pass a file name")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"{flag} {shown} is not writable", f"pass a {kind} you may write")
            return p
        if not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"{flag} {shown} is a device, FIFO or socket, not a {kind}", f"pass a {kind} path"
            )
        if kind == "folder":
            raise UserError(f"{flag} {shown} is a file", "pass a folder path")
    parent = p.absolute().parent
    while (pst := _stat(parent, flag, shown, kind)) is None and parent != parent.parent:
        parent = parent.parent
    where = show_value(str(parent), 300)
    if pst is None or not stat.S_ISDIR(pst.st_mode):
        raise UserError(
            f"{flag} {shown} is inside {where}, which is not a folder", f"pass another {kind}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {shown} is not writable (no write permission in {where})",
            f"pass a {kind} you may write",
        )
    return p


def _stat(p: Path, flag: str, shown: str, kind: str) -> os.stat_result | None:
    """os.stat of ``p``, None where nothing is there (or a file stands where a folder would)."""
    try:
        return os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        raise UserError(
            f"{flag} {shown} cannot be used ({reason(e)})", f"pass another {kind}"
        ) from None


def check_out_file(path: str | Path, suffix: str, flag: str = "--out") -> Path:
    """An output file ending in ``suffix`` (e.g. a grid's .png) that can be written."""
    p = Path(str(path))
    if p.suffix.lower() != suffix:
        raise UserError(
            f"{flag} {show_value(str(path))} must end in {suffix}", f"e.g. {flag} grid{suffix}"
        )
    return check_out(p, "file", flag)


def open_tune(path: str | Path) -> TuneFolder:
    """TuneFolder.open: whatever the folder holds, a one-line UserError or a folder whose typed
    manifest the code can read (manifest.Manifest.from_json checks every key)."""
    return TuneFolder.open(path)


def scheduler_table(spec: ModelSpec) -> int | None:
    """The training schedule's length (num_train_timesteps) of a model read from its scheduler
    config before anything loads, where it is on disk (a folder, or --model-config); else None."""
    from .backbones import config_value

    n = config_value(spec, "scheduler/scheduler_config.json", "num_train_timesteps")
    return n if plain_int(n) and n > 0 else None


def check_steps_table(steps: int | None, table: int | None, flag: str = "--steps") -> None:
    """Sampling steps beyond the model's training schedule (its scheduler has no more)."""
    if steps is not None and table is not None and steps > table:
        raise UserError(
            f"{flag} {steps} exceeds the model's {table}-step training schedule",
            f"pass at most {flag} {table}",
        )


def check_preset(cfg: TuneConfig, preset: str) -> None:
    """``preset``: the `--preset` the settings were built from (config.TUNE_PRESETS). SINE's
    template needs a class noun; a --base-prompt placing the rare token itself (a style or
    content-removal tune) is the whole prompt and also does."""
    from .config import TUNE_PRESETS
    from .config_checks import _choice

    _choice(preset, "--preset", tuple(sorted(TUNE_PRESETS)))
    if preset == "sine" and not cfg.class_noun and cfg.prompt() != cfg.base_prompt:
        raise UserError(
            f"--preset sine needs --class-noun (SINE tunes on 'a photo of a {cfg.rare_token} "
            "<class noun>')",
            "pass e.g. --class-noun dog (or --base-prompt with a full prompt that contains "
            f"{cfg.rare_token!r})",
        )


def check_best_of(
    best_of: int,
    *,
    params: bool = False,
    tune_dir: str | Path | None = None,
    sweeping: bool = False,
    balance: float = 1.0,
    route: str = "off",
    limits: WorkLimits = WorkLimits(),
) -> None:
    """`edit --best-of N`: N candidates (seeds, at most limits.max_seeds), not with --params, a
    cascade tune nor --route auto; --sweep-*, --keep-all and --balance only with it."""
    from .config import RankConfig
    from .config_checks import _finite, _int

    if plain_int(best_of) and best_of < 0:
        raise UserError(f"--best-of must be >= 1, got {best_of}", "e.g. --best-of 8")
    if best_of:
        _int(best_of, "--best-of", 1, limits.max_seeds, "e.g. --best-of 8", "max_seeds")
    if best_of and params:
        raise UserError("--best-of samples new candidates; --params reproduces one", "drop one")
    if best_of and route == "auto":
        raise UserError(
            "--route auto does not combine with --best-of: a routed local edit starts from the "
            "photo's inversion, so every candidate is the same image",
            "drop --best-of, or --route",
        )
    if best_of and tune_dir is not None and is_cascade(tune_dir):  # its judge: one model, one size
        raise UserError(
            "--best-of does not rank a cascade tune's edits (DeepFloyd IF)",
            "drop --best-of; compare seeds with unitune grid",
        )
    if (sweeping or balance != RankConfig.balance) and not best_of:
        raise UserError(
            "--sweep-*, --balance and --keep-all only apply with --best-of N", "add --best-of 4"
        )
    if not (_finite(balance) and balance >= 0):
        raise UserError(f"--balance must be >= 0, got {show_value(balance)}", "e.g. --balance 1")


def check_fidelity(fidelity: float, explicit: list[str], params: bool = False) -> None:
    """--fidelity sets the checkpoint, t0 and CFG itself: not with those flags nor --params."""
    from .config_checks import _real

    if explicit or params:
        what = ", ".join(explicit) or "--params"
        raise UserError(
            f"--fidelity sets the checkpoint, t0 and CFG itself; {what} given too",
            "pass either --fidelity or those flags",
        )
    _real(fidelity, "--fidelity", "0 = most expressive, 1 = most faithful", ge=0, le=1)


def check_tune(
    image: str | Path,
    out: str | Path,
    cfg: TuneConfig,
    model: str,
    model_config: str | None = None,
    overwrite: bool = False,
    vae: str | None = None,
    *,
    preset: str | None = None,
    limits: WorkLimits = WorkLimits(),
) -> TunePlan:
    """Check a tune: its settings within ``limits`` and the needs of the ``preset`` they were
    built from (check_preset; None: none named), the VAE, the output folder (writable, and a new,
    empty, or resumable tune folder), the image and the model."""
    cfg.validate(limits=limits)
    if preset is not None:
        check_preset(cfg, preset)
    check_vae(vae)
    out = check_out(out, "folder")
    img = load_image(image)
    sha = image_sha256(img)
    spec = probe(model, model_config)
    cfg = cfg.for_model(spec.family.defaults)
    cfg.validate(limits=limits)  # the method's default steps within the limits too
    sr_model = check_cascade(spec, cfg.cascade, cfg.sr_model)
    cfg = replace(cfg, cascade=sr_model is not None, sr_model=sr_model)  # recorded resolved
    if sr_model and cfg.patches:
        raise UserError(
            "--patches does not combine with a cascade tune "
            "(the SR stage has no crops of its input)",
            "add --no-cascade, or drop --patches",
        )
    resume, clear = None, False
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {str(out)!r} is a file", "pass a folder path")
        is_tune = (out / MANIFEST).is_file()
        if not is_tune and any(out.iterdir()):
            raise UserError(
                f"--out {str(out)!r} exists and is not a tune folder",
                "pass a new or empty folder (it is never deleted)",
            )
        if is_tune and overwrite:
            clear = True
        elif is_tune:
            resume = open_tune(out)
            m = resume.manifest
            old, new = settings_dict(m.settings), settings_dict(cfg)
            # the settings that differ, named (e.g. steps: a folder tuned to another length)
            fields = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            differ = [
                what
                for what, same in (
                    ("image", m.image.sha256 == sha),
                    (f"settings ({', '.join(fields[:4])})", not fields),
                    ("model", m.model == model),
                )
                if not same
            ]
            if differ:
                length = set(fields) <= {"steps", "save_at"} and len(differ) == 1
                saves = ",".join(map(str, old.get("save_at") or ()))
                again = (
                    f"resume with --steps {old.get('steps')} --save-at {saves}, " if length else ""
                )
                raise UserError(
                    f"{out} holds a tune of a different {' and '.join(differ)}",
                    again + "pass --overwrite to start fresh, or another --out",
                )
    return TunePlan(img, sha, spec, resume, clear, cfg)


def refuse_quantized_full(accel: Acceleration | None, method: str | None) -> None:
    """--quantize holds the base in int8: LoRA adapters train and apply on top of it, a full
    tune's weights or deltas cannot."""
    if accel is not None and accel.quantize and method == "full":
        raise UserError(
            "--quantize works with LoRA tunes only (a full tune changes the quantized weights)",
            "add --method lora, or drop --quantize",
        )


def tune_model_ref(folder: TuneFolder) -> str:
    """What to load for a tune: the embedded model by its short name (so a tune outlives the
    install path it was made under), anything else by the resolved reference it was tuned on."""
    m = folder.manifest
    return m.model if m.model in SHORT_NAMES else m.model_path


def check_edit_request(prompt: str | None, params: str | Path | None) -> None:
    """`unitune edit` samples a prompt, or replays an earlier output's sidecar (``params``,
    --params): one of them is needed."""
    if not params and not prompt:
        raise UserError("no edit prompt given", 'pass one, e.g. unitune edit TUNE "a red cat"')


def check_edit(
    tune_dir: str | Path,
    cfg: EditConfig,
    mask: str | Path | None = None,
    checkpoints: tuple[int, ...] = (),
    vae: str | None = None,
    *,
    prompt: str | None = None,
    t0s: tuple[float, ...] = (),
    limits: WorkLimits = WorkLimits(),
) -> TuneFolder:
    """Check an edit (and any extra ``checkpoints`` and SDEdit starts ``t0s`` it will visit, as
    `edit --best-of` sweeps) against a tune folder; the settings and ``prompt`` (when given)
    within ``limits``."""
    cfg.validate(limits=limits)
    if prompt is not None:
        check_prompt(prompt, limits)
    check_vae(vae)
    folder = open_tune(tune_dir)
    for c in (cfg.checkpoint, *checkpoints):
        if c is not None:
            folder.resolve_checkpoint(c)
    if cfg.checkpoint is None:
        folder.resolve_checkpoint(None)  # some checkpoint must exist
    for name in ("original.png", "base.png"):
        load_image(folder.path / name)
    if not (folder.path / "base_latents.safetensors").is_file():
        raise UserError(
            f"{folder.path} has no base_latents.safetensors", "re-run `unitune tune --overwrite`"
        )
    hw, k = _edit_size(folder, cfg)
    if k and (hw[0] % k or hw[1] % k):
        raise UserError(
            f"--size {hw[0]}x{hw[1]} is not a multiple of {k}", f"round it to a multiple of {k}"
        )
    if mask is not None:
        mask_image(mask, hw, folder.manifest.placement)
    check_guides(folder, cfg.guides)
    spec = probe(tune_model_ref(folder))
    check_steps_table(cfg.steps or spec.family.defaults.steps, scheduler_table(spec))
    if cfg.upscaler:
        from .upscale import check_upscaler

        check_upscaler(cfg.upscaler)
    for t0 in t0s:
        replace(cfg, t0=t0).validate(limits=limits)
    return folder


def _edit_size(folder: TuneFolder, cfg: EditConfig) -> tuple[tuple[int, int], int | None]:
    """(the output size, the multiple it must be of), checking the --sr-* flags: a cascade tune's
    output is its SR stage's, sized by the base stage's multiple x the SR factor."""
    res = folder.manifest.resolution
    k = folder.manifest.size_multiple  # absent in manifests written before it existed
    sr_path = folder.path / SR_DIR
    if not is_cascade(folder.path):
        if cfg.sr_checkpoint is not None or cfg.sr_t0 != 1.0:
            raise UserError(
                "--sr-checkpoint and --sr-t0 apply to cascade tunes (DeepFloyd IF)", "drop them"
            )
        return (tuple(cfg.size) if cfg.size else res), k
    sr = open_tune(sr_path)
    if cfg.sr_checkpoint is not None:
        sr.resolve_checkpoint(cfg.sr_checkpoint)
    out = sr.manifest.resolution
    return (tuple(cfg.size) if cfg.size else out), k * (out[0] // res[0])


def check_batch(jobs: str | Path, out: str | Path, workers: int) -> None:
    """`unitune batch`: the JSONL file exists, ``out`` is a folder it may write, and at least one
    local worker (each line is then checked alone: unitune.batch.parse_line)."""
    if not Path(jobs).is_file():
        raise UserError(f"{jobs} does not exist", "pass a JSONL file, one image per line")
    check_out(out, "folder")
    if not (plain_int(workers) and workers >= 1):
        raise UserError(f"--workers must be >= 1, got {show_value(workers)}", "e.g. --workers 2")


def check_grid(
    tune_dir: str | Path,
    cfg: EditConfig,
    grid: GridConfig,
    mask=None,
    vae: str | None = None,
    *,
    prompt: str | None = None,
    limits: WorkLimits = WorkLimits(),
) -> TuneFolder:
    grid.validate(limits=limits)
    if cfg.route == "auto":  # the grid's columns are t0s; a routed local edit sets its own
        raise UserError(
            "--route auto sets each edit's start itself: a grid of t0s does not combine with it",
            "drop --route, or run `unitune edit --route auto`",
        )
    kw = {"prompt": prompt, "limits": limits}
    if grid.rows == "sr_checkpoint":
        folder = check_edit(tune_dir, cfg, mask, (), vae, **kw)
        if not is_cascade(folder.path):
            raise UserError(
                "--rows sr_checkpoint needs a cascade tune (DeepFloyd IF)", "use --rows checkpoint"
            )
        sr = open_tune(folder.path / SR_DIR)
        full = grid.for_tune(sr.checkpoints)
        full.validate(limits=limits)  # the rows it will have: bounded like named ones
        for c in full.checkpoints:
            sr.resolve_checkpoint(c)
        return folder
    full = grid.for_tune(open_tune(tune_dir).checkpoints)
    full.validate(limits=limits)
    return check_edit(tune_dir, cfg, mask, tuple(full.checkpoints), vae, **kw)


@dataclass
class ExportPlan:
    """What `export` will do, decided before the model loads."""

    folder: TuneFolder
    step: int  # the checkpoint exported
    family: str  # backbones.Family.name of the tune's model
    lora_tune: bool  # the checkpoint is a LoRA adapter (else a full-tune delta)
    single_file: bool  # one .safetensors file (merged: the original layout), else a folder


def check_export(
    tune_dir: str | Path,
    fmt: str,
    out: str | Path,
    checkpoint: int | None = None,
    rank: int | None = None,
    overwrite: bool = False,
    cfg=None,
) -> ExportPlan:
    """Check an export: the format, what the tune's family and kind allow, the checkpoint, the
    rank and the output path (which is never half-written: the exporters write a temp and
    rename)."""
    from .backbones import family_of, single_file_refusal
    from .config import EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise UserError(
            f"unknown --format {show_value(fmt)}", f"use one of {', '.join(EXPORT_FORMATS)}"
        )
    if checkpoint is not None and not (plain_int(checkpoint) and checkpoint >= 0):
        raise UserError(
            f"--checkpoint must be a saved step, got {show_value(checkpoint)}",
            "e.g. --checkpoint 128",
        )
    folder = open_tune(tune_dir)
    m = folder.manifest
    if checkpoint == 0:
        raise UserError(
            "checkpoint 0 is the pretrained model: nothing was tuned",
            "pass a saved step, or leave --checkpoint out for the last",
        )
    step = folder.resolve_checkpoint(checkpoint)
    fam = family_of(m.family)
    lora_tune = m.settings.method == "lora"
    if m.settings.patches:
        raise UserError(
            f"{folder.path} is a SINE patch tune: its positional module exists in no other tool, "
            "and without it the weights sample the wrong model",
            "export a plain tune (without --patches), or edit this one with unitune",
        )
    if rank is not None and not (plain_int(rank) and 1 <= rank <= BIG):  # beyond a layer's: full
        raise UserError(f"--rank must be an integer >= 1, got {show_value(rank)}", "e.g. --rank 32")
    if rank is not None and lora_tune:
        raise UserError("--rank compresses a full tune; this one is already a LoRA", "drop --rank")
    if fmt == "lora-from-full" and lora_tune:
        raise UserError(
            f"{folder.path} is already a LoRA tune",
            "export it with --format diffusers-lora or kohya-lora",
        )
    if fmt == "lora-from-full" and rank is None:
        raise UserError(
            "--format lora-from-full needs --rank",
            "e.g. --rank 32 (higher: closer to the full tune, larger file)",
        )
    if fmt in ("diffusers-lora", "kohya-lora") and not lora_tune and rank is None:
        raise UserError(
            f"{folder.path} is a full tune; --format {fmt} writes a LoRA",
            "add --rank R to compress it by SVD (as --format lora-from-full), "
            "or use --format merged",
        )
    if fmt == "kohya-lora" and fam.kohya is None:
        raise UserError(
            f"--format kohya-lora has no layout for {fam.label}", "use --format diffusers-lora"
        )
    if cfg is not None:
        cfg.validate()
    out = Path(out)
    single = out.suffix.lower() == ".safetensors"
    if fmt == "kohya-lora" and not single:
        raise UserError(
            f"--out {str(out)!r}: a kohya LoRA is one .safetensors file",
            "e.g. --out cat-lora.safetensors",
        )
    check_out(out, "file" if single else "folder")
    if out.exists() and not overwrite:
        raise UserError(
            f"--out {str(out)!r} exists", "pass --overwrite to replace it, or another --out"
        )
    card = out.parent / "README.md"
    if single and cfg is not None and cfg.writes_card and card.exists() and not overwrite:
        raise UserError(
            f"--card would replace {card}", "pass --overwrite, or put --out in another folder"
        )
    spec = probe(tune_model_ref(folder))
    refusal = single_file_refusal(spec) if fmt == "merged" and single else None
    if refusal:
        raise UserError(refusal, "pass a folder as --out: a diffusers model folder")
    return ExportPlan(folder, step, fam.name, lora_tune, single)
