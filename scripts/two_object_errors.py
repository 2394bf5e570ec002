"""What goes wrong on two-object captions: each of the evaluation's 96 two-object scenes sorted
into one failure kind (README, "The embedded model").

    python scripts/two_object_errors.py --model world --cfg 7.5 --out docs/two_object_errors.json

Same scenes, captions, seeds and sampler as ``python -m unitune.embedded.evaluate`` (whose
``multi2_all_colour_shape`` counts the "right" ones); the batches differ, and CPU float sums with
them, so a sample or two can come out differently from the table's.
"""

from __future__ import annotations

import argparse
from collections import Counter

from unitune.backbones import load_model
from unitune.embedded.evaluate import COUNTS, all_colour_shape_right, eval_set, generate
from unitune.fileio import atomic_write_json
from unitune.world.oracle import match, read


def kind(scene, reading) -> str:
    """One label per scene, the first that applies."""
    want = Counter((o.colour, o.shape) for o in scene.objects)
    seen = Counter((s.colour, s.shape) for s in reading.objects)
    if all_colour_shape_right(scene, match(scene, reading)):
        return "right"
    if len(reading.objects) != len(scene.objects):
        return "wrong object count"
    if not (want - seen):
        return "right objects, in each other's places"
    if len(seen) == 1:
        return "one object drawn twice"
    colours, shapes = {c for c, _ in want}, {s for _, s in want}
    if all(c in colours and s in shapes for c, s in (seen - want).elements()):
        return "colour and shape swapped between the objects"
    return "an attribute neither object has"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="world")
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    bb = load_model(a.model, a.device)
    items = eval_set()
    first = COUNTS[1]  # the eval set is ordered 1-, 2-, 3-object; seed = index in it
    two = items[first : first + COUNTS[2]]
    imgs = generate(bb, [c for _, c in two], a.cfg, a.steps, seed0=first)
    kinds = Counter(kind(s, read(im)) for (s, _), im in zip(two, imgs))
    res = {
        "model": a.model,
        "cfg": a.cfg,
        "steps": a.steps,
        "n": len(two),
        "kinds": dict(kinds.most_common()),
    }
    print(res)
    if a.out:
        atomic_write_json(a.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
