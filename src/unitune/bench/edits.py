"""`unitune bench edits`: one fixed, seeded editing suite through every method, judged by the
oracle.

Suite (:func:`make_suite`): held-out world scenes with their per-image details, one edit of each
kind with a known target. Runner (:func:`unitune.bench.runner.run_bench`): each scene is fine-tuned
ONCE (checkpoints ``save_at``) into ``WORK/<scene>/tune``; every method (``sdedit`` = checkpoint 0
without the rare token, ``unitune``, ``unitune+interp`` = the same samples interpolated afterwards,
``unitune+pg``, ``sine``) samples from that folder with the same seeds. docs/BENCHMARKS.md has the
grids.

The tune is on "<rare> <caption of the source scene>" (``tune_prompt="caption"``, UniTune's
base-prompt variant): that is also SINE's c_hat, the fine-tuning prompt that names the content
(SINE's "a photo of a <rare> <class noun>"), and the prompt-guidance base equals the tuned prompt.
``tune_prompt="rare"`` tunes on the rare token alone (UniTune's default; SINE's c_hat is then the
rare token).

Each sample gets the oracle's verdict (``world.edits.judge``) and LPIPS / PSNR to the base image
over the keep mask (:func:`keep_mask`). A scene's records go to ``WORK/<scene>/results.json`` as
soon as it is done; a rerun skips scenes whose results exist for the same settings.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import torch

from ..config import EditConfig, TuneConfig
from ..errors import UnituneWarning
from ..fileio import atomic_write
from ..metrics.fidelity import PSNR_CAP, distances, image_tensor
from ..world.edits import Edit, judge
from ..world.oracle import Reading, read
from ..world.render import to_pil
from .config import KEEP_METHODS, BenchConfig
from .suite import SceneItem, base_image, keep_mask, reads_back

METHODS = ("sdedit", "unitune", "unitune+interp", "unitune+pg", "sine", *KEEP_METHODS)
# the methods whose samples are also scored after pixel interpolation, as METHOD+interp
# ("unitune+interp" is UniTune's; SDEdit's is the control the tune's comparison needs)
INTERPOLATED = ("sdedit", "unitune", *KEEP_METHODS)


def keep_overrides(method: str) -> dict:
    """The EditConfig fields a keep method sets (config.KEEP_METHODS)."""
    tricks = method.split("+")[1:]
    over: dict = {}
    if "inversion" in tricks or "inversion-neg" in tricks:
        over["start"] = "inversion"
    if "inversion-neg" in tricks:
        over["inversion_negative"] = True
    if "automask" in tricks or "automask-otsu" in tricks:
        over["auto_mask"] = True
    if "automask-otsu" in tricks:
        over["auto_mask_rule"] = "otsu"
    if "route" in tricks:
        over["route"] = "auto"
    return over


# --- the runner -------------------------------------------------------------------------------


def plan(bc: BenchConfig) -> list[tuple[str, dict]]:
    """(method, EditConfig overrides) of every sampled config; unitune+interp is derived."""
    runs = [
        ("sdedit", dict(checkpoint=0, t0=t0, cfg=w, rare_token=False))
        for t0, w in product(bc.sdedit_t0s, bc.sdedit_cfgs)
    ]
    runs += [("unitune", dict(checkpoint=c, t0=t0, cfg=w)) for c, t0, w in bc.unitune_points()]
    runs += [("unitune+pg", dict(checkpoint=c, t0=t0, cfg=w)) for c, t0, w in bc.pg_points]
    runs += [
        (
            "sine",
            dict(
                checkpoint=bc.sine_checkpoint,
                t0=bc.sine_t0,
                cfg=bc.sine_cfg,
                method="sine",
                sine_K=K,
                sine_v=v,
            ),
        )
        for K, v in product(bc.sine_Ks, bc.sine_vs)
    ]
    for m in bc.keep_methods:
        over = keep_overrides(m)
        if m.startswith("sdedit+"):
            over["rare_token"] = False
        if over.get("route"):
            over |= dict(bc.route_settings)
        if over.get("start") == "inversion":  # deterministic: every seed gives one sample
            over["seeds"] = tuple(bc.seeds[:1])
        runs += [(m, dict(checkpoint=c, t0=t0, cfg=w, **over)) for c, t0, w in bc.keep_points(m)]
    return runs


def sample_config(bc: BenchConfig, **over) -> EditConfig:
    """The EditConfig of one sampled config (``over``: checkpoint, t0, CFG, ...), with
    interpolation pinned off whatever EditConfig's default: the bench scores raw samples, and
    "unitune+interp" is the interpolation, applied to them and scored on its own."""
    return replace(EditConfig(steps=bc.steps, seeds=tuple(bc.seeds), interpolate=False), **over)


def label(method: str, ec: EditConfig) -> str:
    t = f"t0={ec.t0:g} w={ec.cfg:g}"
    if method.startswith("sdedit"):
        return t
    if method == "sine":
        return f"c{ec.checkpoint} K={ec.sine_K} v={ec.sine_v:g} {t}"
    return f"c{ec.checkpoint} {t}"


def tune_config(bc: BenchConfig, item: SceneItem) -> TuneConfig:
    base = item.caption if bc.tune_prompt == "caption" else None
    tc = TuneConfig(steps=bc.tune_steps, save_at=bc.save_at, base_prompt=base)
    return replace(tc, **dict(bc.tune_extra))


def results_fingerprint(bc: BenchConfig, bb) -> str:
    """A scene's results are reused only for the same settings AND the same model weights."""
    return f"{bc.fingerprint()}-{bb.digest}"


def ensure_tune(png: Path, tune_dir: Path, tcfg: TuneConfig, bc: BenchConfig, bb) -> bool:
    """Tune unless a complete tune with these settings exists (an interrupted one resumes)."""
    from ..tune import tune
    from ..tunefolder import MANIFEST, TuneFolder

    overwrite = False
    if (tune_dir / MANIFEST).is_file():
        m = TuneFolder.open(tune_dir).manifest
        same = m.settings == tcfg and m.model == bc.model and m.model_digest == bb.digest
        if same and m.status == "complete":
            return False
        overwrite = not same
    tune(
        png,
        tune_dir,
        tcfg,
        model=bc.model,
        device=str(bb.device),
        overwrite=overwrite,
        progress=False,
        backbone=bb,
    )
    return True


def score_samples(
    images,
    seeds,
    edit: Edit,
    before: Reading,
    base: torch.Tensor,
    mask: torch.Tensor,
    lp,
    common: dict,
) -> list[dict]:
    """One record per image: the oracle's verdict, LPIPS and PSNR to the base (masked, full)."""
    lm, pm = distances(images, base, lp, mask)
    lf, pf = distances(images, base, lp)
    out = []
    for j, im in enumerate(images):
        v = judge(edit, before, read(im))
        out.append(
            {
                **common,
                "seed": int(seeds[j]),
                "success": v["success"],
                "edit_hit": v["edit_hit"],
                "count_ok": bool(v["count_ok"]),
                "preservation": round(float(v["preservation"]), 4),
                "lpips_masked": round(float(lm[j]), 5),
                "fidelity": round(1 - float(lm[j]), 5),
                "psnr_masked": round(min(float(pm[j]), PSNR_CAP), 3),
                "lpips_full": round(float(lf[j]), 5),
                "psnr_full": round(min(float(pf[j]), PSNR_CAP), 3),
            }
        )
    return out


def _keep(bc: BenchConfig, d: Path, recs: list[dict], images) -> None:
    """Save each sample as d/samples/<name>.png and record its path (relative to d)."""
    if not bc.save_samples:
        return
    (d / "samples").mkdir(exist_ok=True)
    for r, im in zip(recs, images, strict=True):
        tag = f"{r['method']}_{r['label']}_{r['kind']}_s{r['seed']}"
        name = "".join(c if c.isalnum() or c in "+.-" else "_" for c in tag) + ".png"
        atomic_write(d / "samples" / name, lambda tmp, im=im: im.save(tmp, format="PNG"))
        r["file"] = f"samples/{name}"


def _reconstruct(
    item: SceneItem, bc: BenchConfig, ed, base, before: Reading, lp, d: Path
) -> list[dict]:
    """UniTune's claim (1): the tuned prompt alone (no edit), from pure noise, at every checkpoint
    (0 = the pretrained model) and CFG in ``recon_cfgs``. ``success`` = the oracle reads back the
    whole base scene; LPIPS / PSNR are over the full image."""
    text = item.caption if bc.tune_prompt == "caption" else ""
    records = []
    cks = [0, *sorted(bc.checkpoints())]
    runs = [("", dict(cfg=w)) for w in bc.recon_cfgs]
    # from the photo's inversion (deterministic: one seed)
    inv = dict(start="inversion", seeds=tuple(bc.seeds[:1]))
    runs += [("inversion ", dict(cfg=w, **inv)) for w in bc.recon_inversion_cfgs]
    for c, (how, over) in product(cks, runs):
        ec = sample_config(bc, checkpoint=c, t0=1.0, **over)
        w = ec.cfg
        res = ed.edit(text, ec, progress=False)
        lf, pf = distances(res.images, base, lp)
        for j, im in enumerate(res.images):
            seen = read(im)
            records.append(
                {
                    "method": "reconstruct",
                    "label": f"{how}c{c} t0=1 w={w:g}",
                    "scene": item.sid,
                    "kind": "none",
                    "seed": int(ec.seeds[j]),
                    "checkpoint": c,
                    "t0": 1.0,
                    "cfg": w,
                    "sine_K": None,
                    "sine_v": None,
                    "prompt_guidance": False,
                    "interpolate": False,
                    "success": reads_back(item.scene, seen),
                    "edit_hit": None,
                    "count_ok": len(seen.objects) == len(before.objects),
                    "preservation": None,
                    "lpips_masked": round(float(lf[j]), 5),
                    "fidelity": round(1 - float(lf[j]), 5),
                    "psnr_masked": round(min(float(pf[j]), PSNR_CAP), 3),
                    "lpips_full": round(float(lf[j]), 5),
                    "psnr_full": round(min(float(pf[j]), PSNR_CAP), 3),
                    "keep_frac": 1.0,
                    "start": ec.start,
                    "auto_mask_frac": None,
                }
            )
        _keep(bc, d, records[-len(res.images) :], res.images)
    return records


def _mask_frac(res) -> float | None:
    """The fraction of the image the edit's automatic mask let change (None: no auto mask)."""
    if res.mask is None:
        return None
    return round(float(np.asarray(res.mask, dtype=np.float32).mean() / 255), 4)


def run_scene(item: SceneItem, bc: BenchConfig, work: Path, bb, lp) -> dict:
    """Tune one scene (or reuse its tune), sample every config, score every sample."""
    from ..edit import Editor
    from ..interpolate import interpolate

    d = work / item.sid
    d.mkdir(parents=True, exist_ok=True)
    png = d / "base.png"
    img = base_image(item.scene)
    atomic_write(png, lambda tmp: img.save(tmp, format="PNG"))
    t0 = time.time()
    tuned = ensure_tune(png, d / "tune", tune_config(bc, item), bc, bb)
    t1 = time.time()
    ed = Editor(d / "tune", str(bb.device), backbone=bb)
    base = image_tensor(ed.base_image)  # what the tune saw, at the model's resolution
    before = read(ed.base_image)
    size = tuple(base.shape[-2:])
    masks = {
        e.kind: keep_mask(item.scene, e, size, bc.mask_margin, bc.background_mask)
        for e in item.edits
    }
    records = _reconstruct(item, bc, ed, base, before, lp, d)
    for method, over in plan(bc):
        for e in item.edits:
            ec = sample_config(bc, **over)
            if method == "unitune+pg":
                ec = replace(ec, prompt_guidance=item.caption)
            with warnings.catch_warnings():
                if ec.route == "auto":  # a local edit's seeds are one image by design here
                    warnings.simplefilter("ignore", UnituneWarning)
                res = ed.edit(e.prompt, ec, progress=False)
            ran = res.params[0]  # what was sampled: a routed edit's branch sets its start
            common = {
                "method": method,
                "label": label(method, ec),
                "scene": item.sid,
                "kind": e.kind,
                "checkpoint": ec.checkpoint,
                "t0": ec.t0,
                "cfg": ec.cfg,
                "sine_K": ec.sine_K if method == "sine" else None,
                "sine_v": ec.sine_v if method == "sine" else None,
                "prompt_guidance": method == "unitune+pg",
                "interpolate": False,
                "keep_frac": round(float(masks[e.kind].mean()), 4),
                "start": ran["edit_config"]["start"],
                "auto_mask_frac": _mask_frac(res),
                "route": (ran.get("route") or {}).get("edit"),
            }
            records += score_samples(
                res.images, ec.seeds, e, before, base, masks[e.kind], lp, common
            )
            _keep(bc, d, records[-len(res.images) :], res.images)
            if method in INTERPOLATED and bc.interp:
                pix = interpolate(
                    res.pixels, base[None].to(res.pixels), bc.interp_window, bc.interp_threshold
                )
                imgs = [to_pil(p) for p in pix]
                common = {**common, "method": f"{method}+interp", "interpolate": True}
                records += score_samples(imgs, ec.seeds, e, before, base, masks[e.kind], lp, common)
                _keep(bc, d, records[-len(imgs) :], imgs)
    del ed
    for r in records:
        r["base_read_ok"] = reads_back(item.scene, before)
    return {
        "fingerprint": results_fingerprint(bc, bb),
        "scene": item.sid,
        "caption": item.caption,
        "scene_dict": item.scene.to_dict(),
        "tuned_now": tuned,
        "seconds": {"tune": round(t1 - t0, 1), "edit": round(time.time() - t1, 1)},
        "records": records,
    }
