"""`unitune export`: a tune's checkpoint in the formats other tools read (README "Export").

- ``diffusers-lora`` / ``kohya-lora``: a LoRA tune's adapter (or, with ``rank``, a full tune's
  delta compressed by SVD) as one .safetensors file (export/lora.py);
- ``lora-from-full``: the compressed full tune in diffusers' layout (export/extract.py);
- ``merged``: the pretrained model with the checkpoint folded in, as a diffusers folder, or
  (``--out x.safetensors``) one file in the family's original (A1111) layout.

Everything is checked first (checks.check_export); files are written to a temp and renamed,
folders built beside the target and swapped in by one rename (fileio.install_dir), so a failure
or a kill leaves the old export or the new one, never half of either; a rerun removes the temps
a killed export left (fileio.recover).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_export, tune_model_ref
from ..fileio import atomic_save_safetensors, install_dir, new_dir, recover, writing
from ..tunefolder import TuneFolder


@dataclass
class Exported:
    path: Path
    notes: list[str]  # what the user should know: what was dropped, the extraction's error


def provenance(folder: TuneFolder, step: int) -> dict[str, Any]:
    m, tc = folder.manifest, folder.tune_config()
    return {
        "tune": str(folder.path.resolve()),
        "checkpoint": step,
        "steps": tc.steps,
        "method": tc.method,
        "rare_token": tc.rare_token,
        "prompt": m.prompt,
        "base_model": m.model,
        "family": m.family,
        "learning_rate": tc.learning_rate(),
        "name": f"{folder.path.name}-{step}",
    }


def export(
    tune_dir: str | Path,
    fmt: str,
    out: str | Path,
    checkpoint: int | None = None,
    rank: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> Exported:
    recover(out)  # a killed export's temps beside --out (and a half-done --overwrite)
    plan = check_export(tune_dir, fmt, out, checkpoint, rank, overwrite)
    out = Path(out)
    with writing(out, "create the folder of"):
        out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "merged":
        return _merged(plan, out, device)
    return _lora(plan, fmt, out, rank)


def _lora(plan, fmt: str, out: Path, rank: int | None) -> Exported:
    from ..backbones import family_of, kohya_version, probe
    from .extract import extract_lora
    from .lora import kohya_metadata, write_diffusers, write_kohya

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
            f"rank {rank}: the SVD cut {ex.truncation_energy:.2%} "
            "of the covered layers' delta energy"
        )
        if ex.dropped:
            notes.append(
                f"{len(ex.dropped)} bias and normalisation tensors have no LoRA form "
                f"and stay pretrained ({ex.dropped_energy:.2%} of the delta's energy)"
            )
    extra = {"unitune": json.dumps(prov)}
    if fmt == "kohya-lora":
        spec = probe(tune_model_ref(folder))
        version, v2 = kohya_version(spec)
        kmeta = kohya_metadata(prov, config, version, folder.manifest.resolution)
        kmeta["ss_v2"] = str(v2)
        write_kohya(out, lora, config, {**kmeta, **extra})
    else:
        import diffusers

        cls = getattr(diffusers, family_of(plan.family).pipelines[0])
        write_diffusers(out, lora, config, cls, extra)
    return Exported(out, notes)


def _merged(plan, out: Path, device: str) -> Exported:
    from ..backbones import load_model
    from ..state import state_of

    folder = plan.folder
    bb = load_model(tune_model_ref(folder), device, vae=folder.manifest.vae)
    module = state_of(bb).merged(folder, plan.step)
    meta = {"unitune": json.dumps(provenance(folder, plan.step))}
    if plan.single_file:
        atomic_save_safetensors(bb.original_layout(module), out, meta)
        return Exported(out, [])
    tmp = new_dir(out)  # built beside --out, then swapped in: the old export or the new, whole
    try:
        with writing(out):
            bb.to_pipeline(module).save_pretrained(tmp, safe_serialization=True)
            (tmp / "unitune_export.json").write_text(meta["unitune"] + "\n")
        install_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out, [])
