"""Routing an edit by its automatic mask's map, measured on a bench run without new samples.

    python scripts/automask_route.py runs/amr/results.json docs/automask_maps.json \
        --out docs/automask_route.json
    python scripts/automask_route.py runs/rc/results.json runs/rc/maps.json --read-on 8 \
        --verify runs/rc/work --out docs/route_check.json

The map's spread (std / mean; scripts/automask_maps.py) tells a global edit from a local one
before anything is sampled: a local edit's map is a few bright cells, a global edit's a broad
field. A routed edit samples one config when the spread is below ``--spread`` and another when
it is not. Samples are per (config, scene, edit, seed), so a routed method's samples are exactly
those of the config it picks for each edit: its scores are taken from the run's records, no
sampling needed. Each route is paired over scenes against the default edit (bootstrap 95%),
as scripts/bench_keep.py pairs configs; every edit weighs the same (the inversion configs
sample one seed, the noise starts four).

``--read-on N``: the spread cut was read off the suite's first N scenes, so the rows are also
given for them alone (in-sample) and for the scenes after them (held out: the check). ``--verify
WORK`` re-samples the held-out scenes' edits (all of them with ``--read-on 0``) with `unitune
edit`'s own ``--route auto`` and checks each image is the kept sample of the config the route
was scored with (global: the default's batch of seeds; local: the keep config's one seed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

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


def routed(recs: list[dict], local: str, glob: str, is_global: dict) -> dict:
    """(scene, kind) -> (success, fidelity) of the route that samples ``glob`` for a global
    edit and ``local`` for a local one."""
    lo, gl = per_edit(recs, local), per_edit(recs, glob)
    return {k: (gl[k] if is_global[k] else v) for k, v in lo.items()}


def by_kind(edits: dict, scenes: set[str]) -> dict[str, float]:
    """Mean success per edit kind of ``edits`` ((scene, kind) -> (success, fidelity)) over
    ``scenes``."""
    hits: dict[str, list[float]] = {}
    for (s, k), v in edits.items():
        if s in scenes:
            hits.setdefault(k, []).append(v[0])
    return {k: round(float(np.mean(h)), 3) for k, h in sorted(hits.items())}


def route_rows(recs, is_global, scenes, rng, boot) -> list[dict]:
    """The paired rows (each config alone, then each route) over ``scenes``."""
    recs = [r for r in recs if r["scene"] in scenes]
    base = by_scene(per_edit(recs, DEFAULT))
    rows = []
    for config in dict.fromkeys((DEFAULT, LOCAL, *GLOBALS)):  # the default once
        rows.append({"route": config, **paired(base, by_scene(per_edit(recs, config)), rng, boot)})
    sdedit = {c: by_scene(per_edit(recs, c)) for c in GLOBALS if c.startswith("sdedit")}
    for g in GLOBALS:
        edits = routed(recs, LOCAL, g, is_global)
        row = {"route": f"global -> {g}; local -> {LOCAL}"}
        row |= paired(base, by_scene(edits), rng, boot)
        for c, b in sdedit.items():  # against SDEdit's frontier points (the untuned baseline)
            p = paired(b, by_scene(edits), rng, boot)
            row[f"vs {c}"] = {m: {"diff": p[m]["diff"], "ci95": p[m]["ci95"]} for m in METRICS}
        row["success by kind"] = by_kind(edits, scenes)
        rows.append(row)
    return rows


def verify(work: Path, recs: list[dict], scenes: list[str], preset: str) -> dict:
    """`edit --route auto` (the default's checkpoint, t0 and CFG for a global edit) on each
    edit of ``scenes``: its images against the kept samples of the config the route picked."""
    from dataclasses import replace

    from unitune.bench.config import PRESETS
    from unitune.bench.suite import make_suite
    from unitune.config import EditConfig
    from unitune.edit import Editor

    bc = PRESETS[preset]
    files = {
        (r["method"], r["label"], r["scene"], r["kind"], r["seed"]): r["file"]
        for r in recs
        if r.get("file")
    }
    same = differ = 0
    worst = 0
    n = 1 + max(int(s[1:]) for s in scenes)  # scene ids are s<index> of one stream
    for item in (i for i in make_suite(n, kinds=bc.kinds) if i.sid in scenes):
        ed = Editor(work / item.sid / "tune", "cpu")
        for e in item.edits:
            ec = EditConfig(steps=bc.steps, seeds=tuple(bc.seeds), interpolate=False)
            ec = replace(ec, checkpoint=32, t0=0.9, cfg=7.5, route="auto")
            plan = ed.plan(e.prompt, ec)
            config = LOCAL if plan.route.local else DEFAULT
            if plan.route.local:  # the keep config was sampled at its one seed
                plan = ed.plan(e.prompt, replace(ec, seeds=tuple(bc.seeds[:1])))
            method, label = config.replace("+interp", "").split(":", 1)
            res = ed.run(plan, progress=False)
            for seed, im in zip(plan.cfg.seeds, res.images, strict=True):
                ref = np.asarray(
                    Image.open(work / item.sid / files[(method, label, item.sid, e.kind, seed)])
                )
                d = int(np.abs(np.asarray(im).astype(int) - ref.astype(int)).max())
                worst = max(worst, d)
                same, differ = (same + 1, differ) if d == 0 else (same, differ + 1)
        del ed
    return {
        "scenes": scenes,
        "images equal": same,
        "images differing": differ,
        "max |diff| (8-bit)": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a bench run's results.json")
    ap.add_argument("maps", type=Path, help="scripts/automask_maps.py's JSON of the same run")
    ap.add_argument("--spread", type=float, default=0.85, help="below: a global edit")
    ap.add_argument("--setting", default="tuned c32 w3", help="the maps' setting (LOCAL's mask)")
    ap.add_argument(
        "--read-on", type=int, default=0, help="the cut was read off the first N scenes"
    )
    ap.add_argument(
        "--verify", type=Path, help="the run's work folder: re-sample with --route auto"
    )
    ap.add_argument("--preset", default="route-check", help="the run's preset (for --verify)")
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
    scenes = sorted({r["scene"] for r in recs if r["method"] != "reconstruct"})
    subsets = {"all": scenes}
    if args.read_on:
        subsets |= {"read on": scenes[: args.read_on], "held out": scenes[args.read_on :]}
    kinds = sorted({k for _, k in is_global})
    out = {
        "results": str(args.results),
        "spread below which an edit is global": args.spread,
        "edits routed as global, per kind": {
            k: sorted(s for (s, kk), g in is_global.items() if g and kk == k) for k in kinds
        },
        "default": DEFAULT,
        "subsets": {},
    }
    for name, sub in subsets.items():
        rng = np.random.default_rng(0)
        out["subsets"][name] = {
            "scenes": sub,
            "rows": route_rows(recs, is_global, set(sub), rng, args.boot),
        }
    if args.verify:
        held = subsets.get("held out", scenes)
        out["verify"] = verify(args.verify, recs, held, args.preset)
    atomic_write_json(args.out, out)
    print(
        f"global edits: { {k: len(v) for k, v in out['edits routed as global, per kind'].items()} }"
    )
    for name, sub in out["subsets"].items():
        print(f"\n{name} ({len(sub['scenes'])} scenes)")
        print("| route | success | fidelity | d success [95%] | d fidelity [95%] |")
        print("|---|---|---|---|---|")
        for r in sub["rows"]:
            s, f = r["success"], r["fidelity"]
            fmt = "{:+.3f} [{:+.3f}, {:+.3f}]"
            print(
                f"| {r['route']} | {s['value']:.3f} | {f['value']:.3f} | "
                f"{fmt.format(s['diff'], *s['ci95'])} | {fmt.format(f['diff'], *f['ci95'])} |"
            )
    for r in out["subsets"]["all"]["rows"]:
        for k, v in r.items():
            if k.startswith("vs "):
                s, f = v["success"], v["fidelity"]
                print(
                    f"{r['route'][:48]}... {k}: success {s['diff']:+.3f} {s['ci95']}, "
                    f"fidelity {f['diff']:+.3f} {f['ci95']}"
                )
    if "verify" in out:
        print("\nverify:", out["verify"])


if __name__ == "__main__":
    main()
