"""The UniTune paper's figure 10, from a benchmark run's kept samples: for a few scenes, one edit
sampled at every (fine-tuning checkpoint, SDEdit start t0) of the run.

Columns are checkpoints (0 = SDEdit on the pretrained model, no rare token, the paper's leftmost
column), rows are t0 (expressiveness grows going down), as in the paper. Each cell is one seed's
sample with a border in the oracle's verdict (green = success); blank cells were not sampled by
the preset. Built from WORK/<scene>/samples/*.png, so it costs no sampling.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from ..fileio import atomic_write
from ..grid import contact_sheet

VERDICT = {True: (40, 170, 60), False: (210, 50, 50)}  # border colour by the oracle's verdict


def _pick_cfg(records: list[dict]) -> float | None:
    """The CFG weight with the most (checkpoint, t0) cells among ``records`` (SDEdit and UniTune
    ones): the one that fills the grid best."""
    cells: dict[float, set] = {}
    for r in records:
        cells.setdefault(r["cfg"], set()).add((r["checkpoint"], r["t0"]))
    return max(cells, key=lambda w: (len(cells[w]), w == 7.5), default=None)


def figure10(
    records: list[dict],
    work: str | Path,
    out: str | Path,
    n_scenes: int = 3,
    kinds: tuple[str, ...] | None = None,
    cell_size: int = 96,
) -> Path | None:
    """Write ``out`` (PNG): one checkpoints x t0 block per scene (the first ``n_scenes`` whose
    samples are in ``work``), scene i showing edit kind ``kinds[i % len(kinds)]`` (default: the
    run's kinds in order, so the blocks show different edits) at the first seed and the CFG with
    the fullest grid. Returns the path, or None when no sample file was kept."""
    work = Path(work)
    recs = [r for r in records if r["method"] in ("sdedit", "unitune") and r.get("file")]
    w = _pick_cfg(recs)
    if w is None:
        return None
    seed = min(r["seed"] for r in recs)
    kinds = kinds or tuple(dict.fromkeys(r["kind"] for r in recs))
    # scenes restored from stored results (unitune.bench.store) have records but no samples
    kept = [s for s in dict.fromkeys(r["scene"] for r in recs) if (work / s / "samples").is_dir()]
    scenes = kept[:n_scenes]
    ckpts = sorted({r["checkpoint"] for r in recs if r["cfg"] == w})
    t0s = sorted({r["t0"] for r in recs if r["cfg"] == w})
    blocks = []
    for i, sid in enumerate(scenes):
        kind = kinds[i % len(kinds)]
        at = {
            (r["checkpoint"], r["t0"]): r
            for r in recs
            if r["scene"] == sid and r["kind"] == kind and r["cfg"] == w and r["seed"] == seed
        }
        if not at:
            continue
        base = Image.open(work / sid / "base.png").convert("RGB")
        rows = []
        for j, t0 in enumerate(t0s):
            row: list[Image.Image | None] = [base if j == 0 else None]
            for c in ckpts:
                r = at.get((c, t0))
                if r is None or not (work / sid / r["file"]).is_file():
                    row.append(None)
                    continue
                im = Image.open(work / sid / r["file"]).convert("RGB")
                row.append(
                    ImageOps.expand(
                        im, border=max(1, im.width // 24), fill=VERDICT[bool(r["success"])]
                    )
                )
            rows.append(row)
        cols = ["input"] + [("SDEdit (0)" if c == 0 else str(c)) for c in ckpts]
        blocks.append(
            contact_sheet(
                rows,
                [f"t0 {t:g}" for t in t0s],
                cols,
                col_title="fine-tuning steps",
                row_title="SDEdit start",
                title=f"{sid} {kind}: CFG {w:g}, seed {seed}",
                cell_size=cell_size,
            )
        )
    if not blocks:
        return None
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks)), "white")
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height
    out = Path(out)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out
