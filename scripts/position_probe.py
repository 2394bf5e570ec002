"""Does a world model use the position words of its captions? A probe without sampling.

    python scripts/position_probe.py --model world --out docs/position_probe.json

Two measurements on 64 held-out single-object scenes (fixed seeds):
  * text: how far apart the text encoder's token states are for "on the left" vs "on the
    right", beside the same for a colour swap ("red" vs "blue");
  * denoising: the UNet's epsilon loss at t in {400, 600, 800, 900} with the true caption and
    with the same caption naming a wrong position (same noise). A model that reads position
    words predicts worse with the wrong one: rel_gap = (wrong - true) / true > 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from unitune.backbones import load_model, resolve_model_ref
from unitune.embedded.arch import scheduler_config
from unitune.fileio import atomic_write_json
from unitune.world.render import render
from unitune.world.scene import FULL, caption, sample_scene

SIDES = ("left", "right", "top", "bottom", "center")


def _wrong_position(scene):
    o = scene.objects[0]
    others = [p for p in SIDES if p != o.pos]
    return replace(scene, objects=(replace(o, pos=others[len(o.pos) % len(others)]),))


@torch.no_grad()
def probe(model: str, n: int = 64, seed: int = 5) -> dict:
    bb = load_model(model)
    e = bb.encode(
        [
            "a large red circle on the left",
            "a large red circle on the right",
            "a large blue circle on the left",
        ]
    ).emb.float()  # (3, 77, width): every token state, as the UNet's cross-attention sees them
    # the causal encoder carries a word's meaning into every later token, padding included,
    # so compare the largest per-token distance, not the word's own token
    text = {
        "max_token_distance_left_vs_right": round((e[0] - e[1]).norm(dim=-1).max().item(), 3),
        "max_token_distance_red_vs_blue": round((e[0] - e[2]).norm(dim=-1).max().item(), 3),
        "token_state_norm": round(e[0].norm(dim=-1).mean().item(), 3),
    }
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, n_objects=1, split="eval") for _ in range(n)]
    x = render(scenes, bb.resolution, torch.device("cpu"), None) * 2 - 1
    z = bb.encode_image(x).float().cpu()  # (n, 4, 16, 16)
    true_caps = [caption(s, np.random.default_rng(i), FULL) for i, s in enumerate(scenes)]
    wrong_caps = [
        caption(_wrong_position(s), np.random.default_rng(i), FULL) for i, s in enumerate(scenes)
    ]
    conds = [bb.encode(c) for c in (true_caps, wrong_caps)]
    sched = DDPMScheduler.from_config(scheduler_config())
    gen = torch.Generator().manual_seed(0)
    denoise = {}
    for tt in (400, 600, 800, 900):
        noise = torch.randn(z.shape, generator=gen)
        t = torch.full((n,), tt)
        xt = sched.add_noise(z, noise, t).to(bb.device, bb.dtype)
        true, wrong = (
            (bb.denoise(bb.module, xt, t.to(bb.device), c).float().cpu() - noise)
            .pow(2)
            .mean()
            .item()
            for c in conds
        )
        denoise[str(tt)] = {
            "true": round(true, 6),
            "wrong": round(wrong, 6),
            "rel_gap_percent": round(100 * (wrong - true) / true, 3),
        }
    return {
        "model": model,
        "unet_sha256": unet_sha256(model),
        "n": n,
        "text": text,
        "denoise": denoise,
    }


def unet_sha256(model: str) -> str | None:
    """First 16 hex digits of the UNet weights' sha256 (which model was probed), if a folder."""
    f = Path(resolve_model_ref(model)) / "unet" / "diffusion_pytorch_model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="world")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    res = probe(a.model)
    print(json.dumps(res, indent=2))
    if a.out:
        atomic_write_json(a.out, res)


if __name__ == "__main__":
    main()
