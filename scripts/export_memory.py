"""What a merged export costs at full scale: wall time and peak memory (the export process's
maximum resident set, /usr/bin/time -v) of `unitune export --format merged` to one file and to a
folder, on a released architecture with random weights stored in fp16 (shapes are what cost:
random values are enough), after a 1-step LoRA tune at 64 px.

    python scripts/export_memory.py --arch sdxl --out docs/export_memory.json

SDXL is the case that matters on a 24 GB machine: its UNet is 2.6 B parameters (5.1 GB in fp16,
10.3 GB in fp32). Resumable: the model, the tune and finished exports are reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: wall seconds and peak RSS in MB."""
    t = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    text = log.read_text()
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: see {log}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(int(m[1]) / 1024) if m else None}


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sdxl", choices=["sd15", "sdxl"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/unitune-expmem"))
    ap.add_argument("--out", type=Path, default=Path("docs/export_memory.json"))
    args = ap.parse_args()
    from skimage import data

    from unitune.backbones.random_weights import build

    work = args.work / args.arch
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    reused = (work / "model" / "random-weights.json").is_file()
    model = build(args.arch, work / "model", half=True)
    build_s = None if reused else round(time.perf_counter() - t, 1)  # None: built by a run before
    photo = work / "photo.png"
    if not photo.exists():
        from PIL import Image

        Image.fromarray(data.chelsea()).save(photo)
    env_cmd = [sys.executable, "-m", "unitune.cli"]
    tune = work / "tune"
    row: dict = {"arch": args.arch, "model": "random weights, fp16", "build_s": build_s}
    if (
        not (tune / "manifest.json").exists()
        or '"complete"' not in (tune / "manifest.json").read_text()
    ):
        row["tune"] = timed(
            [*env_cmd, "tune", str(photo), "--out", str(tune), "--model", str(model)]
            + ["--method", "lora"]
            + ["--steps", "1", "--save-at", "1", "--resolution", "64", "--device", "cpu"]
            + ["--quiet", "--overwrite"],
            work / "tune.log",
        )
    row["exports"] = []
    for name in ("merged.safetensors", "merged"):
        out = work / name
        cmd = [*env_cmd, "export", str(tune), "--format", "merged", "--out", str(out)]
        res = timed([*cmd, "--overwrite", "--quiet", "--device", "cpu"], work / f"{name}.log")
        row["exports"].append({"out": name, **res, "size_mb": size_mb(out)})
        print(json.dumps(row["exports"][-1]))
    row["total_memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    row["date"] = dt.date.today().isoformat()
    prev = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "tune" not in row and "tune" in prev.get(args.arch, {}):  # the tune a run before made
        row["tune"] = prev[args.arch]["tune"]
    prev[args.arch] = row
    args.out.write_text(json.dumps(prev, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
