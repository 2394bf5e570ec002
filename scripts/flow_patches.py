"""Does SINE's patch tuning still change anything on the flow transformers?

SINE (§3.3) tunes on random crops with a positional embedding of the crop box so that a model
tuned at one size can sample the photo at another without repeating it. SD3's patch embedder
adds fixed sin-cos positions cropped to the token grid and FLUX uses rotary position ids, so both
already take other sizes. This measures it on the tiny seeded SD3 and FLUX models of the tests:
tune each on a wide photo (1:2) at 32x32, plainly (center crop) and with --patches, then sample
the rare token from noise at the photo's own aspect (32x64) and at the tuned size, and compare the
sample's latents with the photo's (PSNR over 4 seeds, peak = the photo latents' max |value|; the
VAE is random, so the latent is what the network learns, as in tests/test_families.py).

    python scripts/flow_patches.py [--steps 1024] [--out docs/flow_patches.json]

Resumable: tunes resume from their folders under --work, finished rows are kept in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders


def photo(path: Path) -> Path:
    from skimage import data

    Image.fromarray(data.chelsea()).resize((128, 64), Image.LANCZOS).save(path)  # 2:1, a cat
    return path


def psnr_at(ed, hw: tuple[int, int], step: int) -> float:
    from unitune.config import EditConfig

    z = ed.base_latents(hw)  # the photo at this size (center-cropped to it), encoded
    ec = EditConfig(checkpoint=step, t0=1.0, cfg=1.0, steps=20, seeds=(0, 1, 2, 3), size=hw)
    lat = ed.edit("", ec, progress=False).latents
    return round(
        float(10 * np.log10(z.abs().max().item() ** 2 / ((lat - z) ** 2).mean().item())), 2
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--work", default=str(ROOT / ".flow_patches-work"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "flow_patches.json"))
    a = ap.parse_args()
    from tiny_flow import build_tiny_flux_pipeline, build_tiny_sd3_pipeline
    from unitune.config import TuneConfig
    from unitune.edit import Editor
    from unitune.tune import tune

    torch.manual_seed(0)
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    img = photo(work / "photo.png")
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    done = {(r["family"], r["patches"]) for r in rows}
    for fam, build in (("sd3", build_tiny_sd3_pipeline), ("flux", build_tiny_flux_pipeline)):
        model = work / f"tiny-{fam}"
        if not (model / "model_index.json").exists():
            build().save_pretrained(model, safe_serialization=True)
        for patches in (False, True):
            if (fam, patches) in done:
                continue
            folder = work / f"{fam}-{'patches' if patches else 'plain'}"
            cfg = TuneConfig(
                steps=a.steps,
                save_at=(a.steps,),
                lr=a.lr,
                method="full",
                resolution=32,
                patches=patches,
            )
            tune(img, folder, cfg, model=str(model), device="cpu", progress=True)
            ed = Editor(folder, "cpu")
            row = {
                "family": fam,
                "patches": patches,
                "steps": a.steps,
                "lr": a.lr,
                "psnr_32x64_pretrained": psnr_at(ed, (32, 64), 0),
                "psnr_32x64": psnr_at(ed, (32, 64), a.steps),
                "psnr_32x32": psnr_at(ed, (32, 32), a.steps),
            }
            print(row, flush=True)
            rows.append(row)
            out.write_text(
                json.dumps(
                    {
                        "command": " ".join(["python", "scripts/flow_patches.py", *sys.argv[1:]]),
                        "rows": rows,
                    },
                    indent=1,
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
