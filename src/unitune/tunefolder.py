"""The tune folder: manifest + base image/latents + checkpoints, each appearing whole or not at all.

Layout::

    manifest.json                    model ref, image hash, all settings, versions, losses
    original.png / base.png          the user's image (EXIF-rotated, RGB) / fitted to the model
    base_latents.safetensors         scaled VAE latents of base.png (posterior mean)
    checkpoints/step-000016.safetensors   weights at step 16 (LoRA or fp16 delta, see below)
    checkpoints/resume.safetensors   exact fp32 training state of the latest checkpoint
                                     (weights, optimizer, RNG); removed once the run completes

Crash safety (issue #31; fileio): a new folder is built beside its path with its base files and
manifest and renamed in (``TuneFolder.create``), so a folder with a manifest is always complete.
A checkpoint file is written (temp, fsync, rename) before its manifest record, which holds the
file's size and sha256: what a record vouches for is verified (``problem``) by a tune rerun and
by ``resolve_checkpoint`` before any model loads. The resume file is the authority on where a
rerun continues: its step, the loss history up to it and a digest of its tensors.
"""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import TuneConfig
from .errors import UnituneWarning, UserError, reason
from .fileio import (
    atomic_save_safetensors,
    atomic_write_json,
    file_sha256,
    install_dir,
    new_dir,
    writing,
)
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, CheckpointRecord, Manifest

if (
    TYPE_CHECKING
):  # torch and safetensors load lazily: the CLI checks a folder before importing them
    import torch


__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "CheckpointRecord", "Manifest", "TuneFolder"]


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


_VERIFIED: set[tuple] = set()  # checkpoint files whose digest matched (path, step, size, mtime)


def ckpt_name(step: int) -> str:
    return f"checkpoints/step-{step:06d}.safetensors"


@dataclass
class TuneFolder:
    """A tune folder and its manifest; the one writer of both (see the module docstring)."""

    path: Path
    manifest: Manifest

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
            data = json.loads(mf.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not JSON
            raise UserError(
                f"{mf} is unreadable ({reason(e)})", "re-run `unitune tune --overwrite`"
            ) from None
        return cls(p, Manifest.from_json(data, mf))

    @classmethod
    def create(
        cls,
        path: str | Path,
        manifest: Manifest,
        write_files: Callable[[Path], None] | None = None,
    ) -> TuneFolder:
        """A new tune folder, built in a hidden folder beside ``path`` (``write_files(tmp)`` writes
        the base files there, then the manifest) and moved in by one rename, replacing what is
        at ``path``: a kill at any moment leaves the old folder or this complete one."""
        p = Path(path)
        tmp = new_dir(p)
        try:
            with writing(p):
                (tmp / "checkpoints").mkdir()
                if write_files is not None:
                    write_files(tmp)
                (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
            install_dir(tmp, p)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(p, manifest)

    def tune_config(self) -> TuneConfig:
        """The settings the tune was made with."""
        return self.manifest.settings

    def update(self, **changes: Any) -> None:
        """Change manifest fields (``Manifest``'s names) and write it, atomically."""
        self.manifest = replace(self.manifest, **changes)
        self.save_manifest()

    def save_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest.to_json())

    # --- checkpoints -------------------------------------------------------------------------
    # A checkpoint's manifest record holds its file's size and sha256: the file is written
    # first, then the record, so a record vouches for a complete file. ``checkpoints`` checks
    # sizes (a stat); ``resolve_checkpoint`` and ``damaged(digest=True)`` check digests too.
    def problem(self, step: int, digest: bool = True) -> str | None:
        """What is wrong with checkpoint ``step``'s file (None: it is as recorded)."""
        rec = self.manifest.checkpoints.get(step)
        if rec is None:
            return "not recorded"
        f = self.path / ckpt_name(step)
        try:
            st = f.stat()
        except OSError:
            return "its file is missing"
        if rec.size is not None and st.st_size != rec.size:
            return f"its file has {st.st_size} bytes, {rec.size} were written"
        if digest and rec.sha256 is not None:
            key = (str(f.resolve()), step, st.st_size, st.st_mtime_ns, rec.sha256)
            if key not in _VERIFIED:
                if file_sha256(f) != rec.sha256:
                    return "its file's sha256 differs from the one written"
                _VERIFIED.add(key)
        return None

    def damaged(self, digest: bool = True) -> list[int]:
        """Recorded checkpoints whose file is missing or differs from what was written."""
        steps = sorted(self.manifest.checkpoints)
        return [s for s in steps if self.problem(s, digest) is not None]

    @property
    def checkpoints(self) -> list[int]:
        """Saved checkpoint steps whose file exists with its recorded size, ascending (step 0 =
        the pretrained model)."""
        steps = self.manifest.checkpoints
        return sorted(s for s in steps if self.problem(s, digest=False) is None)

    def resolve_checkpoint(self, step: int | None) -> int:
        """The checkpoint to use (None: the last saved), verified against its record (size and
        sha256) or a UserError naming what is wrong."""
        recorded = sorted(self.manifest.checkpoints)
        if step is None:
            if not recorded:
                raise UserError(f"{self.path} has no checkpoints yet", "run `unitune tune` on it")
            step = recorded[-1]
        if step == 0:
            return 0  # the pretrained model itself
        if step not in recorded:
            have = ", ".join(map(str, self.checkpoints)) or "none"
            raise UserError(
                f"checkpoint {step} is not in {self.path} (saved: {have})",
                "pick one of the saved steps, or 0 for the pretrained model",
            )
        why = self.problem(step)
        if why is not None:
            raise UserError(
                f"checkpoint {step} of {self.path} is damaged ({why})",
                "re-run the same `unitune tune` command on this folder: it re-trains it",
            )
        return step

    def save_checkpoint(
        self,
        step: int,
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        loss: float | None = None,
        seconds: float | None = None,
        loss_history: tuple[float, ...] | None = None,
    ) -> None:
        """Write checkpoint ``step``'s file, then its record (and ``loss_history`` up to it)."""
        name = ckpt_name(step)
        f = atomic_save_safetensors(tensors, self.path / name, {"unitune": json.dumps(meta)})
        rec = CheckpointRecord(name, f.stat().st_size, file_sha256(f), loss, seconds)
        changes: dict[str, Any] = {"checkpoints": {**self.manifest.checkpoints, step: rec}}
        if loss_history is not None:
            changes["loss_history"] = tuple(loss_history)
        self.update(**changes)

    def load_checkpoint(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors.torch import load_file

        f, meta = self.checkpoint_file(step)
        try:
            return load_file(str(f)), meta
        except Exception as e:  # noqa: BLE001
            raise self._unreadable(f, e) from e

    def checkpoint_file(self, step: int) -> tuple[Path, dict[str, Any]]:
        """(the checkpoint's file, its unitune metadata), for readers that take it a tensor at a
        time (export's merge) instead of whole."""
        from safetensors import safe_open

        f = self.path / ckpt_name(step)
        try:
            with safe_open(str(f), framework="pt") as sf:
                return f, json.loads((sf.metadata() or {}).get("unitune", "{}"))
        except Exception as e:  # noqa: BLE001
            raise self._unreadable(f, e) from e

    @staticmethod
    def _unreadable(f: Path, e: Exception) -> UserError:
        return UserError(
            f"checkpoint {f} is unreadable ({type(e).__name__})",
            "re-run `unitune tune --overwrite` on this folder",
        )

    def base_latents(self) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.path / "base_latents.safetensors"))["latents"]


RESUME = Path("checkpoints") / "resume.safetensors"  # the exact training state, under a tune folder
SR_DIR = "sr"  # a cascade tune's super-resolution stage: a tune folder inside the base stage's


def is_cascade(tune_dir: str | Path) -> bool:
    """A cascade tune: its SR stage's tune folder is inside it."""
    return (Path(tune_dir) / SR_DIR / MANIFEST).is_file()


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes (the resume state's own check)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_resume_state(
    folder: TuneFolder,
    step: int,
    tensors: dict[str, torch.Tensor],
    scalars: dict,
    history: list[float],
) -> None:
    """The exact training state at ``step`` with the loss history up to it: the resume file is
    the authority on where a rerun continues and what it has recorded so far."""
    atomic_save_safetensors(
        tensors,
        folder.path / RESUME,
        {
            "step": str(step),
            "scalars": json.dumps(scalars),
            "history": json.dumps(history),
            "digest": _tensors_digest(tensors),
        },
    )


def load_resume_state(
    folder: TuneFolder,
) -> tuple[int, dict[str, torch.Tensor], dict, list[float] | None] | None:
    """(step, tensors, scalars, loss history up to step) of the resume file, or None when there
    is none or it does not verify (then the run starts over; warned)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    f = folder.path / RESUME
    if not f.is_file():
        return None
    try:
        with safe_open(str(f), framework="pt") as sf:
            md = sf.metadata() or {}
        tensors = load_file(str(f))
        step = int(md["step"])
        if "digest" in md and _tensors_digest(tensors) != md["digest"]:
            raise ValueError("digest mismatch")
        hist = json.loads(md["history"]) if "history" in md else None
        if hist is not None and len(hist) != step:
            raise ValueError("history length")
        return step, tensors, json.loads(md.get("scalars", "{}")), hist
    except Exception as e:  # noqa: BLE001 - any damage: not trusted
        warnings.warn(
            f"{f} is damaged ({type(e).__name__}: {e}); the tune restarts from step 0",
            UnituneWarning,
            stacklevel=2,
        )
        return None
