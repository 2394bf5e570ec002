"""`unitune demo`'s wall time as a user meets it (a fresh process: imports included), its phases
from verdicts.json, and a torch.profiler table of the demo's tuning steps.

    python scripts/demo_time.py --runs 2 --out docs/speed/demo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def wall(runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            subprocess.run(
                ["unitune", "demo", "--out", f"{d}/demo", "--quiet"],
                check=True,
                capture_output=True,
            )
            s = json.loads(Path(d, "demo", "verdicts.json").read_text())
            out.append(
                {
                    "wall_s": round(time.perf_counter() - t, 1),
                    "tune_s": s["tune_seconds"],
                    "in_process_s": s["total_seconds"],
                    "success_rate": s["success_rate"],
                    "background_psnr": round(s["background_psnr"], 2),
                }
            )
            print(out[-1], flush=True)
    return out


def profile_tune(steps: int) -> str:
    from torch.profiler import profile

    from unitune.backbones import load_model
    from unitune.config import DEFAULT_MODEL, TuneConfig
    from unitune.demo import SCENE
    from unitune.tune import tune
    from unitune.world.render import render, to_pil

    with tempfile.TemporaryDirectory() as d:
        photo = Path(d, "p.png")
        to_pil(render([SCENE], 64)[0]).save(photo)
        bb = load_model(DEFAULT_MODEL, "cpu")
        cfg = TuneConfig(steps=steps, save_at=(steps,))
        tune(photo, Path(d, "warm"), TuneConfig(steps=2, save_at=(2,)), backbone=bb, progress=False)
        with profile() as p:
            tune(photo, Path(d, "t"), cfg, backbone=bb, progress=False)
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=16)
    ap.add_argument("--out", default="docs/speed/demo.json")
    a = ap.parse_args()
    runs = wall(a.runs)
    table = profile_tune(a.profile_steps)
    print(table)
    res = {
        "command": f"python scripts/demo_time.py --runs {a.runs} --out {a.out}",
        "runs": runs,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "profile_tune_steps": a.profile_steps,
        "profile": table.splitlines(),
    }
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
