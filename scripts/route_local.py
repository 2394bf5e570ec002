"""Which config should the route's local branch sample? Read off the first scenes, checked on the
others, from two bench runs' samples (no new sampling).

    python scripts/route_local.py runs/rc40/results.json runs/rl/results.json \
        docs/route_check_maps.json --read-on 8 --out docs/route_local.json

The first run is the route check's (`--preset route-check --scenes 40`: the default, SDEdit and
today's local config); the second samples the candidates for the local branch on the same
scenes and tunes (`--preset route-local`: negative-prompt inversion and the noise start, each
inside the automatic mask, at t0 x CFG). Their records are merged by (config, scene, edit, seed);
the configs both runs sampled must agree to the bit, which checks that the merge pairs the same
tunes and seeds.

The map an edit is routed by (and its mask cut from) is taken at ``auto_mask_t0`` and is linear
in CFG (both guided predictions share the negative's), so its spread and mask are the same under
every candidate: the route of each edit is the maps JSON's, whichever local config it samples.

The rule, fixed before the held-out scenes are looked at: on the first ``--read-on`` scenes,
the route (global edits: the default) whose success is highest among those at least as
faithful as the default there (the project's rule for a new default: more success, no
fidelity lost); ties go to the more faithful. Its rows on the held-out scenes are the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from automask_route import DEFAULT, LOCAL, by_kind, by_scene, per_edit, routed  # noqa: E402
from bench_keep import METRICS, paired  # noqa: E402

from unitune.fileio import atomic_write_json  # noqa: E402

SDEDIT = ("sdedit+interp:t0=0.9 w=7.5", "sdedit+interp:t0=1 w=7.5")


def merge(first: list[dict], second: list[dict]) -> tuple[list[dict], dict]:
    """``first``'s records and those of ``second`` it lacks; how the shared ones compare."""

    def key(r: dict) -> tuple:
        return (r["method"], r["label"], r["scene"], r["kind"], r["seed"])

    have = {key(r): r for r in first}
    shared = [(have[key(r)], r) for r in second if key(r) in have]
    differ = [k for a, b in shared if any(a[m] != b[m] for m in METRICS) for k in [key(b)]]
    merged = first + [r for r in second if key(r) not in have]
    return merged, {"shared samples": len(shared), "differing": len(differ), "first": differ[:5]}


def score(edits: dict, scenes: set[str]) -> dict[str, float]:
    per = by_scene({k: v for k, v in edits.items() if k[0] in scenes})
    mean = np.mean(list(per.values()), axis=0)
    return {m: round(float(mean[j]), 4) for j, m in enumerate(METRICS)}


def compare(base: dict, other: dict, scenes: set[str], boot: int) -> dict:
    rng = np.random.default_rng(0)
    b = by_scene({k: v for k, v in base.items() if k[0] in scenes})
    o = by_scene({k: v for k, v in other.items() if k[0] in scenes})
    return paired(b, o, rng, boot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", type=Path, help="the route check's results.json")
    ap.add_argument("local", type=Path, help="the route-local run's results.json")
    ap.add_argument("maps", type=Path, help="scripts/automask_maps.py's JSON of those scenes")
    ap.add_argument("--spread", type=float, default=0.85, help="below: a global edit")
    ap.add_argument("--setting", default="tuned c32 w3", help="the maps' setting")
    ap.add_argument("--read-on", type=int, default=8, help="choose on the first N scenes")
    ap.add_argument(
        "--hard",
        type=Path,
        help="scripts/edit_ceiling.py's JSON: also score without its hard edits",
    )
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    first = json.loads(args.check.read_text())["records"]
    second = json.loads(args.local.read_text())["records"]
    recs, agreement = merge(first, second)
    if agreement["differing"]:
        raise SystemExit(f"the runs disagree on shared samples: {agreement}")
    maps = [r for r in json.loads(args.maps.read_text())["rows"] if r["setting"] == args.setting]
    is_global = {(r["scene"], r["kind"]): r["spread"] < args.spread for r in maps}
    scenes = sorted({r["scene"] for r in second})
    read, held = set(scenes[: args.read_on]), set(scenes[args.read_on :])
    candidates = sorted(
        {
            f"{r['method']}:{r['label']}"
            for r in second
            if r["method"].endswith("+interp") and r["method"] != "unitune+interp"
        }
    )
    default = per_edit([r for r in recs if r["scene"] in scenes], DEFAULT)
    base_read = score(default, read)
    table = []
    for c in candidates:
        edits = routed(recs, c, DEFAULT, is_global)
        local_only = {k: v for k, v in edits.items() if not is_global[k]}
        table.append(
            {
                "local": c,
                "read on": score(edits, read),
                "held out": score(edits, held),
                "local edits alone, held out": score(local_only, held),
            }
        )
    eligible = [t for t in table if t["read on"]["fidelity"] >= base_read["fidelity"]]
    if not eligible:
        raise SystemExit("no candidate is as faithful as the default on the read-on scenes")
    pick = max(eligible, key=lambda t: (t["read on"]["success"], t["read on"]["fidelity"]))
    rows = {}
    contenders = {
        "the default": (DEFAULT, DEFAULT),
        "route today (local: " + LOCAL + ")": (LOCAL, DEFAULT),
        "route, local chosen (" + pick["local"] + ")": (pick["local"], DEFAULT),
        "route, local chosen, global on the pretrained model (SDEdit t0 1)": (
            pick["local"],
            SDEDIT[1],
        ),
        **{c: (c, c) for c in SDEDIT},
    }
    hard: set[tuple[str, str]] = set()
    if args.hard:
        ceiling = json.loads(args.hard.read_text())["per kind"]
        hard = {(sc, kind) for kind, v in ceiling.items() for sc in v["hard edits"]}
    today = routed(recs, LOCAL, DEFAULT, is_global)
    sdedit = {c: per_edit(recs, c) for c in SDEDIT}
    for name, (lo, gl) in contenders.items():
        edits = routed(recs, lo, gl, is_global)
        row = {}
        for sub, sc in (("read on", read), ("held out", held), ("all", read | held)):
            row[sub] = {
                **score(edits, sc),
                "vs the default": compare(default, edits, sc, args.boot),
                "vs the route today": compare(today, edits, sc, args.boot),
                **{f"vs {c}": compare(b, edits, sc, args.boot) for c, b in sdedit.items()},
                "success by kind": by_kind(edits, sc),
            }
            if hard:  # the edits the model renders (some config succeeds on most seeds)
                rest = {k: v for k, v in edits.items() if k not in hard}
                row[sub]["without the hard edits"] = score(rest, sc) | {
                    "success by kind": by_kind(rest, sc)
                }
        rows[name] = row
    # where today's local edits fail: is the edited object outside the mask they sample in?
    marked = {(r["scene"], r["kind"]): r["region_marked"] for r in maps if "region_marked" in r}
    cover = {}
    if marked:
        lo = per_edit(recs, LOCAL)
        for kind in sorted({k for _, k in lo}):
            es = [(v[0], marked[k]) for k, v in lo.items() if k[1] == kind and not is_global[k]]
            cover[kind] = {
                "local edits": len(es),
                "failed": int(sum(s < 0.5 for s, _ in es)),
                "failed, object box < half marked": int(sum(s < 0.5 and m < 0.5 for s, m in es)),
                "succeeded, object box < half marked": int(
                    sum(s >= 0.5 and m < 0.5 for s, m in es)
                ),
            }
    out = {
        "runs": [str(args.check), str(args.local)],
        f"the mask's cover of the edited object, {LOCAL}": cover,
        "merge": agreement,
        "spread below which an edit is global": args.spread,
        "read on": sorted(read),
        "rule": "highest read-on success among routes at least as faithful as the default there",
        "the default, read on": base_read,
        "candidates": table,
        "hard edits (the model's, left out in 'without the hard edits')": sorted(hard),
        "chosen": pick["local"],
        "rows": rows,
    }
    atomic_write_json(args.out, out)
    print(f"merge: {agreement}")
    print("| local config | read on: success | fidelity | held out: success | fidelity |")
    print("|---|---|---|---|---|")
    for t in table:
        a, b = t["read on"], t["held out"]
        mark = " (chosen)" if t is pick else ""
        print(
            f"| {t['local']}{mark} | {a['success']:.3f} | {a['fidelity']:.3f} | "
            f"{b['success']:.3f} | {b['fidelity']:.3f} |"
        )
    for kind, c in cover.items():
        print(f"mask cover, {kind}: {c}")
    fmt = "{:+.3f} [{:+.3f}, {:+.3f}]"
    for sub in ("held out", "all"):
        print(f"\n{sub}: | route | success | fidelity | vs default: d success | d fidelity |")
        for name, row in rows.items():
            r = row[sub]
            d = r["vs the default"]
            print(
                f"| {name} | {r['success']:.3f} | {r['fidelity']:.3f} | "
                f"{fmt.format(d['success']['diff'], *d['success']['ci95'])} | "
                f"{fmt.format(d['fidelity']['diff'], *d['fidelity']['ci95'])} | "
                f"{r['success by kind']}"
            )


if __name__ == "__main__":
    main()
