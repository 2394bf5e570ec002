"""`unitune batch jobs.jsonl --out DIR`: many photos, each tuned once and edited, in parallel.

Each line of the JSONL file is one image's job, the CLI's flags as JSON::

    {"image": "cat.jpg", "tune": {"steps": 128, "method": "lora"},
     "edits": [{"prompt": "a cat wearing sunglasses", "seeds": [0, 1], "t0": 0.9},
               {"prompt": "a painting of a cat", "cfg": 12}], "model": "world", "name": "cat"}

Keys are TuneConfig / EditConfig field names (a flag's dashes may stay: "save-at"; SINE's
"sine-until-t" and "sine-pretrained-weight", or the paper's "K" and "v", are "sine_K" and
"sine_v"). One task per image (tune + its edits) runs on a local process pool
(``--workers N``) or as a Ray task (``--ray auto|ADDRESS``, or ``local`` for a Ray on this
machine): Ray schedules them, there is no scheduler here. Every line is checked on its own, first,
within the work limits (``--limit KEY=VALUE``, config.WorkLimits): a bad line (unreadable JSON,
a key other than image / name / model / tune / edits, a setting of the wrong type or out of
range, a missing image, a "name" that is a path or that an earlier line already has, a failing
edit) fails that image with its one-line reason and the others run. A name is one folder inside
``DIR``: characters outside [A-Za-z0-9_.-] become "-". ``DIR/<name>/result.json``, written last,
marks an image as finished: a rerun skips those (and a tune interrupted mid-run resumes from its
folder). ``DIR/manifest.json`` lists every line's outcome at the end.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_MODEL,
    EditConfig,
    TuneConfig,
    WorkLimits,
    check_prompt,
    from_json,
    show_value,
)
from .errors import UserError
from .fileio import atomic_write_json

RESULT = "result.json"
# the CLI's SINE flags, and the paper's symbols, for EditConfig's fields
ALIASES = {
    "sine-until-t": "sine_K",
    "sine-pretrained-weight": "sine_v",
    "K": "sine_K",
    "v": "sine_v",
}
KEYS = ("image", "name", "model", "tune", "edits")  # a line's keys
MAX_LINE = 1_000_000  # characters of one line
RESERVED = {"manifest.json"}  # names of --out's own files


def _fields(d: Any, cls, what: str) -> dict[str, Any]:
    """JSON flags -> dataclass fields (dashes -> underscores, lists -> tuples), unknown refused."""
    if not isinstance(d, dict):
        raise UserError(
            f"{what} settings must be an object, got {show_value(d)}", 'e.g. {"steps": 128}'
        )
    names = set(cls.__dataclass_fields__)
    out = {}
    for k, v in d.items():
        f = ALIASES.get(str(k).replace("_", "-"), str(k).replace("-", "_"))
        if f not in names:
            raise UserError(
                f"unknown {what} setting {show_value(k)}", f"use {cls.__name__} field names"
            )
        if f in ("seeds", "save_at") and isinstance(v, str):
            try:
                v = [int(x) for x in v.split(",")]
            except ValueError:
                raise UserError(
                    f"{what} setting {k!r} must list integers, got {show_value(v)}",
                    'e.g. "0,1,2" or [0, 1, 2]',
                ) from None
        out[f] = v
    return out


def _name(spec: dict[str, Any], image: Path, line_no: int) -> str:
    """The line's folder under --out: its "name" (or line number and image stem), characters
    outside [A-Za-z0-9_.-] replaced by "-"; one plain folder name, never a path."""
    if "name" not in spec:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", image.stem).strip(".")[:40] or "image"
        return f"{line_no:04d}-{stem}"
    raw = spec["name"]
    fix = 'one folder name, e.g. "cat"'
    if not isinstance(raw, str):
        raise UserError(f'"name" must be text, got {show_value(raw)}', fix)
    if "/" in raw or "\\" in raw or raw.strip() in (".", "..") or Path(raw).is_absolute():
        raise UserError(f'"name" {show_value(raw)} is a path: outputs stay inside --out', fix)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip(".")
    if not name or len(name) > 100 or name.lower() in RESERVED:
        raise UserError(f'"name" {show_value(raw)} is not a usable folder name', fix)
    return name


def parse_line(
    text: str, line_no: int, base: Path, limits: WorkLimits = WorkLimits()
) -> dict[str, Any]:
    """One JSONL line -> {name, image, model, tune (TuneConfig), edits [(prompt, EditConfig)]},
    every setting checked (within ``limits``), the line alone; raises a one-line UserError
    naming what is wrong, whatever the line holds."""
    try:
        return _parse_line(text, line_no, base, limits)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any other shape of bad line: its one-line reason
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(
            f"line {line_no} is malformed ({type(e).__name__}: {show_value(first, 100)})",
            "see `unitune batch --help` for a line's form",
        ) from None


def _parse_line(text: str, line_no: int, base: Path, limits: WorkLimits) -> dict[str, Any]:
    from .images import load_image

    if len(text) > MAX_LINE:
        raise UserError(
            f"line {line_no} is {len(text)} characters, at most {MAX_LINE}", "one image per line"
        )
    try:
        spec = json.loads(text)
    except ValueError as e:  # a JSONDecodeError, or a number beyond Python's int-from-text limit
        why = getattr(e, "msg", None) or show_value(str(e), 80)
        raise UserError(f"line {line_no} is not JSON ({why})", "one JSON object per line") from None
    if not isinstance(spec, dict) or "image" not in spec:
        raise UserError(
            f'line {line_no} has no "image"', 'e.g. {"image": "cat.jpg", "edits": [...]}'
        )
    unknown = [k for k in spec if k not in KEYS]
    if unknown:
        raise UserError(
            f"line {line_no}: unknown key {show_value(unknown[0])}",
            f"a line's keys: {', '.join(KEYS)}",
        )
    if not isinstance(spec["image"], str) or not spec["image"] or "\x00" in spec["image"]:
        raise UserError(
            f'line {line_no}: "image" must be a file path, got {show_value(spec["image"])}',
            'e.g. "cat.jpg"',
        )
    model = spec.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model or len(model) > 4096:
        raise UserError(
            f'line {line_no}: "model" must be a model reference, got {show_value(model)}',
            'e.g. "world"',
        )
    image = Path(spec["image"])
    image = image if image.is_absolute() else base / image
    name = _name(spec, image, line_no)
    tune = from_json(TuneConfig, _fields(spec.get("tune", {}), TuneConfig, "tune"))
    tune.validate(limits=limits)
    edits_spec = spec.get("edits", [])
    if not isinstance(edits_spec, list):
        raise UserError(
            f'line {line_no}: "edits" must be a list of edits, got {show_value(edits_spec)}',
            'e.g. [{"prompt": "a cat wearing sunglasses"}]',
        )
    edits = []
    for e in edits_spec:
        if not isinstance(e, dict):
            raise UserError(
                f"line {line_no}: an edit must be an object, got {show_value(e)}",
                'e.g. {"prompt": "a cat wearing sunglasses"}',
            )
        e = dict(e)
        prompt = e.pop("prompt", None)
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise UserError(
                f'line {line_no}: an edit has no "prompt"',
                'e.g. {"prompt": "a cat wearing sunglasses"}',
            )
        check_prompt(prompt, limits)
        ec = from_json(EditConfig, _fields(e, EditConfig, "edit"))
        ec.validate(limits=limits)
        edits.append((prompt, ec))
    load_image(image)  # exists and decodes (size limits included)
    return {"name": name, "image": str(image), "model": model, "tune": tune, "edits": edits}


def check_names(jobs: dict[int, dict[str, Any]]) -> dict[int, str]:
    """Two lines may not share a folder: {line: its one-line failure} for every line whose name
    (case-insensitively: macOS and Windows folders) an earlier line already has; the first keeps
    it."""
    first: dict[str, int] = {}
    failed = {}
    for line_no in sorted(jobs):
        key = jobs[line_no]["name"].casefold()
        if key in first:
            why = (
                f"line {line_no}: name {jobs[line_no]['name']!r} is also line {first[key]}'s "
                "(two lines would share a folder)"
            )
            failed[line_no] = str(UserError(why, 'give each line its own "name"'))
        else:
            first[key] = line_no
    return failed


_MODELS: dict[str, Any] = {}  # per worker process: model reference -> loaded backbone


def run_image(
    line_no: int, text: str, base: str, out: str, device: str, limits: WorkLimits = WorkLimits()
) -> dict[str, Any]:
    """One image's task (in a worker process or a Ray task): check, tune, edit, write its
    result.json. Never raises: a failure is the result's ``error``."""
    from . import logs

    logs.configure(False)
    start = time.time()
    record: dict[str, Any] = {"line": line_no, "status": "failed"}
    try:
        job = parse_line(text, line_no, Path(base), limits)
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
        tune(
            job["image"],
            folder / "tune",
            job["tune"],
            model=job["model"],
            progress=False,
            backbone=bb,
        )
        ed = Editor(folder / "tune", device, backbone=bb)
        images = []
        for i, (prompt, ec) in enumerate(job["edits"]):
            res = ed.edit(prompt, ec, progress=False, limits=limits)
            images += [
                str(save_edit(im, p, folder / f"edit-{i}", res.mask))
                for im, p in zip(res.images, res.params)
            ]
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


def _done(out: Path, name: str) -> dict[str, Any] | None:
    """The finished result of a line from an earlier run, if any."""
    path = out / name / RESULT
    try:
        rec = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None  # an unreadable marker: run the line again
    if isinstance(rec, dict) and rec.get("status") == "done":
        return rec | {"skipped": True}
    return None


def run_batch(
    jobs_file: str | Path,
    out: str | Path,
    workers: int = 1,
    ray: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    limits: WorkLimits = WorkLimits(),
) -> dict[str, Any]:
    """Run every line of ``jobs_file``; the manifest (also written to ``out/manifest.json``).
    Every line is checked alone first (within ``limits``): a bad line, or one whose name an
    earlier line has, fails with its one-line reason and the others run."""
    from tqdm.auto import tqdm

    from .checks import check_batch

    check_batch(jobs_file, out, workers)
    jobs_file, out = Path(jobs_file), Path(out)
    try:
        text = jobs_file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"{jobs_file} is unreadable ({type(e).__name__})", "pass a UTF-8 JSONL file"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    base = jobs_file.resolve().parent
    lines = [(i, t) for i, t in enumerate(text.splitlines(), 1) if t.strip()]
    results: dict[int, dict[str, Any]] = {}
    jobs: dict[int, dict[str, Any]] = {}
    for i, t in lines:
        try:
            jobs[i] = parse_line(t, i, base, limits)
        except UserError as e:
            results[i] = {"line": i, "status": "failed", "error": str(e), "seconds": 0.0}
    for i, why in check_names(jobs).items():
        results[i] = {"line": i, "status": "failed", "error": why, "seconds": 0.0}
        del jobs[i]
    todo = []
    for i, t in lines:
        if i in jobs:
            done = _done(out, jobs[i]["name"])
            if done is not None:
                results[i] = done
            else:
                todo.append((i, t))
    bar = tqdm(total=len(lines), initial=len(results), desc="batch", disable=not progress)
    args = [(i, t, str(base), str(out), device, limits) for i, t in todo]
    for rec in _run(args, workers, ray):
        results[rec["line"]] = rec
        bar.update(1)
    bar.close()
    ordered = [results[i] for i, _ in lines]
    manifest = {
        "jobs": str(jobs_file),
        "out": str(out),
        "done": sum(r["status"] == "done" for r in ordered),
        "failed": sum(r["status"] == "failed" for r in ordered),
        "results": ordered,
    }
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
