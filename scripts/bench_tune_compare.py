"""LoRA vs full fine-tuning on the editing benchmark: the same scenes, seeds, noise and configs.

    unitune bench edits --preset tune-compare --tune-method lora --out runs/bench-lora
    python scripts/bench_tune_compare.py runs/bench-medium/results.json runs/bench-lora/results.json

The tune-compare preset is a subset of the medium one, so the full-method samples are the medium
run's own (restricted to the same scenes, seeds and configs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from unitune.fileio import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("full", help="results.json of the full-method run (e.g. the medium preset)")
    ap.add_argument("lora", help="results.json of the --tune-method lora run")
    ap.add_argument("--out", default="docs/tune_compare.json")
    a = ap.parse_args()
    lora = json.loads(Path(a.lora).read_text())
    full = json.loads(Path(a.full).read_text())
    key = lambda r: (r["method"], r["label"], r["scene"], r["kind"], r["seed"])  # noqa: E731
    lk = {key(r): r for r in lora["records"]}
    fk = {key(r): r for r in full["records"] if key(r) in lk}
    missing = len(lk) - len(fk)
    rows = []
    for lab in sorted({(k[0], k[1]) for k in fk}):
        ks = [k for k in fk if (k[0], k[1]) == lab]
        row = {"method": lab[0], "label": lab[1], "n": len(ks)}
        for name, d in (("full", fk), ("lora", lk)):
            for m in ("success", "fidelity", "lpips_full"):
                row[f"{name}_{m}"] = round(float(np.mean([d[k][m] for k in ks])), 4)
        rows.append(row)
    tot = {}
    for name, d in (("full", fk), ("lora", lk)):
        edits = [k for k in fk if k[0] != "reconstruct"]
        tot[name] = {
            m: round(float(np.mean([d[k][m] for k in edits])), 4) for m in ("success", "fidelity")
        }
    tune_s = {"lora": [s["seconds"]["tune"] for s in lora["summary"]["scenes"]]}
    out = {
        "command": f"python scripts/bench_tune_compare.py {a.full} {a.lora} --out {a.out}",
        "lora_settings": lora["summary"]["config"]["tune_extra"],
        "unmatched": missing,
        "edits_mean": tot,
        "tune_seconds": tune_s,
        "rows": rows,
    }
    atomic_write_json(Path(a.out), out)
    print(f"unmatched lora samples: {missing}; edit means {tot}")
    for r in rows:
        print(
            f"{r['method']:<15} {r['label']:<16} "
            f"full {r['full_success']:.2f}/{r['full_fidelity']:.3f}"
            f"  lora {r['lora_success']:.2f}/{r['lora_fidelity']:.3f}  (n {r['n']})"
        )


if __name__ == "__main__":
    main()
