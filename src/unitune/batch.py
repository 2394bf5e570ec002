"""`unitune batch jobs.jsonl --out DIR`: many photos, each tuned once and edited, in parallel.

Each line of the JSONL file is one image's job, the CLI's flags as JSON::

    {"image": "cat.jpg", "tune": {"steps": 128, "method": "lora"},
     "edits": [{"prompt": "a cat wearing sunglasses", "seeds": [0, 1], "t0": 0.9},
               {"prompt": "a painting of a cat", "cfg": 12}], "model": "world", "name": "cat"}

Keys are TuneConfig / EditConfig field names (a flag's dashes may stay: "save-at"; "K" and "v"
are SINE's). One task per image (tune + its edits) runs on a local process pool
(``--workers N``) or as a Ray task (``--ray auto|ADDRESS``, or ``local`` for a Ray on this
machine): Ray schedules them, there is no scheduler here. Every line is checked on its own: a
bad line (unreadable JSON, a missing image, an out-of-range setting, a failing edit) fails that
image with its reason and the others run. ``DIR/<name>/result.json``, written last, marks an
image as finished: a rerun skips those (and a tune interrupted mid-run resumes from its folder).
``DIR/manifest.json`` lists every line's outcome at the end.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, EditConfig, TuneConfig, from_json
from .errors import UserError
from .fileio import atomic_write_json

RESULT = "result.json"
ALIASES = {"K": "sine_K", "v": "sine_v"}


def _fields(d: dict[str, Any], cls, what: str) -> dict[str, Any]:
    """JSON flags -> dataclass fields (dashes -> underscores, lists -> tuples), unknown refused."""
    names = set(cls.__dataclass_fields__)
    out = {}
    for k, v in d.items():
        f = ALIASES.get(k, k.replace("-", "_"))
        if f not in names:
            raise UserError(f"unknown {what} setting {k!r}", f"use {cls.__name__} field names")
        if f in ("seeds", "save_at") and isinstance(v, str):
            v = [int(x) for x in v.split(",")]
        out[f] = v
    return out


def parse_line(text: str, line_no: int, base: Path) -> dict[str, Any]:
    """One JSONL line -> {name, image, model, tune (TuneConfig), edits [(prompt, EditConfig)]},
    every setting checked; raises UserError naming what is wrong."""
    from .images import load_image

    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"line {line_no} is not JSON ({e.msg})", "one JSON object per line") from None  # fmt: skip
    if not isinstance(spec, dict) or "image" not in spec:
        raise UserError(f"line {line_no} has no \"image\"", 'e.g. {"image": "cat.jpg", "edits": [...]}')  # fmt: skip
    image = Path(spec["image"])
    image = image if image.is_absolute() else base / image
    load_image(image)  # exists and decodes (size limits included)
    tune = from_json(TuneConfig, _fields(spec.get("tune", {}), TuneConfig, "tune"))
    tune.validate()
    edits = []
    for e in spec.get("edits", []):
        e = dict(e)
        prompt = e.pop("prompt", None)
        if not prompt:
            raise UserError(f"line {line_no}: an edit has no \"prompt\"", 'e.g. {"prompt": "a cat wearing sunglasses"}')  # fmt: skip
        ec = from_json(EditConfig, _fields(e, EditConfig, "edit"))
        ec.validate()
        edits.append((prompt, ec))
    default = re.sub(r"[^A-Za-z0-9_.-]+", "-", image.stem)[:40] or "image"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(spec.get("name", f"{line_no:04d}-{default}")))
    return {"name": name, "image": str(image), "model": spec.get("model", DEFAULT_MODEL),
            "tune": tune, "edits": edits}  # fmt: skip


_MODELS: dict[str, Any] = {}  # per worker process: model reference -> loaded backbone


def run_image(line_no: int, text: str, base: str, out: str, device: str) -> dict[str, Any]:
    """One image's task (in a worker process or a Ray task): check, tune, edit, write its
    result.json. Never raises: a failure is the result's ``error``."""
    from . import logs

    logs.configure(False)
    start = time.time()
    record: dict[str, Any] = {"line": line_no, "status": "failed"}
    try:
        job = parse_line(text, line_no, Path(base))
        record["name"] = job["name"]
        folder = Path(out) / job["name"]
        logs.quiet_libraries()
        from .backbones import load_model
        from .edit import Editor
        from .outputs import save_edit
        from .tune import tune

        if job["model"] not in _MODELS:
            _MODELS[job["model"]] = load_model(job["model"], device)
        bb = _MODELS[job["model"]]
        tune(job["image"], folder / "tune", job["tune"], model=job["model"], progress=False, backbone=bb)  # fmt: skip
        ed = Editor(folder / "tune", device, backbone=bb)
        images = []
        for i, (prompt, ec) in enumerate(job["edits"]):
            res = ed.edit(prompt, ec, progress=False)
            images += [str(save_edit(im, p, folder / f"edit-{i}")) for im, p in zip(res.images, res.params)]  # fmt: skip
        record |= {"status": "done", "tune": str(folder / "tune"), "images": images}
    except UserError as e:
        record["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - one image's failure must not stop the batch
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        record["error"] = f"{type(e).__name__}: {first}"
    record["seconds"] = round(time.time() - start, 1)
    if "name" in record:
        atomic_write_json(Path(out) / record["name"] / RESULT, record)
    return record


def _done(out: Path, line_no: int, text: str, base: Path) -> dict[str, Any] | None:
    """The finished result of a line from an earlier run, if any."""
    try:
        name = parse_line(text, line_no, base)["name"]
    except UserError:
        return None  # a bad line is reported again
    path = out / name / RESULT
    if path.is_file():
        rec = json.loads(path.read_text())
        if rec.get("status") == "done":
            return rec | {"skipped": True}
    return None


def run_batch(jobs_file: str | Path, out: str | Path, workers: int = 1, ray: str | None = None,
              device: str = "cpu", progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run every line of ``jobs_file``; the manifest (also written to ``out/manifest.json``)."""
    from tqdm.auto import tqdm

    jobs_file, out = Path(jobs_file), Path(out)
    if not jobs_file.is_file():
        raise UserError(f"{jobs_file} does not exist", "pass a JSONL file, one image per line")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}", "e.g. --workers 2")
    out.mkdir(parents=True, exist_ok=True)
    base = jobs_file.resolve().parent
    lines = [(i, t) for i, t in enumerate(jobs_file.read_text().splitlines(), 1) if t.strip()]
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for i, t in lines:
        done = _done(out, i, t, base)
        if done is not None:
            results[i] = done
        else:
            todo.append((i, t))
    bar = tqdm(total=len(lines), initial=len(results), desc="batch", disable=not progress)
    args = [(i, t, str(base), str(out), device) for i, t in todo]
    for rec in _run(args, workers, ray):
        results[rec["line"]] = rec
        bar.update(1)
    bar.close()
    ordered = [results[i] for i, _ in lines]
    manifest = {"jobs": str(jobs_file), "out": str(out), "done": sum(r["status"] == "done" for r in ordered),
                "failed": sum(r["status"] == "failed" for r in ordered), "results": ordered}  # fmt: skip
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _run(args: list[tuple], workers: int, ray_address: str | None):
    """Yield each task's record as it finishes: a Ray cluster, else a local process pool."""
    if not args:
        return
    if ray_address is not None:
        try:
            import ray
        except ImportError:
            raise UserError("--ray needs Ray", "pip install 'unitune[ray]'") from None
        started = not ray.is_initialized()
        if started:
            kw = {"num_cpus": workers} if ray_address == "local" else {"address": ray_address}
            ray.init(**kw, include_dashboard=False, log_to_driver=False, configure_logging=False)
        task = ray.remote(num_cpus=1)(run_image)
        pending = [task.remote(*a) for a in args]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            if started:
                ray.shutdown()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (torch's threads do not survive fork)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_image, *a) for a in args]
        for f in as_completed(futures):
            yield f.result()
