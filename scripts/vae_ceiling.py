"""The ceiling the VAE puts on a world model: the oracle on VAE reconstructions of the 256
held-out evaluation scenes (the same scenes and scores as unitune.embedded.evaluate).

    python scripts/vae_ceiling.py --model world --out docs/vae_ceiling.json
    python scripts/vae_ceiling.py --model world --baseline OLD_MODEL --sheet docs/vae_v2_v3.png

A generated sample is decoded by the same decoder, so attributes the decoder cannot draw from
a real scene's latents are rarely drawn right from generated ones either. Also scores the
renderings themselves (the oracle's own accuracy: should be ~100%). CPU, about a minute.
"""

from __future__ import annotations

import argparse
import json

import torch

from unitune.backbones import load_model
from unitune.embedded.evaluate import eval_set, score
from unitune.fileio import atomic_write_json
from unitune.world.render import render


@torch.no_grad()
def reconstruct(model: str, x: torch.Tensor) -> torch.Tensor:
    """VAE reconstructions (N, 3, H, W) in [0, 1] of images x in [0, 1]."""
    vae = load_model(model, device="cpu", dtype=torch.float32).vae
    # the posterior mean: what a well-trained UNet's samples are closest to
    z = vae.encode(x * 2 - 1).latent_dist.mean
    return (vae.decode(z).sample / 2 + 0.5).clamp(0, 1)


def ceiling(model: str, items: list[tuple], x: torch.Tensor, y: torch.Tensor) -> dict:
    """Oracle scores of the renderings x and their reconstructions y."""
    return {
        "model": model,
        "n": len(items),
        "rendered": score(items, x),
        "reconstructed": score(items, y),
        "recon_l1": round(float((y - x).abs().mean()), 4),
    }


def sheet(
    items: list[tuple],
    x: torch.Tensor,
    old: torch.Tensor,
    new: torch.Tensor,
    path: str,
    n: int = 12,
) -> None:
    """Rows: rendering x, baseline's reconstruction old, model's reconstruction new; columns: the
    first n single-object eval scenes whose object the oracle misreads (colour or shape) in old."""
    from PIL import Image

    from unitune.world.oracle import match, read
    from unitune.world.render import to_pil

    cols = []
    for i, (scene, _) in enumerate(items):
        if len(scene.objects) == 1 and len(cols) < n:
            o, s = scene.objects[0], match(scene, read(old[i]))[0]
            if s is None or (s.colour, s.shape) != (o.colour, o.shape):
                cols.append(i)
    im = Image.new("RGB", (len(cols) * 66, 3 * 66), "white")
    for j, i in enumerate(cols):
        for r, t in enumerate((x, old, new)):
            im.paste(to_pil(t[i]), (j * 66, r * 66))
    im.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--baseline", help="with --sheet: the model to compare against")
    ap.add_argument("--sheet", help="write a PNG: renderings / baseline / model reconstructions")
    a = ap.parse_args()
    items = eval_set()
    x = render([s for s, _ in items], 64)  # (256, 3, 64, 64) in [0, 1], with texture noise
    y = reconstruct(a.model, x)
    if a.sheet:
        sheet(items, x, reconstruct(a.baseline or "world", x), y, a.sheet)
    res = ceiling(a.model, items, x, y)
    print(json.dumps(res["reconstructed"], indent=1), "recon L1", res["recon_l1"])
    if a.out:
        atomic_write_json(a.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
