"""Tables, plots and the printed summary of ``unitune bench edits`` (see docs/BENCHMARKS.md).

Files written to OUT: ``results.csv`` / ``results.json`` (one row per sample; the JSON also holds
the settings, the timings and the per-config table), ``configs.csv`` (one row per method and
config: means over scenes x edits x seeds), ``frontier.png`` (success vs fidelity per method with
each method's Pareto frontier), ``sine_curves.png`` (SINE's success vs masked LPIPS as K and v
vary) and ``figure10.png`` (the UniTune paper's checkpoints x t0 grid for a few scenes, fig10.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_json, atomic_write_text
from .config import KEEP_METHODS

COLUMNS = (
    "method",
    "label",
    "scene",
    "kind",
    "seed",
    "checkpoint",
    "t0",
    "cfg",
    "sine_K",
    "sine_v",
    "prompt_guidance",
    "interpolate",
    "success",
    "edit_hit",
    "count_ok",
    "preservation",
    "lpips_masked",
    "fidelity",
    "psnr_masked",
    "lpips_full",
    "psnr_full",
    "keep_frac",
    "start",
    "auto_mask_frac",
    "route",
    "base_read_ok",
    "file",
)
PARAMS = ("checkpoint", "t0", "cfg", "sine_K", "sine_v")
MEANS = (
    "success",
    "edit_hit",
    "preservation",
    "lpips_masked",
    "fidelity",
    "psnr_masked",
    "lpips_full",
    "psnr_full",
)
# "reconstruct" samples the tuned prompt itself: not an edit, so it has no frontier
ORDER = (
    "sdedit",
    "sdedit+interp",
    "unitune",
    "unitune+interp",
    "unitune+pg",
    "sine",
    *(f"{m}{i}" for m in KEEP_METHODS for i in ("", "+interp")),
    "reconstruct",
)
COLOURS = {
    "sdedit": "tab:grey",
    "sdedit+interp": "silver",
    "unitune": "tab:blue",
    "unitune+interp": "tab:green",
    "unitune+pg": "tab:orange",
    "sine": "tab:red",
    "sdedit+inversion+interp": "tab:brown",
    "sdedit+automask+interp": "rosybrown",
    "unitune+inversion+interp": "tab:purple",
    "unitune+inversion-neg+interp": "tab:pink",
    "unitune+automask+interp": "tab:olive",
    "unitune+inversion+automask+interp": "tab:cyan",
    "sdedit+inversion-neg+interp": "khaki",
    "unitune+inversion-neg+automask+interp": "navy",
    "sdedit+automask-otsu+interp": "peru",
    "unitune+automask-otsu+interp": "yellowgreen",
    "unitune+inversion-neg+automask-otsu+interp": "steelblue",
}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both maximised), sorted by
    the first coordinate ascending (so the second descends). Of exact duplicates one is kept."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front, best_y = [], -np.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front[::-1]


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (method, label): its parameters, the sample count and the means of MEANS."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["label"]), []).append(r)
    rows = []
    for (method, lab), rs in groups.items():
        row = {"method": method, "label": lab, **{p: rs[0][p] for p in PARAMS}, "n": len(rs)}
        for m in MEANS:  # None = not defined for this method (e.g. preservation of reconstruct)
            vals = [float(r[m]) for r in rs if r.get(m) is not None]
            row[m] = round(float(np.mean(vals)), 4) if vals else None
        rows.append(row)
    rank = {m: i for i, m in enumerate(ORDER)}
    rows.sort(key=lambda r: (rank.get(r["method"], 99), r["label"]))
    return rows


def frontiers(rows: list[dict]) -> dict[str, list[dict]]:
    """Per method: its configs on the success-vs-fidelity Pareto frontier (fidelity ascending)."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "reconstruct"):
        mine = [r for r in rows if r["method"] == method]
        out[method] = [mine[i] for i in pareto_front([(r["fidelity"], r["success"]) for r in mine])]
    return out


def _csv(rows: list[dict], cols: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in cols})
    return buf.getvalue()


def plot_frontier(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    rows = [r for r in rows if r["method"] != "reconstruct"]
    for method, front in frontiers(rows).items():
        mine = [r for r in rows if r["method"] == method]
        c = COLOURS.get(method)
        ax.scatter(
            [r["fidelity"] for r in mine], [r["success"] for r in mine], s=14, alpha=0.35, color=c
        )
        ax.plot(
            [r["fidelity"] for r in front],
            [r["success"] for r in front],
            "-o",
            ms=4,
            color=c,
            label=f"{method} ({len(mine)} configs)",
        )
    ax.set_xlabel("fidelity = 1 - LPIPS to the base over the keep mask")
    ax.set_ylabel("edit success rate (oracle)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def plot_sine(rows: list[dict], path: Path, title: str) -> Path | None:
    """Two panels of success vs masked LPIPS: one line per v (over K), one line per K (over v)."""
    sine = [r for r in rows if r["method"] == "sine"]
    if not sine:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120, sharey=True)
    for ax, (line, along) in zip(axes, (("sine_v", "sine_K"), ("sine_K", "sine_v"))):
        for val in sorted({r[line] for r in sine}):
            pts = sorted((r for r in sine if r[line] == val), key=lambda r: r[along])
            xs, ys = [r["lpips_masked"] for r in pts], [r["success"] for r in pts]
            ax.plot(xs, ys, "-o", ms=4, label=f"{line[5:]}={val:g}")
            for r, x, y in zip(pts, xs, ys):
                ax.annotate(f"{along[5:]}={r[along]:g}", (x, y), fontsize=6, alpha=0.7)
        ax.set_xlabel("LPIPS to the base over the keep mask (lower = more faithful)")
        ax.set_title(f"lines: fixed {line[5:]}, points: {along[5:]} varies", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("edit success rate (oracle)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_all(
    records: list[dict], meta: dict, out: str | Path, work: str | Path | None = None
) -> dict:
    """Write every table and plot; return the summary (what ``format_summary`` prints).
    ``work``: where the kept samples are, for ``figure10.png`` (none without it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    fronts = frontiers(rows)
    n_scenes = len({r["scene"] for r in records})
    seeds = len({r["seed"] for r in records})
    kinds = {r["kind"] for r in records if r["method"] != "reconstruct"}
    title = (
        f"{n_scenes} scenes x {len(kinds)} edit kinds x {seeds} seeds, "
        f"{meta['config']['steps']} sampling steps"
    )
    atomic_write_text(out / "results.csv", _csv(records, COLUMNS))
    atomic_write_text(out / "configs.csv", _csv(rows, ("method", "label", *PARAMS, "n", *MEANS)))
    files = {
        "results_csv": out / "results.csv",
        "configs_csv": out / "configs.csv",
        "results_json": out / "results.json",
    }
    if rows:
        files["frontier_png"] = plot_frontier(rows, out / "frontier.png", title)
        sine = plot_sine(rows, out / "sine_curves.png", title + ", SINE")
        if sine is not None:
            files["sine_png"] = sine
    if work is not None:
        from .fig10 import figure10

        fig = figure10(records, work, out / "figure10.png")
        if fig is not None:
            files["figure10_png"] = fig
    summary = {
        **meta,
        "title": title,
        "n_samples": len(records),
        "methods": {
            m: {
                "configs": sum(r["method"] == m for r in rows),
                "success": round(
                    float(np.mean([r["success"] for r in records if r["method"] == m])), 4
                ),
                "fidelity": round(
                    float(np.mean([r["fidelity"] for r in records if r["method"] == m])), 4
                ),
                "frontier": [
                    {k: f[k] for k in ("label", "success", "fidelity", "preservation")}
                    for f in fronts[m]
                ],
            }
            for m in fronts
        },
        "reconstruction": [
            {k: r[k] for k in ("label", "n", "success", "lpips_full", "psnr_full")}
            for r in rows
            if r["method"] == "reconstruct"
        ],  # UniTune's claim (1): success = the oracle reads back the base scene
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write_json(
        out / "results.json", {"summary": summary, "configs": rows, "records": records}
    )
    return summary


def format_summary(s: dict) -> str:
    width = max([15, *map(len, s["methods"])])  # the method column
    lines = [
        f"unitune bench edits: {s['title']}; {s['n_samples']} samples",
        f"{'method':<{width}} {'configs':>7} {'success':>8} {'fidelity':>8}   Pareto frontier "
        "(success / fidelity @ config)",
    ]
    for m, d in s["methods"].items():
        front = "; ".join(
            f"{f['success']:.2f}/{f['fidelity']:.3f} @ {f['label']}" for f in d["frontier"]
        )
        lines.append(
            f"{m:<{width}} {d['configs']:>7} {d['success']:>8.2f} {d['fidelity']:>8.3f}   {front}"
        )
    lines.append(
        "success / fidelity: means over every sample of the method (all seeds, none picked)"
    )
    if s.get("reconstruction"):
        lines.append("reconstruction (the tuned prompt, t0 = 1): read-back rate / LPIPS / PSNR")
        lines += [
            f"  {r['label']:<{max(16, *(len(x['label']) for x in s['reconstruction']))}} "
            f"{r['success']:.2f} / {r['lpips_full']:.3f} / "
            f"{r['psnr_full']:.1f} dB"
            for r in s["reconstruction"]
        ]
    lines.append(
        f"time: {s['seconds']} s total on {s['device']} ({s['scenes_run']} scenes run now: "
        f"tuning {s['tune_seconds']} s, sampling + scoring {s['edit_seconds']} s)"
    )
    if s.get("scenes_left"):
        lines.append(
            f"{s['scenes_left']} scenes of other shards have no results yet: not in "
            "these tables (rerun without --shard when every shard is done)"
        )
    for k, p in s["files"].items():
        lines.append(f"{k:>13}: {p}")
    return "\n".join(lines)
