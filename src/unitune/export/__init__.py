"""`unitune export`: a tune's checkpoint in the formats other tools read (README "Export").

- ``diffusers-lora``: a LoRA tune's adapter (or, with ``rank``, a full tune's delta compressed by
  SVD) as ``pytorch_lora_weights.safetensors`` in a folder (diffusers' convention: the name
  ``load_lora_weights(folder)`` and InvokeAI's probe look for) or, for ``--out x.safetensors``,
  as that one file. Its keys are what the tools' own loaders read (export/lora.py): for SD 1.x/2.x
  and SDXL kohya's layout (diffusers' loader converts it itself; ComfyUI maps every key of it;
  InvokeAI tells an SD LoRA's base only from it), for SD3 / FLUX / IF diffusers' own
  ``transformer.`` layout (which ComfyUI maps);
- ``kohya-lora``: the same keys in one file with kohya's ``ss_*`` training metadata;
- ``lora-from-full``: a full tune compressed to a LoRA (export/extract.py), laid out as
  ``diffusers-lora``;
- ``merged``: the pretrained model with the checkpoint folded in (export/merge.py), as a
  diffusers folder or (``--out x.safetensors``) one file in the family's original (A1111) layout,
  in the model's own dtype, written tensor by tensor (export/stream.py).

Every LoRA and single file carries the SAI model spec keys (export/modelspec.py); folders get a
model card (export/card.py), files one with ``--card``; ``--push-to-hub`` uploads (export/hub.py).
Nothing written names the user's folders (public.py). Everything is checked first
(checks.check_export); files are written to a temp and renamed, folders built beside the target
and swapped in by one rename (fileio.install_dir), so a failure or a kill leaves the old export or
the new one, never half of either; a rerun removes the temps a killed export left
(fileio.recover).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_export, tune_model_ref
from ..config_export import ExportConfig
from ..fileio import install_dir, new_dir, recover, writing
from ..public import public_name
from ..tunefolder import TuneFolder

LORA_FILE = "pytorch_lora_weights.safetensors"  # a LoRA folder's file (diffusers' default name)


@dataclass
class Exported:
    path: Path
    notes: list[str]  # what the user should know: what was dropped, the extraction's error
    files: list[Path] | None = None  # everything written (the weights, the card, its images)
    url: str | None = None  # --push-to-hub: the repo's address


def provenance(folder: TuneFolder, step: int) -> dict[str, Any]:
    """Where an export came from, as it may be shared: names, no local paths."""
    m, tc = folder.manifest, folder.tune_config()
    return {
        "tune": folder.path.resolve().name,
        "checkpoint": step,
        "steps": tc.steps,
        "method": tc.method,
        "rare_token": tc.rare_token,
        "prompt": m.prompt,
        "base_model": public_name(m.model),
        "family": m.family,
        "learning_rate": tc.learning_rate(),
        "resolution": list(m.resolution),
        "name": f"{folder.path.resolve().name}-{step}",
    }


def export(
    tune_dir: str | Path,
    fmt: str,
    out: str | Path,
    checkpoint: int | None = None,
    rank: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    cfg: ExportConfig = ExportConfig(),
) -> Exported:
    recover(out)  # a killed export's temps beside --out (and a half-done --overwrite)
    plan = check_export(tune_dir, fmt, out, checkpoint, rank, overwrite, cfg)
    out = Path(out)
    with writing(out, "create the folder of"):
        out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "merged":
        res = _merged(plan, out, device, cfg)
    else:
        res = _lora(plan, fmt, out, rank, cfg, device)
    if cfg.push_to_hub:
        from .hub import push

        res.url = push(cfg.push_to_hub, res.path, res.files or [res.path], cfg.private)
    return res


def _lora(plan, fmt: str, out: Path, rank: int | None, cfg: ExportConfig, device: str) -> Exported:
    from ..backbones import family_of, kohya_version, probe
    from .extract import extract_lora
    from .lora import kohya_metadata, write_diffusers, write_kohya
    from .modelspec import modelspec

    folder, notes = plan.folder, []
    tensors, meta = folder.load_checkpoint(plan.step)
    prov = provenance(folder, plan.step)
    if plan.lora_tune:
        lora = {k: v for k, v in tensors.items() if not k.startswith("pos.")}
        config = meta["lora_config"]
    else:
        ex = extract_lora(tensors, rank)
        lora, config = ex.tensors, ex.config
        prov["extracted_rank"] = rank
        notes.append(
            f"rank {rank}: the truncated SVD left {ex.truncation_energy:.2%} "
            "of the covered layers' delta energy out"
        )
        if ex.dropped:
            notes.append(
                f"{len(ex.dropped)} bias and normalisation tensors have no LoRA form "
                f"and stay pretrained ({ex.dropped_energy:.2%} of the delta's energy)"
            )
    del tensors
    spec = probe(tune_model_ref(folder))
    fam = family_of(plan.family)
    file = out if plan.single_file else None
    stage = None if file else new_dir(out)  # a folder: built beside --out, then swapped in
    try:
        target = file or stage / LORA_FILE
        extra = {**modelspec(spec, prov, lora=True), "unitune": json.dumps(prov)}
        if fam.kohya is not None:  # SD 1.x/2.x, SDXL: kohya's keys (what every tool reads)
            version, v2 = kohya_version(spec)
            kmeta = kohya_metadata(prov, config, version, folder.manifest.resolution)
            kmeta["ss_v2"] = str(v2)
            write_kohya(target, lora, config, {**kmeta, **extra})
        else:  # SD3, FLUX, IF: diffusers' own writer, transformer.* keys (ComfyUI maps them)
            import diffusers

            cls = getattr(diffusers, fam.pipelines[0])
            write_diffusers(target, lora, config, cls, extra)
        files = [target]
        if stage is not None or cfg.writes_card:
            from .card import write_card

            files += write_card(stage or out.parent, plan, prov, fmt, target.name, cfg, device)
        if stage is not None:
            install_dir(stage, out)
            files = [out / f.relative_to(stage) for f in files]
        return Exported(out, notes, files)
    finally:
        if stage is not None and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _merged(plan, out: Path, device: str, cfg: ExportConfig) -> Exported:
    from ..backbones import load_model, probe
    from .merge import merge_into, output_dtype
    from .modelspec import modelspec
    from .stream import save_streaming

    folder, notes = plan.folder, []
    ref = tune_model_ref(folder)
    dtype, note = output_dtype(ref, cfg.dtype)
    notes += [note] if note else []
    # one copy of the model, in the file's dtype; the checkpoint folded into it in place
    bb = load_model(ref, device, dtype=dtype, vae=folder.manifest.vae)
    merge_into(bb.module, *folder.checkpoint_file(plan.step))
    prov = provenance(folder, plan.step)
    prov["dtype"] = str(dtype).removeprefix("torch.")
    meta = {**modelspec(probe(ref), prov, lora=False), "unitune": json.dumps(prov)}
    if plan.single_file:
        with writing(out):
            save_streaming(bb.original_layout(bb.module), out, meta, dtype)
        del bb  # before a card's sample edits load the tune for themselves
        files = [out]
        if cfg.writes_card:
            from .card import write_card

            files += write_card(out.parent, plan, prov, "merged", out.name, cfg, device)
        return Exported(out, notes, files)
    tmp = new_dir(out)  # built beside --out, then swapped in: the old export or the new, whole
    try:
        with writing(out):
            bb.to_pipeline(bb.module).save_pretrained(tmp, safe_serialization=True)
            (tmp / "unitune_export.json").write_text(meta["unitune"] + "\n")
        del bb
        from .card import write_card

        written = write_card(tmp, plan, prov, "merged", None, cfg, device)
        install_dir(tmp, out)
        return Exported(out, notes, [out, *(out / f.relative_to(tmp) for f in written)])
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
