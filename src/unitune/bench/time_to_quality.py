"""Time to quality: how good the default edit is against how long its tune ran
(`unitune bench edits --preset time-to-quality`; docs/BENCHMARKS.md "Time to quality").

Each scene is tuned once per :class:`~unitune.bench.config.Schedule` (``WORK/<scene>/tune-NAME``)
and every edit of the suite is sampled with `unitune edit`'s defaults (t0, CFG, pixel
interpolation; the checkpoint named) at the schedule's checkpoints, judged as the editing
benchmark judges (oracle success, fidelity = 1 - LPIPS outside the edited object). A record
carries the tune's wall-clock up to its checkpoint (the manifest's, from the first training step:
model loading and the prompt's encoding are the same for every schedule and not in it).

:func:`summarise` pairs every (schedule, checkpoint) with the reference — the preset's first
schedule edited at the edit's automatic checkpoint (32), timed as the whole run a user waits
for (the paper's 128 steps in time-to-quality) — over scenes, with a bootstrap 95% interval of
the difference, overall and per edit kind.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..config import EditConfig
from ..fileio import atomic_write, atomic_write_json
from ..metrics.fidelity import image_tensor
from ..world.oracle import read
from .config import BenchConfig
from .suite import SceneItem, base_image, keep_mask

# the reference row: the preset's first schedule edited at the default edit's checkpoint (32)
# -- the paper's 128-step tune in time-to-quality, the 32-step default in time-to-quality-40
REFERENCE_CHECKPOINT = EditConfig.auto_checkpoint
METRICS = ("success", "fidelity")
# the rule, fixed before the run: a row matches the default when neither difference is
# significantly negative (the 95% interval's upper end >= 0) and the point estimates lose at
# most this much; the fastest match (wall-clock to its checkpoint, the run stopped there for a
# constant rate, else the whole run) is the candidate default
TOLERANCE = {"success": -0.025, "fidelity": -0.005}


def run_scene(item: SceneItem, bc: BenchConfig, work: Path, bb, lp) -> dict:
    """Tune one scene with every schedule (reusing complete tunes), edit with the defaults at
    the schedules' checkpoints, score every sample."""
    from ..edit import Editor
    from .edits import ensure_tune, score_samples, tune_config

    d = work / item.sid
    d.mkdir(parents=True, exist_ok=True)
    png = d / "base.png"
    img = base_image(item.scene)
    atomic_write(png, lambda tmp: img.save(tmp, format="PNG"))
    records, seconds = [], {"tune": 0.0, "edit": 0.0}
    for sch in bc.schedules:
        t0 = time.time()
        tdir = d / f"tune-{sch.name}"
        ensure_tune(png, tdir, replace(tune_config(bc, item), **dict(sch.tune)), bc, bb)
        t1 = time.time()
        ed = Editor(tdir, str(bb.device), backbone=bb)
        saved = ed.folder.manifest.checkpoints
        base = image_tensor(ed.base_image)
        before = read(ed.base_image)
        size = tuple(base.shape[-2:])
        masks = {
            e.kind: keep_mask(item.scene, e, size, bc.mask_margin, bc.background_mask)
            for e in item.edits
        }
        last = max(saved)
        for ck in sch.checkpoints or (last,):
            ec = EditConfig(checkpoint=ck, steps=bc.steps, seeds=tuple(bc.seeds))
            w = ed.resolve(ec).cfg  # the model's default CFG, as the edit uses it
            for e in item.edits:
                res = ed.edit(e.prompt, ec, progress=False)
                common = {
                    "method": "ttq",
                    "schedule": sch.name,
                    # a schedule edited where it stopped is one row, whatever the step
                    "label": f"{sch.name} c{ck}" if sch.checkpoints else f"{sch.name} stop",
                    "scene": item.sid,
                    "kind": e.kind,
                    "checkpoint": ck,
                    # from the first step to this checkpoint (0: the pretrained model)
                    "tune_s": saved[ck].seconds if ck else 0.0,
                    "run_s": saved[last].seconds,  # the whole run
                    "run_steps": last,
                    "t0": ec.t0,
                    "cfg": w,
                }
                records += score_samples(
                    res.images, ec.seeds, e, before, base, masks[e.kind], lp, common
                )
        del ed
        seconds["tune"] += t1 - t0
        seconds["edit"] += time.time() - t1
    from .edits import results_fingerprint

    return {
        "fingerprint": results_fingerprint(bc, bb),
        "scene": item.sid,
        "caption": item.caption,
        "scene_dict": item.scene.to_dict(),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "records": records,
    }


def _per_scene(recs: list[dict], label: str, kind: str | None) -> dict[str, np.ndarray]:
    """scene -> (success, fidelity) means of one row over its edits (of ``kind``) and seeds."""
    acc: dict[str, list[list[float]]] = {}
    for r in recs:
        if r["label"] == label and kind in (None, r["kind"]):
            acc.setdefault(r["scene"], []).append([float(r[m]) for m in METRICS])
    return {s: np.mean(v, axis=0) for s, v in acc.items()}


def paired(ref: dict, row: dict, rng: np.random.Generator, boot: int) -> dict:
    """Mean over common scenes of row - ref per metric, with its bootstrap 95% interval."""
    scenes = sorted(set(ref) & set(row))
    d = np.stack([row[s] - ref[s] for s in scenes])  # (scenes, metrics)
    draws = np.stack([d[rng.integers(0, len(d), len(d))].mean(0) for _ in range(boot)])
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return {
        m: {
            "diff": round(float(d[:, j].mean()), 4),
            "ci95": [round(float(lo[j]), 4), round(float(hi[j]), 4)],
        }
        for j, m in enumerate(METRICS)
    }


def matches(p: dict) -> bool:
    """The rule above: within the default's interval and tolerance on both metrics."""
    return all(p[m]["ci95"][1] >= 0 and p[m]["diff"] >= TOLERANCE[m] for m in METRICS)


def summarise(records: list[dict], bc: BenchConfig, boot: int = 2000) -> dict:
    """One row per (schedule, checkpoint): means, median wall-clock, paired differences to the
    default overall and per kind; the rule's verdict and the fastest match."""
    rng = np.random.default_rng(0)
    constant = {
        s.name: dict(s.tune).get("lr_schedule", "constant") == "constant" for s in bc.schedules
    }
    ref_label = f"{bc.schedules[0].name} c{REFERENCE_CHECKPOINT}"
    kinds = sorted({r["kind"] for r in records})
    refs = {k: _per_scene(records, ref_label, k) for k in (None, *kinds)}
    rows = []
    for label in dict.fromkeys(r["label"] for r in records):
        rs = [r for r in records if r["label"] == label]
        sched = rs[0]["schedule"]
        cks = [r["checkpoint"] for r in rs]
        # the time a user waits for this edit: the run stopped at this checkpoint when the rate
        # does not depend on --steps (the same weights), else the whole run; the reference's is
        # its whole run (the tune ends before `unitune edit` starts)
        key = "tune_s" if constant[sched] and label != ref_label else "run_s"
        row = {
            "label": label,
            "schedule": sched,
            "checkpoint": cks[0] if len(set(cks)) == 1 else None,  # None: where each stopped
            # (median over scenes: an automatic stop differs per scene)
            "steps": float(np.median(cks if key == "tune_s" else [r["run_steps"] for r in rs])),
            "seconds": round(float(np.median([r[key] for r in rs])), 2),
            # where the schedule's line passes (the reference too: its checkpoint as a run of its
            # own, which a constant rate makes the same weights)
            "line_seconds": round(
                float(np.median([r["tune_s" if constant[sched] else key] for r in rs])), 2
            ),
            "samples": len(rs),
            **{m: round(float(np.mean([r[m] for r in rs])), 4) for m in METRICS},
        }
        if refs[None]:
            row["vs_default"] = paired(refs[None], _per_scene(rs, label, None), rng, boot)
            row["per_kind"] = {
                k: {
                    **{
                        m: round(float(np.mean([r[m] for r in rs if r["kind"] == k])), 4)
                        for m in METRICS
                    },
                    "vs_default": paired(refs[k], _per_scene(rs, label, k), rng, boot),
                }
                for k in kinds
            }
            row["matches_default"] = matches(row["vs_default"])
        rows.append(row)
    default = next((r for r in rows if r["label"] == ref_label), None)
    ok = [r for r in rows if r.get("matches_default") and r is not default]
    best = min(ok, key=lambda r: r["seconds"]) if ok else None
    return {
        "reference": ref_label,
        "rule": "matches: 95% interval upper end >= 0 and diff >= "
        f"{TOLERANCE} on success and fidelity; candidate: the fastest match",
        "rows": rows,
        "default": default,
        "fastest_match": best,
        "speedup": round(default["seconds"] / best["seconds"], 2) if best and default else None,
    }


def plot(summary: dict, path: Path) -> None:
    """Success and fidelity against the seconds to each row's edit, a line per schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), dpi=120)
    by: dict[str, list[dict]] = {}
    for r in summary["rows"]:
        by.setdefault(r["schedule"], []).append(r)
    for ax, m in zip(axes, METRICS, strict=True):
        for name, rs in by.items():
            rs = sorted(rs, key=lambda r: r["line_seconds"])
            ax.plot([r["line_seconds"] for r in rs], [r[m] for r in rs], "o-", label=name, ms=4)
        d = summary["default"]
        if d:
            what = f"reference: {d['label']} after its whole {d['steps']:g}-step run"
            ax.plot(d["seconds"], d[m], "k*", ms=14, label=what)
        ax.set_xscale("log")  # the pretrained model (0 s) is off the axis: its row in the table
        xs = [r["line_seconds"] for r in summary["rows"]] + ([d["seconds"]] if d else [])
        lo, hi = min(x for x in xs if x > 0), max(xs)
        ticks = [t * 10**e for e in range(-1, 5) for t in (1, 2, 5)]
        ax.set_xticks([t for t in ticks if lo / 1.5 <= t <= hi * 1.5])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("tune seconds to the edit's checkpoint")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")  # beside the panels, not on them
    fig.suptitle("time to quality: the default edit after each tune schedule")
    fig.tight_layout(rect=(0, 0, 0.77, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_report(records: list[dict], meta: dict, out: Path, bc: BenchConfig) -> dict:
    """time_to_quality.json (summary + meta), .md (the table) and .png (the plot) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records, bc)
    summary["meta"] = {**meta, "config": asdict(bc)}
    atomic_write_json(out / "time_to_quality.json", summary)
    lines = [
        "| schedule | checkpoint | steps | seconds | success | fidelity | d success [95%] | "
        "d fidelity [95%] | matches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        v = r.get("vs_default")
        cell = (
            [
                f"{v[m]['diff']:+.3f} [{v[m]['ci95'][0]:+.3f}, {v[m]['ci95'][1]:+.3f}]"
                for m in METRICS
            ]
            if v
            else ["", ""]
        )
        lines.append(
            f"| {r['schedule']} | {ck(r)} | {r['steps']:g} | {r['seconds']:.1f} | "
            f"{r['success']:.3f} | {r['fidelity']:.3f} | {cell[0]} | {cell[1]} | "
            f"{'yes' if r.get('matches_default') else ''} |"
        )
    atomic_write(
        out / "time_to_quality.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n")
    )
    plot(summary, out / "time_to_quality.png")
    return summary


def ck(row: dict) -> str:
    """A row's checkpoint as the table shows it (an automatic stop: where it stopped)."""
    return str(row["checkpoint"]) if row["checkpoint"] is not None else "where it stopped"


def format_summary(summary: dict) -> str:
    d, b = summary["default"], summary["fastest_match"]
    head = f"default {summary['reference']}: " + (
        f"success {d['success']:.3f} fidelity {d['fidelity']:.3f} after {d['seconds']:.1f} s"
        if d
        else "not in this run"
    )
    tail = (
        f"fastest match {b['label']}: success {b['success']:.3f} fidelity {b['fidelity']:.3f} "
        f"after {b['seconds']:.1f} s ({summary['speedup']}x sooner)"
        if b
        else "no schedule matches the default"
    )
    return head + "\n" + tail + "\n" + json.dumps([r["label"] for r in summary["rows"]])
