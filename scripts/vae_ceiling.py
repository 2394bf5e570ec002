"""The ceiling the VAE puts on a world model: the oracle on VAE reconstructions of the 256
held-out evaluation scenes (the same scenes and scores as unitune.embedded.evaluate).

    python scripts/vae_ceiling.py --model world --out docs/vae_ceiling.json

A generated sample is decoded by the same decoder, so attributes the decoder cannot draw from
a real scene's latents are rarely drawn right from generated ones either. Also scores the
renderings themselves (the oracle's own accuracy: should be ~100%). CPU, about a minute.
"""

from __future__ import annotations

import argparse
import json

import torch

from unitune.embedded.evaluate import eval_set, score
from unitune.fileio import atomic_write_json
from unitune.models import load_components
from unitune.world.render import render


@torch.no_grad()
def ceiling(model: str) -> dict:
    comp = load_components(model, device="cpu", dtype=torch.float32)
    items = eval_set()
    x = render([s for s, _ in items], 64)  # (256, 3, 64, 64) in [0, 1], with texture noise
    # the posterior mean: what a well-trained UNet's samples are closest to
    z = comp.vae.encode(x * 2 - 1).latent_dist.mean
    y = (comp.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
    return {
        "model": model,
        "n": len(items),
        "rendered": score(items, x),
        "reconstructed": score(items, y),
        "recon_l1": round(float((y - x).abs().mean()), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world")
    ap.add_argument("--out", help="write the JSON here")
    a = ap.parse_args()
    res = ceiling(a.model)
    print(json.dumps(res["reconstructed"], indent=1), "recon L1", res["recon_l1"])
    if a.out:
        atomic_write_json(a.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
