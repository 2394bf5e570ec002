"""`unitune bench speed` on the 2026 families' tiny seeded random architectures (the tests'
models: tests/tiny_lm_dit.py, tests/tiny_flux2.py), 64 px on the CPU, one JSON per family in
docs/speed/tiny-<family>.json. The released sizes do not fit this machine's memory in unitune's
CPU dtype (fp32: Z-Image's transformer alone is 24.6 GB, docs/family_sizes.json), so these are
the ratios of the same code paths at toy widths: unitune's loop and guidance against the
family's own pipeline, not the architectures' compute. Resumable: a finished JSON is skipped.

    python scripts/speed_families.py [--out docs/speed] [--work /tmp/unitune-speed-families]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny builders

BUILDERS = {
    "zimage": ("tiny_lm_dit", "build_tiny_zimage_pipeline"),
    "qwenimage": ("tiny_lm_dit", "build_tiny_qwenimage_pipeline"),
    "flux2klein": ("tiny_flux2", "build_tiny_flux2_klein_pipeline"),
    "flux2": ("tiny_flux2", "build_tiny_flux2_dev_pipeline"),
}


def main() -> None:
    import importlib

    from unitune.bench.speed import SpeedConfig, run_speed

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "docs" / "speed"))
    ap.add_argument("--work", default="/tmp/unitune-speed-families")
    a = ap.parse_args()
    out, work = Path(a.out), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for family, (module, fn) in BUILDERS.items():
        dest = out / f"tiny-{family}.json"
        if dest.is_file():
            continue
        model = work / f"model-{family}"
        if not (model / "model_index.json").is_file():
            getattr(importlib.import_module(module), fn)().save_pretrained(model)
        sc = SpeedConfig(
            model=str(model),
            resolution=64,
            steps=10,
            batch=2,
            repeats=5,
            tune_steps=5,
            device="cpu",
            memory=False,
        )
        run_speed(sc, work / f"tiny-{family}.json", log=lambda m, f=family: print(f, m))
        shutil.copy(work / f"tiny-{family}.json", dest)


if __name__ == "__main__":
    main()
