"""The oracle: reads a world image (rendered or generated) and returns its scene.

Steps: fit the background as a colour plane to the border (gradients cancel), mark pixels far
from it as foreground, group nearby foreground (stripes and broken outlines join), then per
object: colour by a vote of its pixels' nearest palette colours, style from how much of its
interior is foreground and of the main colour, shape and size by matching rendered templates
(5 shapes x 7 rotations, sized to the blob's area) by IoU, and position from the centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage

from .render import CANVAS, OUTLINE, shape_sdf
from .scene import CELL_CENTERS, OBJECT_COLOURS, PALETTE, POSITIONS, RADIUS, SHAPES, Scene

FG_DIST = 0.2  # RGB distance (0..1 units) from the background plane that counts as foreground
VOTE_DIST = 0.3  # pixels further than this from every palette colour do not vote
MIN_AREA = 6.0  # units^2; smaller blobs are noise
ANGLES = np.radians(np.linspace(-18, 18, 7))
SIZE_SPLIT = (RADIUS["small"] * 1.1 + RADIUS["large"] * 0.9) / 2  # jitter is +-10%


@dataclass(frozen=True)
class Seen:
    colour: str
    shape: str
    style: str
    size: str
    pos: str
    cx: float  # centroid (units)
    cy: float
    radius: float  # equivalent radius of the best template (units)
    iou: float  # template match quality

    def attrs(self) -> tuple[str, str, str, str, str]:
        return (self.colour, self.shape, self.size, self.style, self.pos)


@dataclass(frozen=True)
class Reading:
    background: str
    objects: tuple[Seen, ...] = field(default_factory=tuple)


def _pal(names) -> np.ndarray:
    return np.array([PALETTE[n] for n in names], dtype=np.float32)


@lru_cache(maxsize=1)
def _shape_stats() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per shape: area / r^2, perimeter / r and centroid offset / r (angle 0), on a fine grid."""
    n, r = 512, 1.0
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 3 - 1.5
    v, u = torch.meshgrid(c, c, indexing="ij")
    k = torch.arange(len(SHAPES))
    d = shape_sdf(k, u.expand(len(k), n, n), v.expand(len(k), n, n), torch.full((len(k), 1, 1), r))
    inside = (d < 0).float()
    cell = (3 / n) ** 2
    area = inside.sum((1, 2)) * cell
    perim = ((d < 0.05).float().sum((1, 2)) * cell - area) / 0.05
    ox = (inside * u).sum((1, 2)) * cell / area
    oy = (inside * v).sum((1, 2)) * cell / area
    return area.numpy(), perim.numpy(), torch.stack([ox, oy], 1).numpy()


def _background(img: np.ndarray) -> tuple[np.ndarray, str]:
    """(H, W, 3) plane fitted to the border, and the background's colour name."""
    h, w, _ = img.shape
    b = max(1, h // 32)
    ring = np.zeros((h, w), bool)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    px = img[ys, xs]
    med = np.median(px, 0)
    keep = np.linalg.norm(px - med, axis=1) < FG_DIST  # objects touching the border drop out
    ys, xs, px = ys[keep], xs[keep], px[keep]
    A = np.stack([np.ones_like(xs), xs / w - 0.5, ys / h - 0.5], 1).astype(np.float32)
    coef, *_ = np.linalg.lstsq(A, px, rcond=None)
    yy, xx = np.mgrid[0:h, 0:w]
    plane = coef[0] + (xx / w - 0.5)[..., None] * coef[1] + (yy / h - 0.5)[..., None] * coef[2]
    names = list(PALETTE)
    name = names[int(np.argmin(np.linalg.norm(_pal(names) - coef[0], axis=1)))]
    return plane, name


def _colour(pixels: np.ndarray) -> tuple[str, np.ndarray]:
    pal = _pal(OBJECT_COLOURS)
    d = np.linalg.norm(pixels[:, None] - pal[None], axis=2)  # (P, C)
    near = d.argmin(1)
    ok = d.min(1) < VOTE_DIST
    votes = np.bincount(near[ok], minlength=len(pal)) if ok.any() else np.bincount(near)
    best = int(votes.argmax())
    return OBJECT_COLOURS[best], near == best


def _match_shape(
    filled: np.ndarray, units: float, grow: float, ring: bool = False
) -> tuple[str, float, float]:
    """Best (shape, radius in units, IoU) for a filled blob mask. ``grow``: the blob is the shape
    dilated by this many units (half an outline's stroke), so templates are dilated alike.
    ``ring``: the mask is an outline's stroke itself (|sdf| < grow), not the filled shape."""
    area_r2, perim_r, offs = _shape_stats()
    h, w = filled.shape
    ys, xs = np.nonzero(filled)
    cx, cy = (xs.mean() + 0.5) * units, (ys.mean() + 0.5) * units
    area = filled.sum() * units**2
    k = np.repeat(np.arange(len(SHAPES)), len(ANGLES))
    ang = np.tile(ANGLES, len(SHAPES))
    # area of a shape of radius r dilated by g: c r^2 + p g r + pi g^2 (Steiner); solve for r
    c, p, g = area_r2[k], perim_r[k], grow
    # a stroke of width 2g along the rim covers about 2 g (perimeter) = 2 g p r
    r = (
        area / (2 * g * p)
        if ring
        else (-p * g + np.sqrt(np.maximum(p * p * g * g - 4 * c * (math.pi * g * g - area), 0)))
        / (2 * c)
    )
    # place each template so ITS centroid lands on the blob's centroid
    ox, oy = offs[k, 0] * r, offs[k, 1] * r
    ocx = cx - (ox * np.cos(ang) - oy * np.sin(ang))
    ocy = cy - (ox * np.sin(ang) + oy * np.cos(ang))
    coords = (torch.arange(max(h, w), dtype=torch.float32) + 0.5) * units
    yy, xx = torch.meshgrid(coords[:h], coords[:w], indexing="ij")
    t = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 1)  # noqa: E731
    dx, dy = xx - t(ocx), yy - t(ocy)
    a = t(ang)
    u = dx * torch.cos(a) + dy * torch.sin(a)
    v = -dx * torch.sin(a) + dy * torch.cos(a)
    d = shape_sdf(torch.tensor(k), u, v, t(r))
    tmpl = ((d.abs() if ring else d) < grow).numpy()  # (35, H, W)
    inter = (tmpl & filled).sum((1, 2))
    union = (tmpl | filled).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    best = int(iou.argmax())
    return SHAPES[k[best]], float(r[best]), float(iou[best])


def _slot(cx: float, cy: float) -> str:
    third = CANVAS / 3
    col = min(2, max(0, int(cx // third)))
    row = min(2, max(0, int(cy // third)))
    return POSITIONS[(row, col)]


def read(image) -> Reading:
    """Read one image: PIL, (H, W, 3) uint8/float array, or (3, H, W) tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        img = image.detach().float().cpu().permute(1, 2, 0).numpy()
    else:
        img = np.asarray(image)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h, w, _ = img.shape
    units = CANVAS / h
    plane, bg = _background(img)
    fg = np.linalg.norm(img - plane, axis=2) > FG_DIST
    grow = max(1, round(2 / units))  # join stripes and broken outlines (gaps <= 2 units)
    groups, n = ndimage.label(ndimage.binary_dilation(fg, iterations=grow))
    seen = []
    for g in range(1, n + 1):
        blob = fg & (groups == g)
        if blob.sum() * units**2 < MIN_AREA:
            continue
        closed = ndimage.binary_closing(blob, iterations=grow, border_value=0) | blob
        filled = ndimage.binary_fill_holes(closed)
        core = ndimage.binary_erosion(blob)  # anti-aliased / blurred rims do not vote
        core = core if core.sum() >= 4 else blob
        colour, _ = _colour(img[core])
        _, is_main = _colour(img[blob])
        main = np.zeros_like(blob)
        main[blob] = is_main
        # outline: the stroke (2.2 units) hugs the rim, so the deep inside is background
        deep = filled
        for depth in (3.0, 2.0, 1.0):
            eroded = ndimage.binary_erosion(filled, iterations=max(1, round(depth / units)))
            if eroded.sum() >= 3:
                deep = eroded
                break
        inner = ndimage.binary_erosion(filled)
        inner = inner if inner.sum() >= 3 else filled
        if blob[deep].mean() < 0.3:
            style = "outline"
        elif blob[inner].mean() < 0.85 or main[inner].mean() < 0.8:
            style = "striped"  # a second colour (or background-like gaps) alternates inside
        else:
            style = "filled"
        if style == "striped" and blob[inner].mean() < 0.85:
            # background-like gaps inside: a small outline's stroke fills most of its interior,
            # so also try explaining the blob as a stroke and keep whichever fits it better
            ring = _match_shape(blob, units, OUTLINE / 2, ring=True)
            if ring[2] > 0.55:  # measured: small outline stars 0.69-0.91, striped <= 0.44
                style = "outline"
        shape, r, iou = _match_shape(filled, units, OUTLINE / 2 if style == "outline" else 0.0)
        ys, xs = np.nonzero(filled)
        cx, cy = (xs.mean() + 0.5) * units, (ys.mean() + 0.5) * units
        size = "large" if r > SIZE_SPLIT else "small"
        seen.append(Seen(colour, shape, style, size, _slot(cx, cy), cx, cy, r, iou))
    seen.sort(key=lambda s: (s.cy, s.cx))
    return Reading(bg, tuple(seen))


# --- comparing a reading with the scene a caption asked for ----------------------------------


def match(scene: Scene, reading: Reading) -> list[Seen | None]:
    """For each object of ``scene``: the seen object nearest to its slot centre (or None).

    Greedy by distance; each seen object is used once.
    """
    from .scene import SLOT

    pairs = []
    for i, o in enumerate(scene.objects):
        r, c = SLOT[o.pos]
        for j, s in enumerate(reading.objects):
            pairs.append((math.hypot(s.cx - CELL_CENTERS[c], s.cy - CELL_CENTERS[r]), i, j))
    out: list[Seen | None] = [None] * len(scene.objects)
    used = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = reading.objects[j]
            used.add(j)
    return out
