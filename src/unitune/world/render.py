"""Batched signed-distance renderer for world scenes (torch; the same code on CPU and GPU).

Scenes live on a 64 x 64-unit canvas; ``render(scenes, size)`` draws them at any square pixel
size with 1-pixel anti-aliasing, so patches of a 128 px render carry real detail.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .scene import PALETTE, SHAPES, Scene

CANVAS = 64.0
OUTLINE = 2.2  # outline stroke width (units)
STRIPE = 5.0  # stripe period (units): 3 primary, 2 secondary


def shape_sdf(shape: Tensor, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Signed distance (units, < 0 inside) of each object's shape.

    shape: (N,) indices into SHAPES; u, v: (N, H, W) object-frame coordinates (v points down);
    r: (N, 1, 1) radius. All five SDFs are evaluated and gathered: cheaper than branching.
    Exact SDFs (after Inigo Quilez) so that outlines have an even stroke.
    """
    circle = torch.sqrt(u * u + v * v + 1e-12) - r
    h = 0.82 * r
    qx, qy = u.abs() - h, v.abs() - h
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2 + 1e-12)
    square = outside + torch.maximum(qx, qy).clamp(max=0)
    tri = _triangle(u, -v, 1.15 * r * math.sqrt(3) / 2)  # circumradius 1.15 r, point up
    star = _star(u, -v, 1.1 * r, 0.5)
    heart = _heart(u, v, r)
    allsd = torch.stack([circle, square, tri, star, heart])  # (5, N, H, W)
    idx = shape.view(1, -1, 1, 1).expand(1, *u.shape)
    return allsd.gather(0, idx)[0]


def _triangle(x: Tensor, y: Tensor, half_side: Tensor) -> Tensor:
    # equilateral, y up, centroid at the origin
    k = math.sqrt(3.0)
    px = x.abs() - half_side
    py = y + half_side / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.maximum(torch.minimum(px, torch.zeros_like(px)), -2 * half_side)
    return -torch.sqrt(px * px + py * py + 1e-12) * torch.sign(py)


def _star(x: Tensor, y: Tensor, R: Tensor, rf: float) -> Tensor:
    # five-pointed star, y up, outer radius R, inner radius rf * R (roughly)
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px, py = x.abs(), y
    d1 = (k1x * px + k1y * py).clamp(min=0)
    px, py = px - 2 * d1 * k1x, py - 2 * d1 * k1y
    d2 = (k2x * px + k2y * py).clamp(min=0)
    px, py = px - 2 * d2 * k2x, py - 2 * d2 * k2y
    px = px.abs()
    py = py - R
    bax, bay = rf * -k1y, rf * k1x - 1.0
    hh = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(min=0)
    hh = torch.minimum(hh, R.expand_as(hh))
    dx, dy = px - bax * hh, py - bay * hh
    return torch.sqrt(dx * dx + dy * dy + 1e-12) * torch.sign(py * bax - px * bay)


def _heart(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    # the exact heart SDF (Inigo Quilez); its canonical heart spans x in +-0.6, y in [0, 1.1]
    s = r / 0.6
    px = (u / s).abs()
    py = 0.55 - v / s
    d_lobe = torch.sqrt((px - 0.25) ** 2 + (py - 0.75) ** 2 + 1e-12) - math.sqrt(2) / 4
    m = 0.5 * (px + py).clamp(min=0)
    d_a = px**2 + (py - 1.0) ** 2
    d_b = (px - m) ** 2 + (py - m) ** 2
    d_low = torch.sqrt(torch.minimum(d_a, d_b) + 1e-12) * torch.sign(px - py)
    return torch.where(px + py > 1.0, d_lobe, d_low) * s


def _stripe_colour(rgb: Tensor) -> Tensor:
    """Second stripe colour: lighter for dark colours, darker for light ones. (N, 3)"""
    lum = (rgb * torch.tensor([0.3, 0.59, 0.11], device=rgb.device)).sum(-1, keepdim=True)
    return torch.where(lum < 0.55, rgb + 0.55 * (1 - rgb), rgb * 0.45)


def texture_noise(scenes: list[Scene], size: int) -> Tensor:
    """(B, 3, size, size) faint per-image noise, seeded by each scene (CPU: same everywhere)."""
    gen = torch.Generator()
    return torch.stack(
        [
            torch.randn(3, size, size, generator=gen.manual_seed(s.noise_seed)) * s.noise
            for s in scenes
        ]
    )


def render(
    scenes: list[Scene],
    size: int = 64,
    device: str | torch.device = "cpu",
    noise: Tensor | None = None,
) -> Tensor:
    """(B, 3, size, size) float images in [0, 1]. ``noise``: precomputed texture_noise()."""
    dev = torch.device(device)
    B = len(scenes)
    px = CANVAS / size  # units per pixel
    coords = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) * px
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (H, W)
    bg = torch.tensor([PALETTE[s.background] for s in scenes], device=dev)  # (B, 3)
    g = torch.tensor([s.grad for s in scenes], device=dev).view(B, 1, 1)
    gd = torch.tensor([s.grad_dir for s in scenes], device=dev).view(B, 1, 1)
    proj = ((xx - 32) * torch.cos(gd) + (yy - 32) * torch.sin(gd)) / 32  # (B, H, W) in ~[-1.4, 1.4]
    img = bg.view(B, 3, 1, 1) + (g * proj)[:, None]
    objs = [(b, o) for b, s in enumerate(scenes) for o in s.objects]
    if objs:
        n = len(objs)
        bi = torch.tensor([b for b, _ in objs], device=dev)
        cx, cy = (torch.tensor([o.center()[i] for _, o in objs], device=dev) for i in (0, 1))
        r = torch.tensor([o.radius() for _, o in objs], device=dev).view(n, 1, 1)
        ang = torch.tensor([math.radians(o.angle) for _, o in objs], device=dev).view(n, 1, 1)
        shape = torch.tensor([SHAPES.index(o.shape) for _, o in objs], device=dev)
        dx, dy = xx - cx.view(n, 1, 1), yy - cy.view(n, 1, 1)
        u = dx * torch.cos(ang) + dy * torch.sin(ang)  # rotate the frame by -angle
        v = -dx * torch.sin(ang) + dy * torch.cos(ang)
        d = shape_sdf(shape, u, v, r)  # (n, H, W) units
        outline = torch.tensor([o.style == "outline" for _, o in objs], device=dev).view(n, 1, 1)
        d = torch.where(outline, d.abs() - OUTLINE / 2, d)
        alpha = (0.5 - d / px).clamp(0, 1)  # 1-pixel anti-aliasing
        rgb = torch.tensor([PALETTE[o.colour] for _, o in objs], device=dev)  # (n, 3)
        striped = torch.tensor([o.style == "striped" for _, o in objs], device=dev)
        phase = torch.tensor([o.stripe_phase for _, o in objs], device=dev).view(n, 1, 1)
        second = torch.remainder(v + phase, STRIPE) >= 3.0  # (n, H, W)
        use2 = (second & striped.view(n, 1, 1))[:, None]
        col = torch.where(use2, _stripe_colour(rgb)[:, :, None, None], rgb[:, :, None, None])
        # objects never overlap (slots are not 4-adjacent): composite them in one pass
        over = torch.zeros_like(img)
        cover = torch.zeros(B, 1, size, size, device=dev)
        over.index_add_(0, bi, alpha[:, None] * col)
        cover.index_add_(0, bi, alpha[:, None])
        img = img * (1 - cover.clamp(max=1)) + over
    if noise is None:
        noise = texture_noise(scenes, size)
    return (img + noise.to(dev)).clamp(0, 1)


def to_pil(x: Tensor):
    """(3, H, W) in [0, 1] -> PIL RGB."""
    from PIL import Image

    a = (x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(a)
