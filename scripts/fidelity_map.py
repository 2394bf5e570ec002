"""Derive the ``--fidelity`` map from a ``unitune bench edits`` run (see unitune/fidelity_knob.py).

    python scripts/fidelity_map.py runs/bench-medium/results.json \
        --out src/unitune/assets/fidelity_map.json

Takes the per-config means of the plain UniTune configs (method "unitune": checkpoint x t0 x
CFG), keeps their success-vs-fidelity Pareto frontier, and writes it with where it came from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unitune.bench.report import pareto_front
from unitune.fileio import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json of a unitune bench edits run")
    ap.add_argument("--out", default="src/unitune/assets/fidelity_map.json")
    ap.add_argument("--method", default="unitune", help="which method's configs (default unitune)")
    a = ap.parse_args()
    data = json.loads(Path(a.results).read_text())
    rows = [r for r in data["configs"] if r["method"] == a.method]
    if not rows:
        raise SystemExit(f"no {a.method!r} configs in {a.results}")
    front = [rows[i] for i in pareto_front([(r["fidelity"], r["success"]) for r in rows])]
    keys = ("checkpoint", "t0", "cfg", "success", "fidelity", "preservation", "n")
    s = data["summary"]
    out = {
        "about": "UniTune's success-vs-fidelity Pareto frontier on the embedded world model; "
        "fidelity = 1 - LPIPS to the base outside the edited object; success = oracle verdict",
        "source": {
            "results": a.results,
            "title": s["title"],
            "samples": s["n_samples"],
            "configs_considered": len(rows),
            "method": a.method,
            "model_digest": s.get("model_digest"),  # the weights it was measured on
            "bench_config": {
                k: s["config"][k]
                for k in (
                    "n_scenes",
                    "seeds",
                    "steps",
                    "tune_steps",
                    "unitune_checkpoints",
                    "unitune_t0s",
                    "unitune_cfgs",
                    "unitune_extra",
                )
            },
        },
        "command": "python scripts/fidelity_map.py " + a.results + " --out " + a.out,
        "points": [{k: r[k] for k in keys} for r in front],  # fidelity ascending
    }
    atomic_write_json(Path(a.out), out)
    for p in out["points"]:
        print(
            f"c{p['checkpoint']:<4} t0={p['t0']:<4g} w={p['cfg']:<4g} success {p['success']:.2f}"
            f"  fidelity {p['fidelity']:.3f}"
        )


if __name__ == "__main__":
    main()
