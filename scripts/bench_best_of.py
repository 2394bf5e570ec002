"""Best-of-N on the editing benchmark: how often is the ranker's top pick a success, against a
random pick (the mean success of the N seeds) and the oracle's best (any of the N succeeds)?

    python scripts/bench_best_of.py runs/bench-medium --out docs/best_of.json

Reads the samples a ``unitune bench edits`` run kept (WORK/<scene>/samples, the seeds of one
config are the N candidates) and ranks each group with ``unitune.rank.Judge`` exactly as
``unitune edit --best-of N`` does (reference prompt = the source caption, i.e. the prompt-guidance
base; the oracle is never consulted by the ranker). Also ranks by each half of the score alone.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unitune.backbones import load_model
from unitune.bench.suite import make_suite
from unitune.edit import Editor
from unitune.fileio import atomic_write_json
from unitune.metrics.fidelity import image_tensor
from unitune.rank import Judge, RankConfig, combine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="OUT folder of a unitune bench edits run (results.json)")
    ap.add_argument("--work", help="its WORK folder (default BENCH/work)")
    ap.add_argument("--out", default="docs/best_of.json")
    ap.add_argument("--balance", type=float, default=RankConfig().balance)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", help="comma list of methods to rank (default: every one)")
    ap.add_argument("--cfg", type=float, help="only the configs at this CFG weight")
    ap.add_argument("--resummarise", action="store_true", help="reuse the rows already in --out")
    a = ap.parse_args()
    if a.resummarise:
        old = json.loads(Path(a.out).read_text())
        write(a, old["rows"], old["command"], old["seconds"], old["rank_config"], old["scenes"])
        return
    bench, t_start = Path(a.bench), time.time()
    work = Path(a.work) if a.work else bench / "work"
    data = json.loads((bench / "results.json").read_text())
    bc = data["summary"]["config"]
    keep = set(a.methods.split(",")) if a.methods else None
    recs = [
        r
        for r in data["records"]
        if r["method"] != "reconstruct"
        and r.get("file")
        and (keep is None or r["method"] in keep)
        and (a.cfg is None or r["cfg"] == a.cfg)
    ]
    scenes = sorted({r["scene"] for r in recs})
    suite = {it.sid: it for it in make_suite(len(scenes), bc["suite_seed"], tuple(bc["kinds"]))}
    bb = load_model(bc["model"], a.device)
    rc = RankConfig(balance=a.balance)
    rows = []
    for sid in scenes:
        item, ed = suite[sid], Editor(work / sid / "tune", a.device, backbone=bb)
        for e in item.edits:
            judge = Judge(ed, e.prompt, item.caption, (64, 64), rc)
            groups: dict[tuple[str, str], list[dict]] = {}
            for r in recs:
                if r["scene"] == sid and r["kind"] == e.kind:
                    groups.setdefault((r["method"], r["label"]), []).append(r)
            for (method, label), rs in groups.items():
                rs.sort(key=lambda r: r["seed"])
                pix = torch.stack([image_tensor(Image.open(work / sid / r["file"])) for r in rs])
                es, lp = judge.score(pix)
                ok = [bool(r["success"]) for r in rs]
                pick = {
                    name: int(torch.argmax(s))
                    for name, s in (
                        ("score", combine(es, lp, rc.balance)),
                        ("edit_only", es),
                        ("lpips_only", -lp),
                    )
                }
                rows.append(
                    {
                        "scene": sid,
                        "kind": e.kind,
                        "method": method,
                        "label": label,
                        "n": len(rs),
                        "random": float(np.mean(ok)),
                        "any": any(ok),
                        **{f"top_{k}": ok[i] for k, i in pick.items()},
                        "top_fidelity": rs[pick["score"]]["fidelity"],
                        "mean_fidelity": float(np.mean([r["fidelity"] for r in rs])),
                    }
                )
        print(f"{sid} ranked ({time.time() - t_start:.0f} s)", flush=True)

    cmd = (
        f"python scripts/bench_best_of.py {a.bench} --out {a.out}"
        + (f" --methods {a.methods}" if a.methods else "")
        + (f" --cfg {a.cfg:g}" if a.cfg else "")
    )
    write(a, rows, cmd, round(time.time() - t_start), asdict(rc), scenes)


def summarise(sel: list[dict], boot: int = 2000) -> dict:
    """Means over groups, and a 95% bootstrap interval over scenes of (top pick - random pick)."""
    keys = (
        "random",
        "top_score",
        "top_edit_only",
        "top_lpips_only",
        "any",
        "top_fidelity",
        "mean_fidelity",
    )
    out = {"groups": len(sel), **{k: round(float(np.mean([r[k] for r in sel])), 4) for k in keys}}
    scenes = sorted({r["scene"] for r in sel})
    per = {sc: [r["top_score"] - r["random"] for r in sel if r["scene"] == sc] for sc in scenes}
    rng = np.random.default_rng(0)
    gains = [
        np.mean([g for sc in rng.choice(scenes, len(scenes)) for g in per[sc]]) for _ in range(boot)
    ]
    out["gain_ci95"] = [round(float(np.percentile(gains, q)), 4) for q in (2.5, 97.5)]
    return out


def write(
    a, rows: list[dict], cmd: str, seconds: int, rank_config: dict, scenes: list[str]
) -> None:
    by_method = {
        m: summarise([r for r in rows if r["method"] == m])
        for m in dict.fromkeys(r["method"] for r in rows)
    }
    useful = [r for r in rows if 0 < r["random"] < 1]  # groups where the pick can matter
    out = {
        "command": cmd,
        "seconds": seconds,
        "rank_config": rank_config,
        "n_per_group": sorted({r["n"] for r in rows}),
        "scenes": scenes,
        "all": summarise(rows),
        "mixed_groups": summarise(useful) if useful else None,
        "by_method": by_method,
        "rows": rows,
    }
    atomic_write_json(Path(a.out), out)
    print(f"{'':<16} {'groups':>6} {'random':>7} {'top':>6} {'edit':>6} {'lpips':>6} {'any':>6}")
    for name, s in [("all", out["all"]), ("mixed groups", out["mixed_groups"]), *by_method.items()]:
        if s:
            print(
                f"{name:<16} {s['groups']:>6} {s['random']:>7.3f} {s['top_score']:>6.3f} "
                f"{s['top_edit_only']:>6.3f} {s['top_lpips_only']:>6.3f} {s['any']:>6.3f}  "
                f"gain CI {s['gain_ci95']}"
            )


if __name__ == "__main__":
    main()
