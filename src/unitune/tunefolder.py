"""The tune folder: manifest + base image/latents + checkpoints, all written atomically.

Layout::

    manifest.json                    model ref, image hash, all settings, versions, losses
    original.png / base.png          the user's image (EXIF-rotated, RGB) / fitted to the model
    base_latents.safetensors         scaled VAE latents of base.png (posterior mean)
    checkpoints/step-000016.safetensors   weights at step 16 (LoRA or fp16 delta, see below)
    checkpoints/resume.safetensors   exact fp32 training state of the latest checkpoint
                                     (weights, optimizer, RNG); removed once the run completes
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import TuneConfig
from .errors import UserError
from .fileio import atomic_save_safetensors, atomic_write_json

if (
    TYPE_CHECKING
):  # torch and safetensors load lazily: the CLI checks a folder before importing them
    import torch

FORMAT = "unitune-tune"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    out = {
        "unitune": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:  # pragma: no cover - peft is a dependency
        pass
    return out


def ckpt_name(step: int) -> str:
    return f"checkpoints/step-{step:06d}.safetensors"


@dataclass
class TuneFolder:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> TuneFolder:
        """Open an existing tune folder or raise a UserError saying what is wrong."""
        p = Path(path)
        if not p.exists():
            raise UserError(f"tune folder {str(p)!r} does not exist", "run `unitune tune` first")
        mf = p / MANIFEST
        if not p.is_dir() or not mf.is_file():
            raise UserError(
                f"{str(p)!r} is not a unitune tune folder (no {MANIFEST})",
                "pass the --out folder of a `unitune tune` run",
            )
        try:
            manifest = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{mf} is unreadable ({e})", "re-run `unitune tune --overwrite`") from e
        if manifest.get("format") != FORMAT:
            raise UserError(f"{mf} is not a unitune manifest", "pass a tune folder")
        return cls(p, manifest)

    @classmethod
    def create(cls, path: str | Path, manifest: dict[str, Any]) -> TuneFolder:
        p = Path(path)
        (p / "checkpoints").mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        tf = cls(p, manifest)
        tf.save_manifest()
        return tf

    def tune_config(self) -> TuneConfig:
        """The settings the tune was made with."""
        st = self.manifest["settings"]
        return TuneConfig(**{**st, "save_at": tuple(st["save_at"])})

    def save_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    # --- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoints(self) -> list[int]:
        """Saved checkpoint steps whose file exists, ascending (step 0 = the pretrained model)."""
        steps = [int(s) for s in self.manifest.get("checkpoints", {})]
        return sorted(s for s in steps if (self.path / ckpt_name(s)).is_file())

    def resolve_checkpoint(self, step: int | None) -> int:
        saved = self.checkpoints
        if step is None:
            if not saved:
                raise UserError(f"{self.path} has no checkpoints yet", "run `unitune tune` on it")
            return saved[-1]
        if step == 0:
            return 0  # the pretrained model itself
        if step not in saved:
            have = ", ".join(map(str, saved)) or "none"
            raise UserError(
                f"checkpoint {step} is not in {self.path} (saved: {have})",
                "pick one of the saved steps, or 0 for the pretrained model",
            )
        return step

    def save_checkpoint(
        self, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], record: dict
    ) -> None:
        name = ckpt_name(step)
        atomic_save_safetensors(tensors, self.path / name, {"unitune": json.dumps(meta)})
        self.manifest.setdefault("checkpoints", {})[str(step)] = {"file": name, **record}
        self.save_manifest()

    def load_checkpoint(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        f = self.path / ckpt_name(step)
        try:
            with safe_open(str(f), framework="pt") as sf:
                meta = json.loads((sf.metadata() or {}).get("unitune", "{}"))
            return load_file(str(f)), meta
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"checkpoint {f} is unreadable ({type(e).__name__})",
                "re-run `unitune tune --overwrite` on this folder",
            ) from e

    def base_latents(self) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.path / "base_latents.safetensors"))["latents"]


RESUME = Path("checkpoints") / "resume.safetensors"  # the exact training state, under a tune folder
SR_DIR = "sr"  # a cascade tune's super-resolution stage: a tune folder inside the base stage's


def is_cascade(tune_dir: str | Path) -> bool:
    """A cascade tune: its SR stage's tune folder is inside it."""
    return (Path(tune_dir) / SR_DIR / MANIFEST).is_file()


def save_resume_state(
    folder: TuneFolder, step: int, tensors: dict[str, torch.Tensor], scalars: dict
) -> None:
    atomic_save_safetensors(
        tensors,
        folder.path / RESUME,
        {"step": str(step), "scalars": json.dumps(scalars)},
    )


def load_resume_state(folder: TuneFolder) -> tuple[int, dict[str, torch.Tensor], dict] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    f = folder.path / RESUME
    if not f.is_file():
        return None
    with safe_open(str(f), framework="pt") as sf:
        md = sf.metadata() or {}
    return int(md["step"]), load_file(str(f)), json.loads(md.get("scalars", "{}"))
