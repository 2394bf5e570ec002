"""Everything about a command that can be checked before a model loads: settings, the image, the
output folder, the model reference and family, a tune folder (manifest, checkpoints, images,
mask) and ``--guide`` specs. Torch-free, so a bad argument costs a fraction of a second and one
line on stderr; the library calls the same checks, so its errors are the CLI's."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from .backbones import SHORT_NAMES, ModelSpec, check_cascade, check_vae, probe
from .config import Acceleration, EditConfig, GridConfig, TuneConfig
from .errors import UserError
from .guidespec import check_guides
from .images import Placement, image_sha256, load_image, mask_image
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


def settings_dict(cfg: TuneConfig) -> dict[str, Any]:
    """The settings as the manifest stores them (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def check_tune(
    image: str | Path,
    out: str | Path,
    cfg: TuneConfig,
    model: str,
    model_config: str | None = None,
    overwrite: bool = False,
    vae: str | None = None,
) -> TunePlan:
    cfg.validate()
    check_vae(vae)
    out = Path(out)
    img = load_image(image)
    sha = image_sha256(img)
    spec = probe(model, model_config)
    cfg = cfg.for_model(spec.family.defaults)
    sr_model = check_cascade(spec, cfg.cascade, cfg.sr_model)
    cfg = replace(cfg, cascade=sr_model is not None, sr_model=sr_model)  # recorded resolved
    if sr_model and cfg.patches:
        raise UserError("--patches does not combine with a cascade tune (the SR stage has no crops of its input)", "add --no-cascade, or drop --patches")  # fmt: skip
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
            resume = TuneFolder.open(out)
            m = resume.manifest
            differ = [what for what, same in (
                ("image", m["image"]["sha256"] == sha),
                ("settings", m["settings"] == settings_dict(cfg)),
                ("model", m["model"] == model)) if not same]  # fmt: skip
            if differ:
                raise UserError(
                    f"{out} holds a tune of a different {' and '.join(differ)}",
                    "pass --overwrite to start fresh, or another --out",
                )
    return TunePlan(img, sha, spec, resume, clear, cfg)


def refuse_quantized_full(accel: Acceleration | None, method: str | None) -> None:
    """--quantize holds the base in int8: LoRA adapters train and apply on top of it, a full
    tune's weights or deltas cannot."""
    if accel is not None and accel.quantize and method == "full":
        raise UserError("--quantize works with LoRA tunes only (a full tune changes the quantized weights)", "add --method lora, or drop --quantize")  # fmt: skip


def tune_model_ref(folder: TuneFolder) -> str:
    """What to load for a tune: the embedded model by its short name (so a tune outlives the
    install path it was made under), anything else by the resolved reference it was tuned on."""
    m = folder.manifest
    return m["model"] if m["model"] in SHORT_NAMES else m["model_path"]


def check_edit(
    tune_dir: str | Path,
    cfg: EditConfig,
    mask: str | Path | None = None,
    checkpoints: tuple[int, ...] = (),
    vae: str | None = None,
) -> TuneFolder:
    """Check an edit (and any extra ``checkpoints`` it will visit) against a tune folder."""
    cfg.validate()
    check_vae(vae)
    folder = TuneFolder.open(tune_dir)
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
        raise UserError(f"--size {hw[0]}x{hw[1]} is not a multiple of {k}", f"round it to a multiple of {k}")  # fmt: skip
    if mask is not None:
        mask_image(mask, hw, Placement.from_dict(folder.manifest["placement"]))
    check_guides(folder, cfg.guides)
    probe(tune_model_ref(folder))
    if cfg.upscaler:
        from .upscale import check_upscaler

        check_upscaler(cfg.upscaler)
    return folder


def _edit_size(folder: TuneFolder, cfg: EditConfig) -> tuple[tuple[int, int], int | None]:
    """(the output size, the multiple it must be of), checking the --sr-* flags: a cascade tune's
    output is its SR stage's, sized by the base stage's multiple x the SR factor."""
    res = tuple(folder.manifest["resolution"])
    k = folder.manifest.get("size_multiple")  # absent in manifests written before it existed
    sr_path = folder.path / SR_DIR
    if not is_cascade(folder.path):
        if cfg.sr_checkpoint is not None or cfg.sr_t0 != 1.0:
            raise UserError("--sr-checkpoint and --sr-t0 apply to cascade tunes (DeepFloyd IF)", "drop them")  # fmt: skip
        return (tuple(cfg.size) if cfg.size else res), k
    sr = TuneFolder.open(sr_path)
    if cfg.sr_checkpoint is not None:
        sr.resolve_checkpoint(cfg.sr_checkpoint)
    out = tuple(sr.manifest["resolution"])
    return (tuple(cfg.size) if cfg.size else out), k * (out[0] // res[0])


def check_grid(tune_dir: str | Path, cfg: EditConfig, grid: GridConfig, mask=None,
               vae: str | None = None) -> TuneFolder:  # fmt: skip
    grid.validate()
    if grid.rows == "sr_checkpoint":
        folder = check_edit(tune_dir, cfg, mask, (), vae)
        if not is_cascade(folder.path):
            raise UserError("--rows sr_checkpoint needs a cascade tune (DeepFloyd IF)", "use --rows checkpoint")  # fmt: skip
        for c in grid.checkpoints:
            TuneFolder.open(folder.path / SR_DIR).resolve_checkpoint(c)
        return folder
    return check_edit(tune_dir, cfg, mask, tuple(grid.checkpoints), vae)


@dataclass
class ExportPlan:
    """What `export` will do, decided before the model loads."""

    folder: TuneFolder
    step: int  # the checkpoint exported
    family: str  # backbones.Family.name of the tune's model
    lora_tune: bool  # the checkpoint is a LoRA adapter (else a full-tune delta)
    single_file: bool  # merged: one .safetensors in the original layout (else a diffusers folder)


def check_export(
    tune_dir: str | Path,
    fmt: str,
    out: str | Path,
    checkpoint: int | None = None,
    rank: int | None = None,
    overwrite: bool = False,
) -> ExportPlan:
    """Check an export: the format, what the tune's family and kind allow, the checkpoint, the
    rank and the output path (which is never half-written: the exporters write a temp and rename)."""
    from .backbones import family_of, single_file_refusal
    from .config import EXPORT_FORMATS, LORA_FORMATS

    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown --format {fmt!r}", f"use one of {', '.join(EXPORT_FORMATS)}")
    folder = TuneFolder.open(tune_dir)
    m = folder.manifest
    if checkpoint == 0:
        raise UserError("checkpoint 0 is the pretrained model: nothing was tuned", "pass a saved step, or leave --checkpoint out for the last")  # fmt: skip
    step = folder.resolve_checkpoint(checkpoint)
    fam = family_of(m.get("family"))
    lora_tune = m["settings"]["method"] == "lora"
    if m["settings"].get("patches"):
        raise UserError(
            f"{folder.path} is a SINE patch tune: its positional module exists in no other tool, and without it the weights sample the wrong model",  # fmt: skip
            "export a plain tune (without --patches), or edit this one with unitune",
        )
    if rank is not None and rank < 1:
        raise UserError(f"--rank must be >= 1, got {rank}", "e.g. --rank 32")
    if rank is not None and lora_tune:
        raise UserError("--rank compresses a full tune; this one is already a LoRA", "drop --rank")  # fmt: skip
    if fmt == "lora-from-full" and lora_tune:
        raise UserError(f"{folder.path} is already a LoRA tune", "export it with --format diffusers-lora or kohya-lora")  # fmt: skip
    if fmt == "lora-from-full" and rank is None:
        raise UserError("--format lora-from-full needs --rank", "e.g. --rank 32 (higher: closer to the full tune, larger file)")  # fmt: skip
    if fmt in ("diffusers-lora", "kohya-lora") and not lora_tune and rank is None:
        raise UserError(
            f"{folder.path} is a full tune; --format {fmt} writes a LoRA",
            "add --rank R to compress it by SVD (as --format lora-from-full), or use --format merged",  # fmt: skip
        )
    if fmt == "kohya-lora" and fam.kohya is None:
        raise UserError(f"--format kohya-lora has no layout for {fam.label}", "use --format diffusers-lora")  # fmt: skip
    out = Path(out)
    single = out.suffix.lower() == ".safetensors"
    if fmt in LORA_FORMATS and not single:
        raise UserError(f"--out {str(out)!r}: a LoRA is one .safetensors file", "e.g. --out cat-lora.safetensors")  # fmt: skip
    if out.exists() and not overwrite:
        raise UserError(f"--out {str(out)!r} exists", "pass --overwrite to replace it, or another --out")  # fmt: skip
    if out.exists() and out.is_dir() != (fmt == "merged" and not single):
        raise UserError(f"--out {str(out)!r} is a {'folder' if out.is_dir() else 'file'}", "pass another --out")  # fmt: skip
    spec = probe(tune_model_ref(folder))
    refusal = single_file_refusal(spec) if fmt == "merged" and single else None
    if refusal:
        raise UserError(refusal, "pass a folder as --out: a diffusers model folder")
    return ExportPlan(folder, step, fam.name, lora_tune, single)
