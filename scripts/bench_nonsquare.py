"""SINE's arbitrary-resolution claim on the embedded model: object counts at a non-square size.

For each held-out scene (with per-image details) two tunes of the same length are made on its
64x64 rendering: plain UniTune fine-tuning, and SINE patch-based fine-tuning (random crops +
crop-box positional embedding). Each tune then samples the reconstruction prompt (the rare token
alone) at 64x96 (H x W) and 96x64 from pure noise, and the oracle counts the objects.
    python scripts/bench_nonsquare.py --scenes 6 --out docs/nonsquare.json
Prints and writes, per variant and size: how often the count equals the source's, how often it
is larger (duplicated objects), and the mean count.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from unitune.backbones import load_model
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.tune import tune
from unitune.world.oracle import read
from unitune.world.render import render, to_pil
from unitune.world.scene import sample_scene

SIZES = ((64, 96), (96, 64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--steps", type=int, default=128, help="fine-tuning steps, plain tunes")
    ap.add_argument(
        "--patch-steps", type=int, help="fine-tuning steps, patch tunes (default --steps)"
    )
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--work", default="runs/nonsquare")
    ap.add_argument("--out", default="docs/nonsquare.json")
    a = ap.parse_args()
    seeds = tuple(int(s) for s in a.seeds.split(","))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bb = load_model("world", "cpu")
    rng = np.random.default_rng(77)
    scenes = [sample_scene(rng, n_objects=1 + i % 2, split="eval") for i in range(a.scenes)]
    ps = a.patch_steps or a.steps
    base = TuneConfig(steps=a.steps, save_at=(a.steps,))
    # SINE trains patch tunes far longer than plain ones (10,000 vs 800 steps): crops of 0.1-1x
    # the image mean each step sees a small part, and the full box is rarely drawn
    variants = {
        f"plain{a.steps}": base,
        f"patches{ps}": replace(base, patches=True, steps=ps, save_at=(ps,)),
    }
    rows, t_start = [], time.time()
    for i, scene in enumerate(scenes):
        photo = work / f"scene{i}.png"
        to_pil(render([scene])[0]).save(photo)
        n_src = len(read(to_pil(render([scene])[0])).objects)
        for name, cfg in variants.items():
            folder = tune(photo, work / f"{name}_{i}", cfg, backbone=bb, progress=False)
            ed = Editor(folder.path, "cpu")
            for hw in SIZES:
                ec = EditConfig(cfg=a.cfg, t0=1.0, steps=25, seeds=seeds, size=hw)
                res = ed.edit("", ec, progress=False)
                for s, img in zip(seeds, res.images):
                    img.save(work / f"{name}_{i}_{hw[0]}x{hw[1]}_s{s}.png")
                    n = len(read(img).objects)
                    rows.append(
                        {
                            "scene": i,
                            "variant": name,
                            "size": f"{hw[0]}x{hw[1]}",
                            "seed": s,
                            "source": n_src,
                            "count": n,
                        }
                    )
        print(f"scene {i} done ({time.time() - t_start:.0f} s)", flush=True)
    summary = {}
    for name in variants:
        for hw in SIZES:
            sel = [r for r in rows if r["variant"] == name and r["size"] == f"{hw[0]}x{hw[1]}"]
            summary[f"{name} {hw[0]}x{hw[1]}"] = {
                "samples": len(sel),
                "count_kept": float(np.mean([r["count"] == r["source"] for r in sel])),
                "more_objects": float(np.mean([r["count"] > r["source"] for r in sel])),
                "fewer_objects": float(np.mean([r["count"] < r["source"] for r in sel])),
                "mean_count": float(np.mean([r["count"] for r in sel])),
                "mean_source": float(np.mean([r["source"] for r in sel])),
            }
    out = {
        "command": "python scripts/bench_nonsquare.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()),
        "seconds": round(time.time() - t_start),
        "summary": summary,
        "rows": rows,
    }
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    for k, v in summary.items():
        print(
            f"{k:<16} kept {v['count_kept']:.0%}  more {v['more_objects']:.0%}  "
            f"fewer {v['fewer_objects']:.0%}  mean {v['mean_count']:.2f} "
            f"(source {v['mean_source']:.2f})"
        )


if __name__ == "__main__":
    main()
