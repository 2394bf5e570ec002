"""Time to the first edit: from the photo given to `unitune tune --preview` until the first
preview edit is written (the first checkpoint's edit, while the tune goes on), against the wait
without previews (the whole tune, then an edit). The same code path as the CLI's and the web
app's Tune tab (preview.Previewer on tune's on_checkpoint; the page polls it every second).

    OMP_NUM_THREADS=2 python scripts/time_to_first_edit.py --out docs/time_to_first_edit.json

Two models: the embedded one (the demo's scene and schedule: the default full tune and its
checkpoints) and SD 1.5's architecture with random fp16 weights (random_weights.build) tuned as a
LoRA at 64 px, 32 steps, the default checkpoints (shapes are what cost time, so random values do).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path

RUNS = {
    # None: the default tune's steps and checkpoints
    "embedded": {"model": "world", "method": "full", "steps": None, "resolution": None},
    "sd15-random": {"model": None, "method": "lora", "steps": 32, "resolution": 64},
}


def measure(name: str, work: Path, photo: Path, prompt: str) -> dict:
    from unitune.config import EditConfig, TuneConfig
    from unitune.edit import Editor
    from unitune.preview import Previewer
    from unitune.tune import tune

    spec = dict(RUNS[name])
    if spec["model"] is None:
        from unitune.backbones.random_weights import build

        spec["model"] = str(build("sd15", work / "sd15-fp16", half=True))
    base = TuneConfig().schedule(spec["method"])
    steps = spec["steps"] or base.steps
    cfg = replace(
        TuneConfig(),
        method=spec["method"],
        steps=steps,
        save_at=tuple(s for s in base.save_at if s <= steps),
        resolution=spec["resolution"],
    )
    out = work / f"tune-{name}"
    t0 = time.perf_counter()
    seen: dict[int, float] = {}
    saved: dict[int, float] = {}

    def on_preview(step: int, paths: list) -> None:
        seen[step] = time.perf_counter() - t0

    pv = Previewer(out, prompt, "cpu", on_preview=on_preview)

    def on_checkpoint(step: int) -> None:
        saved[step] = time.perf_counter() - t0
        pv.submit(step)

    tune(
        photo,
        out,
        cfg,
        model=spec["model"],
        device="cpu",
        progress=False,
        overwrite=True,
        on_checkpoint=on_checkpoint,
    )
    tuned = time.perf_counter() - t0
    pv.close()
    all_previews = time.perf_counter() - t0
    # without previews: the same tune alone, then the edit (the model loaded again, as `edit`
    # does after `tune`)
    t1 = time.perf_counter()
    tune(
        photo,
        work / f"plain-{name}",
        cfg,
        model=spec["model"],
        device="cpu",
        progress=False,
        overwrite=True,
    )
    plain = time.perf_counter() - t1
    t2 = time.perf_counter()
    Editor(work / f"plain-{name}", "cpu").edit(prompt, EditConfig(seeds=(0, 1)), progress=False)
    edit_s = time.perf_counter() - t2
    return {
        "model": name,
        "tune": {"method": cfg.method, "steps": cfg.steps, "save_at": list(cfg.save_at)},
        "checkpoint_saved_s": {str(k): round(v, 1) for k, v in sorted(saved.items())},
        "preview_written_s": {str(k): round(v, 1) for k, v in sorted(seen.items())},
        "first_edit_s": round(min(seen.values()), 1) if seen else None,
        "tune_s_with_previews": round(tuned, 1),
        "all_previews_s": round(all_previews, 1),
        "tune_s_without_previews": round(plain, 1),
        "edit_after_tune_s": round(edit_s, 1),
        "first_edit_without_previews_s": round(plain + edit_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/unitune-ttfe"))
    ap.add_argument("--out", type=Path, default=Path("docs/time_to_first_edit.json"))
    ap.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = ap.parse_args()
    import numpy as np

    from unitune.demo import SCENE
    from unitune.fileio import atomic_write_json
    from unitune.world.edits import make_edit
    from unitune.world.render import render, to_pil

    args.work.mkdir(parents=True, exist_ok=True)
    photo = args.work / "scene.png"
    to_pil(render([SCENE], 64)[0]).save(photo)
    prompt = make_edit(SCENE, "reshape", np.random.default_rng(0)).prompt
    today = dt.date.today().isoformat()
    rows = [{**measure(m, args.work, photo, prompt), "date": today} for m in args.models]
    # the models not measured now keep their rows (each with its date)
    old = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
    kept = [r for r in old if r["model"] not in args.models and r["model"] in RUNS]
    doc = {"device": "cpu (2 cores)", "prompt": prompt}
    doc["runs"] = sorted(kept + rows, key=lambda r: list(RUNS).index(r["model"]))
    atomic_write_json(args.out, doc)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
