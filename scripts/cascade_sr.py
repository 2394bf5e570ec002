"""Does tuning the super-resolution stage keep the image's details? (UniTune §3.2: "we fine-tune
the 64x64 model and the 64x64->256x256 super-resolution model".) Measured on the embedded
cascade world-if (16 px base -> 16->64 SR) with the editing bench's scenes, oracle and masks.

    python scripts/cascade_sr.py --scenes 8 --out docs/cascade_sr.json

Per scene (held-out, rendered at 64 px as the photo): one cascade tune (128 steps, both stages,
checkpoints 16/32/64/128), then the same base-stage samples (checkpoint --checkpoint, t0 --t0,
the model's CFG and DDPM steps; seeds 0, 1) finished three ways at 64 px:

- tuned SR: the SR stage's checkpoint at the same step (the paper's cascade);
- pretrained SR: the SR stage's checkpoint 0;
- plain upsampling: the base stage's 16 px sample resized bicubically to 64 px.

Each is scored as the bench scores edits (docs/BENCHMARKS.md): success by the oracle, fidelity
as LPIPS and PSNR to the base image over the keep mask (outside the edited region), plus the
reconstruction (the tune prompt alone, t0 1: no edit) over the whole image. Resumable: tunes and
per-scene results are kept under --work.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unitune.bench.suite import base_image, keep_mask, make_suite
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.fileio import atomic_write_json
from unitune.images import tensor_to_pil
from unitune.metrics.fidelity import PSNR_CAP, distances, image_tensor
from unitune.metrics.lpips import get_lpips
from unitune.tune import tune
from unitune.world.edits import judge
from unitune.world.oracle import read

WAYS = ("tuned SR", "pretrained SR", "plain upsampling")


def _finish(ed: Editor, prompt: str, cfg: EditConfig, step: int) -> dict[str, list]:
    """The same base-stage samples, finished the three ways: {way: [PIL images at 64 px]}."""
    out = {}
    for way, sr in (("tuned SR", step), ("pretrained SR", 0)):
        res = ed.edit(prompt, replace(cfg, sr_checkpoint=sr), progress=False)
        out[way] = res.images
        low = res.base_stage
    up = F.interpolate(low.float(), size=out["tuned SR"][0].size[::-1], mode="bicubic")
    out["plain upsampling"] = tensor_to_pil(up.clamp(-1, 1))
    return out


def _scores(images, base, mask, lp) -> dict[str, list[float]]:
    lm, pm = distances(images, base, lp, mask)
    return {"lpips": [float(x) for x in lm], "psnr": [min(float(x), PSNR_CAP) for x in pm]}


def run_scene(item, work: Path, a, lp) -> dict:
    d = work / item.sid
    done = d / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    d.mkdir(parents=True, exist_ok=True)
    base = base_image(item.scene)
    base.save(d / "base.png")
    t = time.time()
    tc = TuneConfig(
        steps=a.tune_steps,
        save_at=tuple(s for s in (16, 32, 64, 128) if s <= a.tune_steps) or (a.tune_steps,),
    )
    tune(d / "base.png", d / "tune", tc, model="world-if", device="cpu", progress=False)
    t_tune = time.time() - t
    ed = Editor(d / "tune", "cpu")
    x = image_tensor(base)  # (3, 64, 64) in [0, 1]
    before = read(base)
    cfg = EditConfig(
        checkpoint=a.checkpoint,
        t0=a.t0,
        seeds=(0, 1),
        interpolate=False,
        steps=a.steps,
        sr_steps=a.steps and a.steps // 2,
    )
    recs = []
    rec = _finish(ed, "", replace(cfg, t0=1.0), a.checkpoint)  # the tune prompt alone
    for way, imgs in rec.items():
        recs.append(
            {"scene": item.sid, "kind": "reconstruct", "way": way, **_scores(imgs, x, None, lp)}
        )
    for e in item.edits:
        mask = keep_mask(item.scene, e, (64, 64))
        for way, imgs in _finish(ed, e.prompt, cfg, a.checkpoint).items():
            ok = [judge(e, before, read(im))["success"] for im in imgs]
            recs.append(
                {
                    "scene": item.sid,
                    "kind": e.kind,
                    "way": way,
                    "success": ok,
                    **_scores(imgs, x, mask, lp),
                }
            )
            if e.kind == item.edits[0].kind:
                imgs[0].save(d / f"{way.replace(' ', '_')}.png")
    out = {"scene": item.sid, "tune_seconds": round(t_tune, 1), "records": recs}
    atomic_write_json(done, out)
    return out


def summarize(results: list[dict]) -> dict:
    by: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for rec in r["records"]:
            key = "reconstruct" if rec["kind"] == "reconstruct" else "edits"
            s = by.setdefault(f"{key}|{rec['way']}", {"lpips": [], "psnr": [], "success": []})
            s["lpips"] += rec["lpips"]
            s["psnr"] += rec["psnr"]
            s["success"] += [float(v) for v in rec.get("success", [])]
    return {
        k: {m: round(float(np.mean(v)), 4) for m, v in s.items() if v} | {"n": len(s["lpips"])}
        for k, s in by.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--checkpoint", type=int, default=64, help="both stages' step")
    ap.add_argument("--t0", type=float, default=0.9, help="the base stage's SDEdit start")
    ap.add_argument("--tune-steps", type=int, default=128, help="(128: the paper's)")
    ap.add_argument(
        "--steps",
        type=int,
        help="base-stage sampling steps (default: the model's, 100; the SR stage half)",
    )
    ap.add_argument(
        "--start",
        type=int,
        default=0,
        help="run only scenes START.. (a parallel share; no summary)",
    )
    ap.add_argument("--done-only", action="store_true", help="summarize the scenes already done")
    ap.add_argument("--work", default="runs/cascade-sr")
    ap.add_argument("--out", default="docs/cascade_sr.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    lp = get_lpips("alex", torch.device("cpu"))
    work = Path(a.work)
    results = []
    for item in make_suite(a.scenes)[a.start :]:
        if a.done_only and not (work / item.sid / "result.json").is_file():
            continue
        t = time.time()
        results.append(run_scene(item, work, a, lp))
        print(f"{item.sid}: {time.time() - t:.0f} s", flush=True)
    if a.start:  # a share of the scenes for a parallel process: the summary comes from a full run
        return 0
    done = [r["scene"] for r in results]
    out = {
        "command": (
            f"python scripts/cascade_sr.py --scenes {a.scenes} --checkpoint {a.checkpoint} "
            f"--t0 {a.t0}"
        ),
        "model": "world-if + world-if-sr",
        "seeds": [0, 1],
        "scenes_done": done,
        "summary": summarize(results),
        "scenes": results,
    }
    atomic_write_json(a.out, out)
    print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
