"""`unitune demo`: the whole method offline on the embedded world model, in a few minutes.

A bundled scene with per-image details (jitter, rotation, gradient, texture: not a plain
caption rendering) is fine-tuned into a tune folder, then edited five ways. The oracle
reads every output; success and preservation, and PSNR / LPIPS outside the edited object, are
printed for EVERY seed (no silent cherry-picking), and a labelled grid (checkpoints x t0) plus
the edits sheet are written.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .bench.suite import keep_mask
from .config import DEFAULT_MODEL, EditConfig, GridConfig, TuneConfig
from .fileio import atomic_write, atomic_write_json
from .grid import contact_sheet
from .metrics import get_lpips
from .metrics.fidelity import PSNR_CAP, distances, image_tensor
from .world.edits import KINDS, Edit, judge, make_edit
from .world.oracle import Reading, read
from .world.render import render, to_pil
from .world.scene import Obj, Scene, caption

SCENE = Scene(
    background="grey",
    objects=(
        Obj("circle", "red", "large", "filled", "left", dx=0.8, dy=-1.1, scale=1.06, angle=8.0),
        Obj("square", "blue", "large", "filled", "right", dx=-1.2, dy=0.9, scale=0.95, angle=-11.0),
    ),
    grad=0.05,
    grad_dir=1.0,
    noise=0.015,
    noise_seed=7,
)
# UniTune with prompt guidance (§3.3): the base prompt "<rare> <caption of the photo>" replaces
# the unconditional baseline, so CFG pushes only along the difference the edit names; then pixel
# interpolation (§3.4) at threshold 0.2 gives the untouched background back.
SOURCE_CAPTION = caption(SCENE, np.random.default_rng(0))
# Why these: of the 48 configs x 4 interpolation settings scripts/demo_settings.py measured on
# this scene with the shipped model (docs/demo_settings.json), the most successful at the
# default tune's last checkpoint (32), and of those the most faithful background: 95% success,
# background PSNR 31.2 dB (the paper's 128 steps reach 95% / 34.1 dB at checkpoint 128, at four
# times the tuning time; checkpoint 32 is the same weights in either run)
DEMO_EDIT = EditConfig(
    checkpoint=32,
    cfg=5.0,
    t0=0.9,
    steps=25,
    seeds=(0, 1, 2, 3),
    prompt_guidance=SOURCE_CAPTION,
    interpolate=True,
    interp_threshold=0.2,
)
# rows: every checkpoint the demo's tune saved (GridConfig's default)
DEMO_GRID = GridConfig(t0s=(0.6, 0.75, 0.9, 1.0), seeds=(0,))


BACKGROUND = ("background_psnr", "background_lpips")  # over keep_mask: outside the edited object


def score_edit(e: Edit, images, before: Reading, original, lp) -> list[dict]:
    """One verdict per image: the oracle's (success, preservation: attributes read back) and the
    pixels' fidelity to the original outside the edited object's region (bench.suite.keep_mask:
    PSNR in dB, capped at 99, and LPIPS), which sees a colour cast or lost texture the oracle
    does not."""
    keep = keep_mask(SCENE, e, (original.height, original.width))
    lpips, psnr = distances(images, image_tensor(original), lp, keep)
    out = []
    for im, lv, pv in zip(images, lpips, psnr, strict=True):
        v = judge(e, before, read(im))
        v["background_psnr"] = round(min(float(pv), PSNR_CAP), 2)
        v["background_lpips"] = round(float(lv), 4)
        out.append(v)
    return out


def run_demo(
    out: str | Path = "unitune-demo",
    device: str = "cpu",
    progress: bool = True,
    tune_cfg: TuneConfig = TuneConfig(),
    edit_cfg: EditConfig = DEMO_EDIT,
    grid_cfg: GridConfig = DEMO_GRID,
    model: str = DEFAULT_MODEL,
) -> dict:
    from .backbones import load_model
    from .edit import Editor
    from .outputs import render_grid
    from .tune import tune

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    photo = out / "original.png"
    img = to_pil(render([SCENE], 64)[0])
    atomic_write(photo, lambda tmp: img.save(tmp, format="PNG"))
    before = read(img)
    # loaded once for tune and edits (tune leaves a passed model exactly as it found it)
    bb = load_model(model, device)
    tune(photo, out / "tune", tune_cfg, model=model, backbone=bb, overwrite=True, progress=progress)
    t_tuned = time.time()
    ed = Editor(out / "tune", backbone=bb)
    lp = get_lpips("alex", ed.backbone.device)
    rng = np.random.default_rng(0)
    edits = [e for e in (make_edit(SCENE, k, rng) for k in KINDS) if e is not None]
    rows, labels, report = [], [], []
    for e in edits:
        res = ed.edit(e.prompt, edit_cfg, progress=False)
        verdicts = score_edit(e, res.images, before, img, lp)
        rows.append([img] + res.images)
        ok = sum(v["success"] for v in verdicts)
        labels.append(f"{e.kind} {ok}/{len(verdicts)}")
        report.append(
            {
                "edit": e.kind,
                "prompt": f"{ed.tune_cfg.rare_token} {e.prompt}",
                "seeds": list(edit_cfg.seeds),
                "verdicts": verdicts,
            }
        )
    cols = ["original"] + [f"seed {s}" for s in edit_cfg.seeds]
    pg = f", prompt guidance '{edit_cfg.prompt_guidance}'" if edit_cfg.prompt_guidance else ""
    if edit_cfg.interpolate:
        pg += f", interpolation {edit_cfg.interp_threshold:g}"
    sheet = contact_sheet(
        rows,
        labels,
        cols,
        row_title="edit (successes / seeds)",
        title=f"checkpoint {ed.step}, t0 {edit_cfg.t0:g}, CFG {edit_cfg.cfg:g}{pg}",
    )
    atomic_write(out / "edits.png", lambda tmp: sheet.save(tmp, format="PNG"))
    grid_path = render_grid(
        ed,
        edits[0].prompt,
        replace(edit_cfg, seeds=(0,)),
        grid_cfg,
        out / "grid.png",
        progress=progress,
    )[0]
    summary = {
        "scene": SCENE.to_dict(),
        "tune_seconds": round(t_tuned - t_start, 1),
        "total_seconds": round(time.time() - t_start, 1),
        # as it ran: the model's sampler, steps and CFG filled in (the header prints these)
        "edit_config": dict(ed.resolve(edit_cfg).__dict__),
        "edits": report,
        "success_rate": float(np.mean([v["success"] for r in report for v in r["verdicts"]])),
        "preservation": float(np.mean([v["preservation"] for r in report for v in r["verdicts"]])),
        **{k: float(np.mean([v[k] for r in report for v in r["verdicts"]])) for k in BACKGROUND},
        "files": {
            "original": str(photo),
            "edits": str(out / "edits.png"),
            "grid": str(grid_path),
            "tune": str(out / "tune"),
        },
    }
    atomic_write_json(out / "verdicts.json", summary)
    return summary


def print_summary(s: dict) -> None:
    c = s["edit_config"]
    print(f"tuned in {s['tune_seconds']} s; total {s['total_seconds']} s")
    interp = (
        f"interpolation threshold {c['interp_threshold']}"
        if c["interpolate"]
        else "no interpolation"
    )
    print(
        f"edits: checkpoint {c['checkpoint']}, t0 {c['t0']}, CFG {c['cfg']}, "
        f"{c['steps']} {c['sampler']} steps, {interp}, prompt guidance {c['prompt_guidance']!r}"
    )
    print(
        f"{'edit':<11} {'successes':>9} {'preservation':>12} "
        f"{'bg PSNR':>8} {'bg LPIPS':>8}   prompt"
    )
    for r in s["edits"]:
        v = r["verdicts"]
        ok = sum(x["success"] for x in v)
        pres, bp, bl = (np.mean([x[k] for x in v]) for k in ("preservation", *BACKGROUND))
        print(
            f"{r['edit']:<11} {ok:>5}/{len(v):<3} {pres:>12.2f} "
            f"{bp:>8.1f} {bl:>8.3f}   {r['prompt']}"
        )
    print(
        f"all seeds shown, none picked: success {s['success_rate']:.0%}, "
        f"preservation {s['preservation']:.0%} (oracle); outside the edited object "
        f"PSNR {s['background_psnr']:.1f} dB, LPIPS {s['background_lpips']:.3f}"
    )
    for k, p in s["files"].items():
        print(f"{k:>9}: {p}")
