"""Measure the embedded model with the oracle on held-out captions (never used in training).

    python -m unitune.embedded.evaluate --model world --cfg 1,3,7.5,15 --steps 25 \
        --out docs/world_eval.json
    python -m unitune.embedded.evaluate --model world-if --sr-model world-if-sr --cfg 3,7 \
        --steps 25 --out docs/world_if_eval.json

256 fixed scenes from the held-out split (96 with one object, 96 with two, 64 with three),
their full captions, one sample each (seed = index), DDIM (``--steps``, default 50; the README's
table uses 25), through unitune's own sampling loop (the same code path as `unitune edit`,
t0 = 1).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import load_model
from ..backbones.base import Conditioning
from ..config import DEFAULT_MODEL
from ..fileio import atomic_write_json
from ..guiders.cfg import cfg_guided
from ..sampling import sample
from ..world.oracle import match, read
from ..world.scene import FULL, caption, sample_scene

COUNTS = {1: 96, 2: 96, 3: 64}


def eval_set(seed: int = 1234) -> list[tuple]:
    """[(scene, caption)] — fixed, from the held-out split."""
    rng = np.random.default_rng(seed)
    out = []
    for n, k in COUNTS.items():
        for _ in range(k):
            s = sample_scene(rng, n_objects=n, split="eval")
            out.append((s, caption(s, rng, FULL)))
    return out


@torch.no_grad()
def generate(
    bb,
    prompts: list[str],
    w: float,
    steps: int = 50,
    batch: int = 64,
    seed0: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] from the backbone ``bb``; sample i uses seed seed0 + i."""
    shape = bb.latent_shape((bb.resolution, bb.resolution))
    out = []
    for i in tqdm(range(0, len(prompts), batch), desc=f"cfg {w:g}", disable=not progress):
        ps = prompts[i : i + batch]
        embs = bb.encode([""] + ps).emb
        noise = torch.cat(
            [
                torch.randn(
                    (1, *shape),
                    generator=torch.Generator().manual_seed(seed0 + i + j),
                )
                for j in range(len(ps))
            ]
        ).to(bb.device, bb.dtype)

        def den(x, t, emb):
            return bb.denoise(bb.module, x, t, Conditioning(emb))

        def guided(x, t, embs=embs, den=den):
            return _batched(den, x, t, embs[:1].expand(x.shape[0], -1, -1), embs[1:], w)

        lat = sample(guided, bb.make_scheduler("ddim"), noise, steps=steps, progress=False)
        out.append((bb.decode(lat).float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def upscale(
    sr,
    base,
    low: torch.Tensor,
    prompts: list[str],
    w: float,
    steps: int,
    batch: int = 32,
    seed0: int = 0,
    level: int = 250,
) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1]: a cascade's SR stage ``sr`` on the base stage's samples ``low``
    (N, 3, h, w) in [0, 1], the prompts encoded by the base stage's T5 (IF's stages share it);
    DDIM on the eps half, the augmentation at IF's default level; sample i seeds seed0 + i."""
    hw = (sr.resolution, sr.resolution)
    out = []
    for i in range(0, len(prompts), batch):
        ps = prompts[i : i + batch]
        n = len(ps)
        embs = base.encode([""] + ps).emb
        gens = [torch.Generator().manual_seed(seed0 + i + j) for j in range(n)]
        noise = torch.cat([torch.randn((1, 3, *hw), generator=g) for g in gens])
        aug = torch.cat([torch.randn((1, 3, *hw), generator=g) for g in gens])
        lo = low[i : i + n].to(sr.device) * 2 - 1
        c = sr.condition(Conditioning(embs[1:]), lo, level, aug)
        u = sr.condition(Conditioning(embs[:1].expand(n, -1, -1)), lo, level, aug)
        guided = cfg_guided(lambda x, t, cc: sr.denoise(sr.module, x, t, cc), u, c, w)
        x = sample(
            guided,
            sr.make_scheduler("ddim"),
            noise.to(sr.device, sr.dtype),
            steps=steps,
            progress=False,
        )
        out.append((x.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)


def _batched(den, x, t, base, cond, w):
    # per-sample conditions (cfg_guided shares one prompt across the batch)
    if w == 1.0:
        return den(x, t, cond)
    u, c = den(torch.cat([x, x]), t, torch.cat([base, cond])).chunk(2)
    return u + w * (c - u)


def all_colour_shape_right(scene, matched: list) -> bool:
    """Every object of ``scene`` has the colour and shape asked for, where ``matched`` (the
    oracle's ``match``) put it."""
    return all(
        s is not None and s.colour == o.colour and s.shape == o.shape
        for o, s in zip(scene.objects, matched)
    )


def score(items: list[tuple], images: torch.Tensor) -> dict:
    """Oracle accuracies (fractions) over the eval set."""
    acc: dict[str, list[float]] = {}

    def add(k: str, ok: bool) -> None:
        acc.setdefault(k, []).append(float(ok))

    for (scene, _), img in zip(items, images):
        r = read(img)
        n = len(scene.objects)
        add("background", r.background == scene.background)
        add(f"count_{n}", len(r.objects) == n)
        m = match(scene, r)
        if n == 1:
            o, s = scene.objects[0], m[0]
            for attr in ("colour", "shape", "pos", "size", "style"):
                add(f"single_{attr}", s is not None and getattr(s, attr) == getattr(o, attr))
        else:
            add(f"multi{n}_all_colour_shape", all_colour_shape_right(scene, m))
            # the same, wherever the objects were drawn: the requested (colour, shape) pairs are
            # all among the seen ones (position is scored on its own, in single_pos)
            seen = Counter((s.colour, s.shape) for s in r.objects)
            want = Counter((o.colour, o.shape) for o in scene.objects)
            add(f"multi{n}_all_colour_shape_anywhere", not (want - seen))
            for o, s in zip(scene.objects, m):
                add(f"multi{n}_colour", s is not None and s.colour == o.colour)
                add(f"multi{n}_shape", s is not None and s.shape == o.shape)
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(acc.items())}


def evaluate(
    model: str = DEFAULT_MODEL,
    cfgs=(1.0, 3.0, 7.5, 15.0),
    device: str = "auto",
    steps: int = 50,
    progress: bool = True,
    sheet: str | None = None,
    seed0: int = 0,
    sr_model: str | None = None,
    sr_cfg: float = 4.0,
) -> dict:
    """Oracle scores per CFG weight; sample i uses seed ``seed0 + i`` (0: the README's table;
    another value re-draws the noise for the same captions, to see how much the scores move).
    ``sr_model``: a cascade; the base stage's samples go through it (CFG ``sr_cfg``, the same
    steps) and are scored at its size, beside the same samples resized bicubically to it."""
    bb = load_model(model, device)
    sr = load_model(sr_model, device) if sr_model else None
    items = eval_set()
    prompts = [c for _, c in items]
    res = {
        "model": model,
        "sr_model": sr_model,
        "n": len(items),
        "steps": steps,
        "sampler": "ddim",
        "seed0": seed0,
        "by_cfg": {},
    }
    for w in cfgs:
        t = time.time()
        imgs = generate(bb, prompts, w, steps, progress=progress, seed0=seed0)
        if sr is not None:
            hw = (sr.resolution, sr.resolution)
            plain = torch.nn.functional.interpolate(imgs, size=hw, mode="bicubic").clamp(0, 1)
            imgs = upscale(sr, bb, imgs, prompts, sr_cfg, steps, seed0=seed0)
            res.setdefault("plain_upsampling", {})[str(w)] = score(items, plain)
        res["by_cfg"][str(w)] = {**score(items, imgs), "seconds": round(time.time() - t, 1)}
        if sheet and w == cfgs[-1]:
            _sheet(imgs[:32], prompts[:32], sheet)
    return res


def _sheet(imgs: torch.Tensor, prompts: list[str], path: str) -> None:
    from ..grid import contact_sheet
    from ..images import tensor_to_pil

    pil = tensor_to_pil(imgs * 2 - 1)
    rows = [pil[i : i + 8] for i in range(0, len(pil), 8)]
    sheet = contact_sheet(
        rows,
        [f"{i}-{i + 7}" for i in range(0, len(pil), 8)],
        [str(j) for j in range(8)],
        title="held-out captions, first 32",
    )
    sheet.save(path)
    Path(path).with_suffix(".txt").write_text("\n".join(f"{i}: {p}" for i, p in enumerate(prompts)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unitune.embedded.evaluate", description=__doc__)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--cfg", default="1,3,7.5,15", help="comma list of CFG weights")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", help="write the results JSON here")
    ap.add_argument("--sheet", help="write a contact sheet of 32 samples (last CFG) here")
    ap.add_argument("--seed0", type=int, default=0, help="sample i uses seed SEED0 + i")
    ap.add_argument("--sr-model", help="a cascade: its super-resolution stage (e.g. world-if-sr)")
    ap.add_argument("--sr-cfg", type=float, default=4.0, help="the SR stage's CFG (IF's 4)")
    a = ap.parse_args(argv)
    res = evaluate(
        a.model,
        tuple(float(x) for x in a.cfg.split(",")),
        a.device,
        a.steps,
        sheet=a.sheet,
        seed0=a.seed0,
        sr_model=a.sr_model,
        sr_cfg=a.sr_cfg,
    )
    print(json.dumps(res, indent=2))
    if a.out:
        atomic_write_json(a.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
