"""The editing benchmark's runner: the suite scene by scene (resumable, shardable), each scene
by the editing benchmark's own runner (bench.edits.run_scene) or, for a preset with tune
schedules, the time-to-quality study's (bench.time_to_quality.run_scene), then the report.
Its own module so that neither of those two imports the other's caller."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_json
from . import time_to_quality as ttq
from .config import QUICK, BenchConfig
from .edits import results_fingerprint, run_scene
from .suite import make_suite


def run_bench(
    bc: BenchConfig = QUICK,
    out: str | Path = "bench-edits",
    work: str | Path | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = print,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Run the suite (resuming from ``work``), write tables and plots to ``out``; the summary.

    ``shard=(k, n)`` runs only the scenes whose index is k mod n (results of the others that
    already exist in ``work`` are still reported): n processes sharing one ``work`` folder split
    the suite, and a last run without a shard writes the tables over every scene."""
    from ..backbones import load_model
    from ..metrics import get_lpips
    from . import report

    bc.validate()
    log = log or (lambda s: None)
    out = Path(out)
    work = Path(work) if work is not None else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    suite = make_suite(bc.n_scenes, bc.suite_seed, tuple(bc.kinds))
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: need 0 <= k < n")
    bb = load_model(bc.model, device)  # its weights digest is part of the fingerprint
    lp = get_lpips("alex", bb.device)
    fingerprint = results_fingerprint(bc, bb)
    per_scene, ran, left = [], [], 0
    for k, item in enumerate(suite):
        f = work / item.sid / "results.json"
        done = json.loads(f.read_text()) if f.is_file() else {}
        if done.get("fingerprint") == fingerprint:
            per_scene.append(done)
            log(f"[{k + 1}/{len(suite)}] {item.sid}: results exist, skipped")
            continue
        if shard is not None and k % shard[1] != shard[0]:
            left += 1  # another shard's scene, not done yet
            continue
        res = (ttq.run_scene if bc.schedules else run_scene)(item, bc, work, bb, lp)
        atomic_write_json(f, res)
        per_scene.append(res)
        ran.append(res)
        ok = np.mean([r["success"] for r in res["records"]])
        log(
            f"[{k + 1}/{len(suite)}] {item.sid}: tune {res['seconds']['tune']} s, "
            f"{len(res['records'])} samples in {res['seconds']['edit']} s, success {ok:.0%}"
        )
    records = [r for s in per_scene for r in s["records"]]
    meta = {
        "config": asdict(bc),
        "scenes": [
            {"scene": s["scene"], "caption": s["caption"], "seconds": s["seconds"]}
            for s in per_scene
        ],
        "seconds": round(time.time() - start, 1),
        "scenes_run": len(ran),  # the others' results were reused from WORK
        "scenes_left": left,  # other shards' scenes without results yet: not in the tables
        "tune_seconds": round(sum(s["seconds"]["tune"] for s in ran), 1),
        "edit_seconds": round(sum(s["seconds"]["edit"] for s in ran), 1),
        "device": str(bb.device),
        "model_digest": bb.digest,
    }
    if bc.schedules:
        return ttq.write_report(records, meta, out, bc)
    return report.write_all(records, meta, out, work if bc.save_samples else None)
