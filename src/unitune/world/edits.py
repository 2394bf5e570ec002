"""Edits on world scenes with known targets, and the oracle's verdict on an edited image.

An edit changes one thing (recolour / reshape / add an object / change the background /
restyle to outline). Its prompt is the full caption of the target scene, the way a user would
describe the picture they want. The verdict compares the oracle's reading of the edited image
with the target (success) and with the reading of the ORIGINAL image (preservation: every
attribute the edit did not ask to change stays as it was).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .oracle import Reading, match
from .scene import (
    BACKGROUNDS,
    FULL,
    OBJECT_COLOURS,
    POSITIONS,
    SHAPES,
    Obj,
    Scene,
    _free_slots,
    caption,
    random_details,
)
from .scene import SLOT as _SLOT

KINDS = ("recolour", "reshape", "add", "background", "outline")
ATTRS = ("colour", "shape", "style", "size", "pos")


@dataclass(frozen=True)
class Edit:
    kind: str
    target: Scene  # the scene the edit asks for
    prompt: str  # full caption of the target
    obj: int | None  # index (in target.objects) of the edited / added object


def make_edit(scene: Scene, kind: str, rng: np.random.Generator) -> Edit | None:
    """One edit of ``kind`` on ``scene`` (None when impossible, e.g. no free slot to add)."""
    objs = list(scene.objects)
    i = 0  # the first object is the one edited
    if kind == "recolour":
        new = [c for c in OBJECT_COLOURS if c not in (objs[i].colour, scene.background)]
        objs[i] = replace(objs[i], colour=str(rng.choice(new)))
    elif kind == "reshape":
        objs[i] = replace(objs[i], shape=str(rng.choice([s for s in SHAPES if s != objs[i].shape])))
    elif kind == "outline":
        if objs[i].style == "outline":
            return None
        objs[i] = replace(objs[i], style="outline")
    elif kind == "add":
        free = _free_slots([_SLOT[o.pos] for o in objs])
        if not free:
            return None
        slot = free[int(rng.integers(len(free)))]
        o = Obj(
            str(rng.choice(SHAPES)),
            str(rng.choice([c for c in OBJECT_COLOURS if c != scene.background])),
            "small",
            "filled",
            POSITIONS[slot],
        )
        objs.append(random_details(rng, o))
        i = len(objs) - 1
    elif kind == "background":
        used = {o.colour for o in objs} | {scene.background}
        scene = replace(
            scene, background=str(rng.choice([b for b in BACKGROUNDS if b not in used]))
        )
        i = None
    else:
        raise ValueError(kind)
    target = replace(scene, objects=tuple(objs))
    return Edit(kind, target, caption(target, np.random.default_rng(0), FULL), i)


def judge(edit: Edit, before: Reading, after: Reading) -> dict:
    """{"success": bool, "preservation": float in [0, 1], "details": {...}}.

    success: the edited image shows what the edit asked for (background, or the edited object's
    colour+shape+style at its slot) and the object count is right. preservation: the fraction
    of the other attributes (background unless edited; every other object's colour, shape,
    style, size, position; the edited object's unasked attributes) that read the same as on
    the original image.
    """
    t = edit.target
    now = match(t, after)
    was = match(t, before)
    ok_count = len(after.objects) == len(t.objects)
    if edit.kind == "background":
        hit = after.background == t.background
    else:
        o, s = t.objects[edit.obj], now[edit.obj]
        want = {
            "recolour": ("colour",),
            "reshape": ("shape",),
            "outline": ("style",),
            "add": ("colour", "shape"),
        }[edit.kind]
        hit = s is not None and all(getattr(s, a) == getattr(o, a) for a in want)
    kept, total = 0, 0
    if edit.kind != "background":
        total += 1
        kept += after.background == before.background
    for j, (a, b) in enumerate(zip(was, now)):
        if j == edit.obj and edit.kind == "add":
            continue
        for attr in ATTRS:
            if j == edit.obj and (edit.kind, attr) in (
                ("recolour", "colour"),
                ("reshape", "shape"),
                ("outline", "style"),
            ):
                continue
            total += 1
            kept += a is not None and b is not None and getattr(a, attr) == getattr(b, attr)
    return {
        "success": bool(hit and ok_count),
        "edit_hit": bool(hit),
        "count_ok": ok_count,
        "preservation": kept / max(total, 1),
    }
