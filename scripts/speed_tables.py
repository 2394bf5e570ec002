"""Markdown tables of `unitune bench speed` results (docs/SPEED.md is written from them).

python scripts/speed_tables.py docs/speed/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABEL = {
    "edit": "edit from noise, s/image",
    "edit-t0": "edit from t0 0.9, s/image",
    "tune": "tune, s/step",
}


def rows(path: Path) -> list[str]:
    s = json.loads(path.read_text())
    out = [
        f"`{s['command']}` ({path.name}):",
        "",
        (
            "| what | unitune | diffusers | ratio (interleaved pairs) "
            "| peak memory, unitune / diffusers |"
        ),
        "|---|---|---|---|---|",
    ]
    for case, r in s["results"].items():
        if "skipped" in r:  # e.g. edit-t0 where the family has no img2img pipeline
            out.append(f"| {LABEL[case]} | skipped: {r['skipped']} | | | |")
            continue
        u, d = r["unitune"], r["diffusers"]
        cell = lambda x: f"{x['median_s']:.3g} ({x['min_s']:.3g}-{x['max_s']:.3g})"  # noqa: E731
        mem = f"{u['peak_mb']:.0f} / {d['peak_mb']:.0f} MB" if "peak_mb" in u else "-"
        pr = r["pair_ratios"]
        out.append(
            f"| {LABEL[case]} | {cell(u)} | {cell(d)} "
            f"| **{r['ratio']:.2f}** ({pr['min']:.2f}-{pr['max']:.2f}) | {mem} |"
        )
        if "tune_folder" in r:
            tf = r["tune_folder"]
            n = [k for k in tf if k.startswith("default_schedule")][0]
            out.append(
                f"| tune folder | checkpoint {tf['checkpoint_mb']:.1f} MB; "
                f"default schedule {tf[n]:.0f} MB; "
                f"resume state left: {tf['resume_state_left']} | | | |"
            )
    return out + [""]


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(rows(Path(p))))
