"""What the edit keeps, measured: every config of a ``unitune bench edits`` run against the
edit default, paired over scenes with a bootstrap 95% interval, overall and per edit kind; each
method's Pareto frontier against SDEdit's at every fidelity; and the reconstruction ceiling per
start. Writes the JSON the docs' tables come from and prints them as markdown.

    python scripts/bench_keep.py runs/bench-medium/results.json --out docs/keep_medium.json

A config is "METHOD:LABEL" as in configs.csv. ``--default`` is today's default edit
(``unitune+interp:c32 t0=0.9 w=7.5``); ``--goal S F`` the issue's target (success >= S at
fidelity >= F, 0.85 / 0.85).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from unitune.bench.report import aggregate, frontiers
from unitune.fileio import atomic_write_json

METRICS = ("success", "fidelity")


def per_scene(recs: list[dict], method: str, label: str, kind: str | None) -> dict[str, np.ndarray]:
    """scene -> (success, fidelity) means of one config (over its edits of ``kind`` and seeds)."""
    acc: dict[str, list[list[float]]] = {}
    for r in recs:
        if r["method"] == method and r["label"] == label and kind in (None, r["kind"]):
            acc.setdefault(r["scene"], []).append([float(r[m]) for m in METRICS])
    return {s: np.mean(v, axis=0) for s, v in acc.items()}


def paired(pa: dict, pb: dict, rng, boot: int) -> dict:
    """Mean over the common scenes of b - a, with the bootstrap 95% interval of that mean."""
    scenes = sorted(set(pa) & set(pb))
    d = np.stack([pb[s] - pa[s] for s in scenes])  # (scenes, 2)
    draws = np.stack([d[rng.integers(0, len(d), len(d))].mean(0) for _ in range(boot)])
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return {
        m: {
            "value": round(float(np.mean([pb[s][j] for s in scenes])), 4),
            "diff": round(float(d[:, j].mean()), 4),
            "ci95": [round(float(lo[j]), 4), round(float(hi[j]), 4)],
        }
        for j, m in enumerate(METRICS)
    } | {"scenes": len(scenes)}


def dominance(front: list[dict], other: list[dict]) -> list[dict]:
    """For each point of ``other``'s frontier: the most successful config of ``front`` at least
    as faithful, and by how much its success exceeds the point's (negative: it falls short)."""
    out = []
    for p in other:
        ok = [f for f in front if f["fidelity"] >= p["fidelity"]]
        best = max(ok, key=lambda f: f["success"]) if ok else None
        out.append(
            {
                "at": p["label"],
                "fidelity": p["fidelity"],
                "success": p["success"],
                "best": best["label"] if best else None,
                "margin": round(best["success"] - p["success"], 4) if best else None,
            }
        )
    return out


def _fmt(x: dict) -> str:
    return f"{x['diff']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--default", default="unitune+interp:c32 t0=0.9 w=7.5")
    ap.add_argument("--goal", nargs=2, type=float, default=(0.85, 0.85), metavar=("S", "F"))
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples over scenes")
    ap.add_argument("--out", help="JSON file for the tables")
    a = ap.parse_args()
    recs = json.loads(Path(a.results).read_text())["records"]
    rows = aggregate(recs)
    rng = np.random.default_rng(0)
    dm, dl = a.default.split(":", 1)
    kinds = sorted({r["kind"] for r in recs if r["method"] != "reconstruct"})
    base = {k: per_scene(recs, dm, dl, k) for k in [None, *kinds]}
    if not base[None]:
        raise SystemExit(f"no records of the default {a.default!r}")
    configs = []
    for r in rows:
        if r["method"] == "reconstruct":
            continue
        c = {"config": f"{r['method']}:{r['label']}", "n": r["n"]}
        c["all"] = paired(base[None], per_scene(recs, r["method"], r["label"], None), rng, a.boot)
        c["per_kind"] = {
            k: paired(base[k], per_scene(recs, r["method"], r["label"], k), rng, a.boot)
            for k in kinds
        }
        configs.append(c)
    fronts = frontiers([r for r in rows if r["method"] != "reconstruct"])
    sdedit = fronts.get("sdedit+interp") or fronts["sdedit"]
    dom = {m: dominance(f, sdedit) for m, f in fronts.items() if not m.startswith("sdedit")}
    gs, gf = a.goal
    goal = [
        {"config": f"{r['method']}:{r['label']}", **{m: r[m] for m in METRICS}}
        for r in rows
        if r["method"] != "reconstruct" and r["success"] >= gs and r["fidelity"] >= gf
    ]
    recon = [
        {k: r[k] for k in ("label", "n", "success", "lpips_full", "psnr_full")}
        for r in rows
        if r["method"] == "reconstruct"
    ]
    print(f"| config | n | success | fidelity | vs {a.default}: success | fidelity |")
    print("|---|---|---|---|---|---|")
    for c in sorted(configs, key=lambda c: -c["all"]["success"]["value"]):
        s, f = c["all"]["success"], c["all"]["fidelity"]
        print(
            f"| {c['config']} | {c['n']} | {s['value']:.2f} | {f['value']:.3f} | "
            f"{_fmt(s)} | {_fmt(f)} |"
        )
    print(f"\nfrontiers against {('sdedit+interp' if 'sdedit+interp' in fronts else 'sdedit')}'s:")
    for m, d in dom.items():
        margins = [x["margin"] for x in d]
        worst = min((x for x in margins if x is not None), default=None)
        covered = sum(x is not None and x >= 0 for x in margins)
        print(f"  {m}: at or above {covered}/{len(d)} points; worst margin {worst}")
    print(f"\nconfigs with success >= {gs} at fidelity >= {gf}: {goal or 'none'}")
    if a.out:
        cmd = f"python scripts/bench_keep.py {a.results} --default '{a.default}'"
        if a.goal != (0.85, 0.85):
            cmd += f" --goal {gs} {gf}"
        atomic_write_json(
            Path(a.out),
            {
                "command": cmd + f" --out {a.out}",
                "default": a.default,
                "goal": {"success": gs, "fidelity": gf, "met_by": goal},
                "configs": configs,
                "frontier_vs_sdedit": dom,
                "reconstruction": recon,
            },
        )


if __name__ == "__main__":
    main()
