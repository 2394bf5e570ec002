"""Writing edits to disk: PNGs with A1111 `parameters` + JSON sidecars, and the figure-10 grid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from .config import SINGLE_STEP, EditConfig, GridConfig
from .edit import Editor, a1111_params, output_name
from .fileio import atomic_write
from .grid import contact_sheet
from .pngmeta import save_png
from .public import public_params


def mask_path(path: Path) -> Path:
    """Where an edit's automatic mask is written: beside it, NAME.mask.png."""
    return path.with_name(path.stem + ".mask.png")


def save_edit(
    img: Image.Image,
    params: dict[str, Any],
    out_dir: Path,
    mask: Image.Image | None = None,
    metadata: bool = True,
) -> Path:
    """Write one edit; the PNG's chunks hold the A1111 text and the params with names for paths
    (public.py: a shared image says nothing of the user's folders), the sidecar the full typed
    params. ``metadata`` False (--no-metadata): the PNG has no chunks; the sidecar stays, for
    ``--params``. ``mask`` (EditResult.mask, --auto-mask): written first beside it as
    NAME.mask.png (its parameters reproduce it: ``--params`` recomputes the same mask)."""
    path = out_dir / output_name(params["edit_prompt"], params)
    if mask is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(mask_path(path), lambda tmp: mask.save(tmp, format="PNG"))
    shared = public_params(params)
    return save_png(
        img, path, params, text_params=a1111_params(shared), shared=shared, metadata=metadata
    )


def render_grid(
    editor: Editor,
    prompt: str,
    cfg: EditConfig,
    grid: GridConfig,
    out: Path,
    mask: str | None = None,
    progress: bool = True,
    cells: Path | None = None,
) -> list[Path]:
    """Rows = checkpoints (or, with grid.rows "sr_checkpoint", a cascade's SR checkpoints at the
    edit's own checkpoint), columns = t0 x seeds. With a single-step sampler a row is ONE batch
    (every t0 and seed: sampling.sample with one start per sample), else each cell's seeds are
    one batch. Returns the sheet's path, then with ``cells`` (a folder) every cell saved there as
    its own edit (PNG with its parameters + sidecar), row by row."""
    cfg = editor.resolve(cfg)  # the model's sampler decides whether a row is one batch
    rows: list[list[Image.Image | None]] = []
    row_labels: list[str] = []
    saved: list[Path] = []
    sr_rows = grid.rows == "sr_checkpoint"
    # no checkpoints named: every one the tune (or its SR stage) saved
    cks = grid.for_tune((editor.sr.folder if sr_rows else editor.folder).checkpoints).checkpoints
    jobs = [(c, t0) for c in cks for t0 in grid.t0s]
    bar = tqdm(total=len(jobs), desc="grid", disable=not progress)
    for c in cks:
        # errors early, naming the saved steps
        (editor.sr.folder if sr_rows else editor.folder).resolve_checkpoint(c)
        row: list[Image.Image | None] = []
        at_c = replace(cfg, **{grid.rows: c}, seeds=grid.seeds)
        if cfg.sampler in SINGLE_STEP:
            results = [editor.edit(prompt, at_c, mask, progress=False, t0s=grid.t0s)]
            bar.update(len(grid.t0s))
        else:
            results = []
            for t0 in grid.t0s:
                results.append(editor.edit(prompt, replace(at_c, t0=t0), mask, progress=False))
                bar.update(1)
        for res in results:
            row.extend(res.images)
            if cells is not None:
                saved += [
                    save_edit(im, p, cells, res.mask) for im, p in zip(res.images, res.params)
                ]
        rows.append(row)
        row_labels.append(f"{c} steps" if c else "pretrained")
    bar.close()
    col_labels = [
        f"t0={t0:g}" + (f" s{s}" if len(grid.seeds) > 1 else "")
        for t0 in grid.t0s
        for s in grid.seeds
    ]
    title = f'"{editor.full_prompt(prompt, cfg)}"  CFG {cfg.cfg:g}, {cfg.steps} {cfg.sampler} steps'
    if cfg.prompt_guidance:
        title += f', prompt guidance "{editor.full_prompt(cfg.prompt_guidance, cfg)}"'
    sheet = contact_sheet(
        rows,
        row_labels,
        col_labels,
        row_title="SR checkpoint" if sr_rows else "checkpoint",
        col_title="SDEdit start t0",
        title=title,
        cell_size=grid.cell,
    )
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return [out, *saved]
