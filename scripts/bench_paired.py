"""Paired differences between configs of a ``unitune bench edits`` run, with a bootstrap 95%
interval over scenes (how docs/BENCHMARKS.md "Defaults" compares the edit defaults).

    python scripts/bench_paired.py runs/bench-full/results.json \\
        --pair "unitune:c128 t0=1 w=7.5" "unitune+interp:c32 t0=0.9 w=7.5" \\
        --out docs/defaults_full.json

A config is "METHOD:LABEL" as in configs.csv. For each --pair A B: the mean over scenes of
(B − A) in success and fidelity, where each scene contributes its own per-config means (so
both configs see the same scenes, edits and seeds), and the 2.5/97.5 percentiles of that mean
over scene resamples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from unitune.fileio import atomic_write_json

METRICS = ("success", "fidelity")


def per_scene(recs: list[dict], config: str) -> dict[str, np.ndarray]:
    """scene -> (success, fidelity) means of one config."""
    method, label = config.split(":", 1)
    acc: dict[str, list[list[float]]] = {}
    for r in recs:
        if r["method"] == method and r["label"] == label:
            acc.setdefault(r["scene"], []).append([float(r[m]) for m in METRICS])
    if not acc:
        raise SystemExit(f"no records of {config!r}: use METHOD:LABEL as in configs.csv")
    return {s: np.mean(v, axis=0) for s, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"))
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples over scenes")
    ap.add_argument("--out", help="JSON file for the table")
    a = ap.parse_args()
    recs = json.loads(Path(a.results).read_text())["records"]
    rng = np.random.default_rng(0)
    rows = []
    for ca, cb in a.pair:
        pa, pb = per_scene(recs, ca), per_scene(recs, cb)
        scenes = sorted(set(pa) & set(pb))
        d = np.stack([pb[s] - pa[s] for s in scenes])  # (scenes, 2)
        boot = np.stack([d[rng.integers(0, len(d), len(d))].mean(0) for _ in range(a.boot)])
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        row = {"a": ca, "b": cb, "scenes": len(scenes)}
        for j, m in enumerate(METRICS):
            row[m] = {
                "a": round(float(np.mean([pa[s][j] for s in scenes])), 4),
                "b": round(float(np.mean([pb[s][j] for s in scenes])), 4),
                "diff": round(float(d[:, j].mean()), 4),
                "ci95": [round(float(lo[j]), 4), round(float(hi[j]), 4)],
            }
        rows.append(row)
        print(
            f"{cb} − {ca} ({len(scenes)} scenes): "
            + "; ".join(
                f"{m} {row[m]['diff']:+.3f} [{row[m]['ci95'][0]:+.3f}, {row[m]['ci95'][1]:+.3f}]"
                for m in METRICS
            )
        )
    if a.out:
        cmd = (
            "python scripts/bench_paired.py "
            + a.results
            + "".join(f' --pair "{x}" "{y}"' for x, y in a.pair)
            + f" --out {a.out}"
        )
        atomic_write_json(Path(a.out), {"command": cmd, "pairs": rows})


if __name__ == "__main__":
    main()
