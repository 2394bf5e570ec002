"""The editing suite: held-out world scenes with their per-image details, one edit of each kind
with a known target, and the keep mask where fidelity is measured (docs/BENCHMARKS.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..world.edits import KINDS, Edit, make_edit
from ..world.oracle import Reading, match, read
from ..world.render import CANVAS, OUTLINE, render, to_pil
from ..world.scene import FULL as FULL_CAPTION
from ..world.scene import Obj, Scene, caption, sample_scene

SUITE_SEED = 2024  # seeds the scene stream and every edit
BOX_RADIUS = 1.2  # every shape fits in a square of half-side 1.2 x its radius (any rotation)
MASK_MARGIN = 4.0  # world units (= pixels at 64 px) added around an edited object's box
BACKGROUND_MASKS = ("objects", "full")  # what background edits keep: the objects' boxes, or all


@dataclass(frozen=True)
class SceneItem:
    sid: str  # "s000", ...
    scene: Scene  # the base scene (held-out split, with per-image details)
    caption: str  # its full caption: the base prompt (tune prompt and prompt-guidance base)
    edits: tuple[Edit, ...]  # one per kind, in BenchConfig.kinds order


def reads_back(scene: Scene, reading: Reading) -> bool:
    """The oracle reads exactly this scene (background, object count, every attribute)."""
    seen = match(scene, reading)
    return (
        reading.background == scene.background
        and len(reading.objects) == len(scene.objects)
        and all(s is not None and s.attrs() == o.attrs() for o, s in zip(scene.objects, seen))
    )


def base_image(scene: Scene, size: int = 64):
    return to_pil(render([scene], size)[0])


def make_suite(n: int, seed: int = SUITE_SEED, kinds: tuple[str, ...] = KINDS) -> list[SceneItem]:
    """The first ``n`` items of one seeded stream of held-out scenes (so a prefix of any longer
    suite); scenes that cannot take every kind, or whose render the oracle misreads, are skipped."""
    rng = np.random.default_rng(seed)
    items: list[SceneItem] = []
    while len(items) < n:
        scene = sample_scene(rng, None, split="eval")
        i = len(items)
        edits = [
            make_edit(scene, k, np.random.default_rng([seed, i, KINDS.index(k)])) for k in kinds
        ]
        if any(e is None for e in edits) or not reads_back(scene, read(base_image(scene))):
            continue
        cap = caption(
            scene, np.random.default_rng(0), FULL_CAPTION
        )  # same draws as the edit prompts'
        items.append(SceneItem(f"s{i:03d}", scene, cap, tuple(edits)))
    return items


def _box(o: Obj, pad: float, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    cx, cy = o.center()
    r = BOX_RADIUS * o.radius() + OUTLINE / 2 + pad
    return ((ys - cy).abs() <= r)[:, None] & ((xs - cx).abs() <= r)[None, :]


def keep_mask(
    source: Scene,
    edit: Edit,
    size: tuple[int, int],
    margin: float = MASK_MARGIN,
    background: str = BACKGROUND_MASKS[0],
) -> torch.Tensor:
    """(1, 1, H, W) float mask, 1 = pixels the edit should NOT touch (where fidelity is measured).

    Object edits (recolour, reshape, outline, add): everything outside the edited object's box,
    the union of its source and target boxes (a square centred on the object, half-side
    1.2 x radius + half an outline stroke, i.e. the whole shape at any rotation, dilated by
    ``margin`` world units; for "add" only the target). Background edits change every background
    pixel: with ``background="objects"`` the mask is the objects' (undilated) boxes, which should
    keep their objects; with ``"full"`` it is the whole image (plain LPIPS / PSNR).
    """
    h, w = size
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * CANVAS / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * CANVAS / w
    if edit.kind == "background":
        if background == "full":
            return torch.ones(1, 1, h, w)
        keep = torch.zeros(h, w, dtype=torch.bool)
        for o in edit.target.objects:
            keep |= _box(o, 0.0, ys, xs)
        return keep.float()[None, None]
    objs = [edit.target.objects[edit.obj]]
    if edit.kind != "add":
        objs.append(source.objects[edit.obj])
    region = torch.zeros(h, w, dtype=torch.bool)
    for o in objs:
        region |= _box(o, margin, ys, xs)
    return (~region).float()[None, None]
