"""How much of a full tune survives `unitune export --format lora-from-full --rank R`: on the
embedded model, full tunes of a few scenes (the demo's and the benchmark suite's first ones),
their checkpoint 128 exported at each rank, and the same edits sampled from the full tune and
from the extracted LoRA (both through diffusers' own pipeline: the merged export vs the
pretrained model + load_lora_weights), compared by LPIPS and PSNR per sample.

    python scripts/lora_from_full.py --out docs/lora_from_full.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unitune.bench.suite import base_image, make_suite
from unitune.config import TuneConfig, tune_preset
from unitune.demo import SCENE
from unitune.export import export
from unitune.export.extract import extract_lora
from unitune.fileio import atomic_write_json
from unitune.metrics import get_lpips, psnr
from unitune.tune import tune
from unitune.tunefolder import TuneFolder
from unitune.world.edits import KINDS, make_edit
from unitune.world.render import render, to_pil

RANKS = (4, 8, 16, 32, 64, 10_000)  # 10_000: every layer at full rank


def pipe_of(source: str):
    import diffusers

    p = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(
        source, safety_checker=None, requires_safety_checker=False
    )
    p.scheduler = diffusers.DDIMScheduler.from_config(p.scheduler.config)
    p.set_progress_bar_config(disable=True)
    return p


def sample(pipe, x0: torch.Tensor, prompts: list[str], seeds=(0, 1, 2, 3)) -> torch.Tensor:
    """Each prompt at t0 0.9 (the edit default), CFG 7.5, 25 DDIM steps: (N, 3, H, W) in [0, 1]."""
    out = []
    for p in prompts:
        im = pipe(
            prompt=[p] * len(seeds),
            image=x0.repeat(len(seeds), 1, 1, 1),
            strength=0.9,
            guidance_scale=7.5,
            num_inference_steps=25,
            output_type="np",
            generator=[torch.Generator().manual_seed(s) for s in seeds],
        ).images
        out.append(torch.from_numpy(im).permute(0, 3, 1, 2))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/lora_from_full.json")
    ap.add_argument("--work", default="runs/lora-from-full")
    ap.add_argument("--scenes", type=int, default=2, help="suite scenes besides the demo's")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    from unitune.backbones import SHORT_NAMES

    base_model = str(SHORT_NAMES["world"])
    scenes = [("demo", SCENE)] + [(it.sid, it.scene) for it in make_suite(a.scenes)]
    lp = get_lpips("alex", torch.device("cpu"))
    rows, t_start = [], time.time()
    for sid, scene in scenes:
        png = work / f"{sid}.png"
        (to_pil(render([scene], 64)[0]) if sid == "demo" else base_image(scene)).save(png)
        # the paper's 128-step run (docs/lora_from_full.json extracts its last checkpoint)
        paper = TuneConfig(**tune_preset("unitune"))
        folder = tune(png, work / sid / "tune", paper, device="cpu", progress=False)
        rng = np.random.default_rng(0)
        prompts = [f"beikkpic {e.prompt}" for e in (make_edit(scene, k, rng) for k in KINDS) if e]
        x0 = folder.base_latents()
        merged = export(folder.path, "merged", work / sid / "merged", overwrite=True).path
        full = sample(pipe_of(str(merged)), x0, prompts)
        delta, _ = TuneFolder.open(folder.path).load_checkpoint(128)
        for rank in RANKS:
            f = export(
                folder.path,
                "lora-from-full",
                work / sid / f"r{rank}.safetensors",
                rank=rank,
                overwrite=True,
            ).path
            ex = extract_lora(delta, rank)
            pipe = pipe_of(base_model)
            pipe.load_lora_weights(str(f))
            pipe.fuse_lora()  # W + B A in place: the same model, without PEFT's per-layer cost
            lora = sample(pipe, x0, prompts)
            with torch.no_grad():
                d = lp(lora, full)
            rows.append(
                {
                    "scene": sid,
                    "rank": rank,
                    "file_mb": round(f.stat().st_size / 1e6, 3),
                    "lpips_to_full": round(float(d.mean()), 4),
                    "psnr_to_full": round(float(psnr(lora, full).clamp(max=99).mean()), 2),
                    "truncated_energy": round(ex.truncation_energy, 5),
                    "bias_norm_energy": round(ex.dropped_energy, 5),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for rank in RANKS:
        rs = [r for r in rows if r["rank"] == rank]
        summary[str(rank)] = {
            k: round(float(np.mean([r[k] for r in rs])), 4)
            for k in ("file_mb", "lpips_to_full", "psnr_to_full", "truncated_energy")
        }
    delta_mb = (
        sum(
            p.stat().st_size
            for p in (work / "demo" / "tune" / "checkpoints").glob("step-000128.safetensors")
        )
        / 1e6
    )
    atomic_write_json(
        a.out,
        {
            "command": "python scripts/lora_from_full.py",
            "model": "world (v5)",
            "edits": "5 kinds x 4 seeds per scene, t0 0.9, CFG 7.5, 25 DDIM steps",
            "full_checkpoint_mb": round(delta_mb, 3),
            "seconds": round(time.time() - t_start, 1),
            "by_rank": summary,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
