"""Which of the benchmark's edits does the model render at all? Pooled over every config of a
full run, per edit: a ceiling that no choice of method, start, mask or route can pass.

    python scripts/edit_ceiling.py docs/bench-full/scene-results --out docs/edit_ceiling.json

Reads a run's per-scene results (a WORK folder's ``*/results.json`` or the stored
``*.json.gz``; the full preset samples ~190 configs x 2 seeds of every edit: SDEdit, UniTune at
every checkpoint, t0 and CFG up to 32, prompt guidance, SINE). For each edit it pools the
success of every sample (the reconstructions excepted) and takes its best config's mean (a max
over many noisy means: an optimistic bound). An edit whose best config succeeds in at most
``--hard`` of its samples (0.5: no config renders it on both seeds of a 2-seed run) is one the
model does not render reliably however it is asked: its failures belong to the model, not to the
edit method. (Pooled success alone does not say this: a weak config, CFG 1 or an early t0,
fails most edits, and the full run has many.)
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from unitune.bench.suite import make_suite
from unitune.fileio import atomic_write_json


def scenes(src: Path) -> list[dict]:
    files = sorted(src.glob("*.json.gz")) or sorted(src.glob("*/results.json"))
    if not files:
        raise SystemExit(f"no scene results under {src}")
    read = [gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes() for f in files]
    return [json.loads(b) for b in read]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="stored scene results or a bench WORK folder")
    ap.add_argument("--hard", type=float, default=0.5, help="best config at most this: hard")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    data = scenes(args.src)
    fingerprints = sorted({d["fingerprint"] for d in data})
    per: dict[tuple[str, str], dict[str, list[float]]] = {}
    for d in data:
        for r in d["records"]:
            if r["method"] == "reconstruct":
                continue
            config = f"{r['method']}:{r['label']}"
            per.setdefault((r["scene"], r["kind"]), {}).setdefault(config, []).append(r["success"])
    # what each edit asks for (the suite's default stream: the full preset's): how many objects
    # its target has, and the shape of the object it edits or adds
    asks = {
        (item.sid, e.kind): (
            len(e.target.objects),
            None if e.obj is None else e.target.objects[e.obj].shape,
        )
        for item in make_suite(1 + max(int(sc[1:]) for sc, _ in per))
        for e in item.edits
    }
    edits = []
    for (scene, kind), by_config in sorted(per.items()):
        pooled = [s for v in by_config.values() for s in v]
        edits.append(
            {
                "scene": scene,
                "kind": kind,
                "samples": len(pooled),
                "configs": len(by_config),
                "pooled success": round(float(np.mean(pooled)), 4),
                "best config": round(float(max(np.mean(v) for v in by_config.values())), 4),
                "objects": asks[(scene, kind)][0],
                "shape": asks[(scene, kind)][1],
            }
        )
    kinds = sorted({e["kind"] for e in edits})
    summary = {}
    for kind in kinds:
        es = [e for e in edits if e["kind"] == kind]
        hard = [e for e in es if e["best config"] <= args.hard]
        # the hard share by the target's object count and by the edited object's shape
        by = {}
        for field in ("objects", "shape"):
            values = sorted({e[field] for e in es}, key=str)
            group = {v: [e for e in es if e[field] == v] for v in values}
            by[f"by {field}"] = {
                str(v): f"{sum(e in hard for e in g)} / {len(g)}" for v, g in group.items()
            }
        summary[kind] = {
            "edits": len(es),
            "pooled success": round(float(np.mean([e["pooled success"] for e in es])), 3),
            "best config, mean": round(float(np.mean([e["best config"] for e in es])), 3),
            "hard": len(hard),
            "hard, pooled": round(float(np.mean([e["pooled success"] for e in hard])), 4)
            if hard
            else None,
            "hard edits": [e["scene"] for e in hard],
            **by,
        }
    out = {
        "source": str(args.src),
        "fingerprints": fingerprints,
        "scenes": len(data),
        "hard: best config at most": args.hard,
        "per kind": summary,
        "edits": edits,
    }
    atomic_write_json(args.out, out)
    print(f"{len(data)} scenes, {len(edits)} edits, fingerprints {fingerprints}")
    print("| kind | pooled success | best config (mean) | hard edits | their pooled success |")
    print("|---|---|---|---|---|")
    for kind, s in summary.items():
        print(
            f"| {kind} | {s['pooled success']:.3f} | {s['best config, mean']:.3f} | "
            f"{s['hard']} / {s['edits']} | {s['hard, pooled']} |"
        )
    for kind, s in summary.items():
        if s["hard"]:
            print(f"{kind}: hard by objects {s['by objects']}, by shape {s['by shape']}")


if __name__ == "__main__":
    main()
