"""What the automatic mask's difference map looks like, per edit kind, on a benchmark run's
tunes: does the map rank the cells the edit belongs in above the cells it must keep?

    python scripts/automask_maps.py runs/amr/work --out docs/automask_maps.json \
        --png docs/automask_maps.png

For each scene's edits (the bench suite's; the work folder of an `automask-rules` or `medium`
run, whose tunes hold checkpoint 32) the edit is planned (`Editor.plan`: no sampling) with
`--auto-mask` at two settings: the tuned model (checkpoint 32, CFG 3: the mask of the bench's
most faithful keep config) and the pretrained one (SDEdit's, no rare token, CFG 7.5). The raw
map (DiffEdit's mean |difference| of the two prompts' predictions, before any cut) is taken
as the plan computes it. Against the bench's ground truth (the region outside the keep mask:
the edited object's box, or for a background edit the background outside the objects) it
reports the map's AUC (the chance that a cell of the region lies above a kept cell: 1 = the
map ranks the region first, 0.5 = no better than chance), its mean level inside / outside the
region (in units of the map's mean), its spread (std / mean) and what each cut marks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from unitune import automask
from unitune.bench.config import PRESETS
from unitune.bench.suite import keep_mask, make_suite
from unitune.config import EditConfig
from unitune.edit import Editor

SETTINGS = {  # name -> EditConfig overrides
    "tuned c32 w3": dict(checkpoint=32, cfg=3.0),
    "pretrained w7.5": dict(checkpoint=0, cfg=7.5, rare_token=False),
}


def auc(m: torch.Tensor, region: torch.Tensor) -> float | None:
    """P(a region cell's value > a kept cell's), ties half."""
    a, b = m[region > 0], m[region == 0]
    if a.numel() == 0 or b.numel() == 0:
        return None
    d = a[:, None] - b[None, :]
    return float((d > 0).float().mean() + 0.5 * (d == 0).float().mean())


def raw_map(ed: Editor, prompt: str, ec: EditConfig) -> torch.Tensor:
    """The (h, w) map the plan cuts: automask.cut's argument, taken on its way in."""
    seen: list[torch.Tensor] = []
    real = automask.cut

    def keep(m, rule, threshold):
        seen.append(m.detach().float().clone())
        return real(m, rule, threshold)

    with mock.patch.object(automask, "cut", side_effect=keep):
        ed.plan(prompt, ec)
    return seen[-1][0, 0]


def tile(m: torch.Tensor, px: int = 96) -> np.ndarray:
    v = (m / m.max().clamp_min(1e-12)).numpy()
    img = Image.fromarray((np.stack([v] * 3, -1) * 255).astype(np.uint8))
    return np.asarray(img.resize((px, px), Image.NEAREST))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="a bench run's work folder (s000/tune, ...)")
    ap.add_argument("--preset", default="automask-rules")
    ap.add_argument("--scenes", type=int, help="the run's number of scenes (default: the preset's)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)
    bc = PRESETS[args.preset]
    n = args.scenes or bc.n_scenes
    items = [i for i in make_suite(n, kinds=bc.kinds) if (args.work / i.sid).is_dir()]
    if not items:
        print(f"no scene folders under {args.work}", file=sys.stderr)
        return 2
    rows, picture = [], []
    for item in items:
        ed = Editor(args.work / item.sid / "tune", "cpu")
        strip = [np.asarray(ed.base_image.convert("RGB").resize((96, 96), Image.NEAREST))]
        for e in item.edits:
            for name, over in SETTINGS.items():
                ec = replace(EditConfig(steps=bc.steps, seeds=(0,)), auto_mask=True, **over)
                m = raw_map(ed, e.prompt, ec)
                region = 1 - keep_mask(item.scene, e, tuple(m.shape), bc.mask_margin)[0, 0]
                mn = m / m.mean()
                mask = automask.for_map(m[None, None], ec)[0, 0]
                tight = 1 - keep_mask(item.scene, e, tuple(m.shape), 0.0)[0, 0]
                rows.append(
                    {
                        "scene": item.sid,
                        "kind": e.kind,
                        "setting": name,
                        "region_frac": round(float(region.mean()), 3),
                        "auc": round(auc(m, region), 3),
                        "level_in": round(float(mn[region > 0].mean()), 3),
                        "level_out": round(float(mn[region == 0].mean()), 3),
                        "spread": round(float(m.std() / m.mean()), 3),
                        "diffedit_frac": round(
                            float(automask.threshold_map(m[None, None], 0.5).mean()), 3
                        ),
                        "otsu_frac": round(float(automask.otsu_map(m[None, None]).mean()), 3),
                        # the mask the edit samples in (cut and dilated as `ec` says): its area,
                        # and how much of the region without the bench's margin (the object's
                        # own box) it marks: what the mask misses cannot change
                        "mask_frac": round(float(mask.mean()), 3),
                        "region_marked": round(float(mask[tight > 0].mean()), 3),
                    }
                )
                if name == next(iter(SETTINGS)):
                    strip.append(tile(m))
        picture.append(np.concatenate(strip, 1))
        del ed
    summary = {}
    for name in SETTINGS:
        for kind in bc.kinds:
            rs = [r for r in rows if r["kind"] == kind and r["setting"] == name]
            summary[f"{name} / {kind}"] = {
                k: round(float(np.mean([r[k] for r in rs])), 3)
                for k in (
                    "region_frac",
                    "auc",
                    "level_in",
                    "level_out",
                    "spread",
                    "diffedit_frac",
                    "otsu_frac",
                    "mask_frac",
                    "region_marked",
                )
            } | {
                "spread_min": min(r["spread"] for r in rs),
                "spread_max": max(r["spread"] for r in rs),
            }
    out = {
        "work": str(args.work),
        "preset": args.preset,
        "scenes": [i.sid for i in items],
        "columns of the picture": ["photo", *bc.kinds],
        "summary": summary,
        "rows": rows,
    }
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.out)
    if args.png:
        tmp = args.png.with_suffix(".tmp.png")
        Image.fromarray(np.concatenate(picture, 0)).save(tmp)
        os.replace(tmp, args.png)
    for k, v in summary.items():
        print(k, v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
