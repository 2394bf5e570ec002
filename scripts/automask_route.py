"""Routing an edit by its automatic mask's map, measured on a bench run without new samples.

    python scripts/automask_route.py runs/amr/results.json docs/automask_maps.json \
        --out docs/automask_route.json

The map's spread (std / mean; scripts/automask_maps.py) tells a global edit from a local one
before anything is sampled: a local edit's map is a few bright cells, a global edit's a broad
field. A routed edit samples one config when the spread is below ``--spread`` and another when
it is not. Samples are per (config, scene, edit, seed), so a routed method's samples are exactly
those of the config it picks for each edit: its scores are taken from the run's records, no
sampling needed. Each route is paired over scenes against the default edit (bootstrap 95%),
as scripts/bench_keep.py pairs configs; every edit weighs the same (the inversion configs
sample one seed, the noise starts four). The spread cut is read off the same scenes it is
scored on (in-sample): the full preset's further scenes are the check it still needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_keep import METRICS, paired  # noqa: E402

from unitune.fileio import atomic_write_json  # noqa: E402

DEFAULT = "unitune+interp:c32 t0=0.9 w=7.5"
LOCAL = "unitune+inversion-neg+automask+interp:c32 t0=0.8 w=3"  # the most faithful keep config
GLOBALS = (  # what a global edit samples instead
    "unitune+interp:c32 t0=0.9 w=7.5",  # the default edit (the tuned model, noise start)
    "unitune+inversion-neg+interp:c32 t0=0.8 w=3",  # the local config without the mask
    "sdedit+interp:t0=0.9 w=7.5",  # the pretrained model (checkpoint 0, no rare token)
    "sdedit+interp:t0=1 w=7.5",
)


def per_edit(recs: list[dict], config: str) -> dict[tuple[str, str], np.ndarray]:
    """(scene, kind) -> mean (success, fidelity) of one config over its seeds."""
    method, label = config.split(":", 1)
    acc: dict[tuple[str, str], list[list[float]]] = {}
    for r in recs:
        if r["method"] == method and r["label"] == label:
            acc.setdefault((r["scene"], r["kind"]), []).append([float(r[m]) for m in METRICS])
    if not acc:
        raise SystemExit(f"no records of {config!r}")
    return {k: np.mean(v, axis=0) for k, v in acc.items()}


def by_scene(edits: dict[tuple[str, str], np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for (scene, _), v in edits.items():
        out.setdefault(scene, []).append(v)
    return {s: np.mean(v, axis=0) for s, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a bench run's results.json")
    ap.add_argument("maps", type=Path, help="scripts/automask_maps.py's JSON of the same run")
    ap.add_argument("--spread", type=float, default=0.85, help="below: a global edit")
    ap.add_argument("--setting", default="tuned c32 w3", help="the maps' setting (LOCAL's mask)")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    recs = json.loads(args.results.read_text())["records"]
    spread = {
        (r["scene"], r["kind"]): r["spread"]
        for r in json.loads(args.maps.read_text())["rows"]
        if r["setting"] == args.setting
    }
    is_global = {k: v < args.spread for k, v in spread.items()}
    rng = np.random.default_rng(0)
    base = by_scene(per_edit(recs, DEFAULT))
    local = per_edit(recs, LOCAL)
    kinds = sorted({k for _, k in local})
    routed_as = {k: sorted(s for (s, kk), g in is_global.items() if g and kk == k) for k in kinds}
    rows = []
    for config in dict.fromkeys((DEFAULT, LOCAL, *GLOBALS)):  # the default once
        rows.append(
            {"route": config, **paired(base, by_scene(per_edit(recs, config)), rng, args.boot)}
        )
    for g in GLOBALS:
        other = per_edit(recs, g)
        edits = {k: (other[k] if is_global[k] else v) for k, v in local.items()}
        row = {"route": f"global -> {g}; local -> {LOCAL}"}
        row |= paired(base, by_scene(edits), rng, args.boot)
        row["success by kind"] = {
            kind: round(float(np.mean([v[0] for (s, k), v in edits.items() if k == kind])), 3)
            for kind in kinds
        }
        rows.append(row)
    out = {
        "results": str(args.results),
        "spread below which an edit is global": args.spread,
        "edits routed as global, per kind": routed_as,
        "default": DEFAULT,
        "rows": rows,
    }
    atomic_write_json(args.out, out)
    print(f"global edits: { {k: len(v) for k, v in routed_as.items()} }")
    print(
        "| route | success | fidelity | d success [95%] | d fidelity [95%] |\n|---|---|---|---|---|"
    )
    for r in rows:
        s, f = r["success"], r["fidelity"]
        fmt = "{:+.3f} [{:+.3f}, {:+.3f}]"
        print(
            f"| {r['route']} | {s['value']:.3f} | {f['value']:.3f} | "
            f"{fmt.format(s['diff'], *s['ci95'])} | {fmt.format(f['diff'], *f['ci95'])} |"
        )


if __name__ == "__main__":
    main()
