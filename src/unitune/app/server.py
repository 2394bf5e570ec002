"""What `unitune serve` does, without the web page: check a request, queue it, report on it.

The page (ui.py) and the HTTP API (the page's own events, callable with gradio_client) call only
these methods; they never name a file path. Every request is checked here, before it is queued:
its values' types and ranges (a wrong type, NaN or an oversized list is one line, never a
traceback), the work it asks for against the operator's :class:`~unitune.config.WorkLimits`,
and the library's own checks (config validation, the tune folder's checkpoints, the upload
checks of store.py), so a bad request is refused with one line and nothing reaches the queue; a
full queue answers with jobs.QueueFull's message.

Who sees what: a job is named by its token (jobs.py) and belongs to the login that made it
(``owner``: gradio's username, None on a server without logins). Every method that names a job
takes the caller's owner and answers "no job" for a token the caller does not own; lists show
the caller's jobs only. What a job hands out is what it made: :meth:`Server.files` gives the
job's own images and their sidecars, never another path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import (
    SERVE_LIMITS,
    EditConfig,
    GridConfig,
    TuneConfig,
    WorkLimits,
    check_prompt,
    from_json,
)
from ..errors import UserError
from .jobs import Job, JobQueue
from .store import Store
from .worker import Worker


@dataclass(frozen=True)
class ServeConfig:
    """`unitune serve`'s settings (the CLI's flags)."""

    data: str = "unitune-data"  # the data directory: queue, uploads, tunes, edits
    host: str = "127.0.0.1"  # loopback only by default; another host needs auth
    port: int = 7860
    # logins "user:password", one per user (required when host is not loopback); each user
    # sees only the jobs they made
    auth: tuple[str, ...] = ()
    models: tuple[str, ...] = ("world",)  # the models the page may tune (fixed at start)
    device: str = "auto"
    gpu_jobs: int = 1  # jobs run at once (each slot loads its own copy of the models)
    max_queue: int = 32  # waiting jobs beyond which a submit is refused
    # the work one request may ask for: config.SERVE_LIMITS, tighter than the CLI's (a server's
    # users are not its operator); `--limit KEY=VALUE` changes one
    limits: WorkLimits = SERVE_LIMITS
    # the Refine tab's seeds: four edits to compare (an edit's own default, EditConfig.seeds, is
    # one)
    page_seeds: tuple[int, ...] = (0, 1, 2, 3)
    # a running job is stopped (as a cancel: its saved checkpoints stay) after this many seconds
    job_timeout_s: float = 4 * 3600
    max_attempts: int = 3  # a job the server died under this many times fails instead of rerunning


# --- one value from the page or the API, whatever its type ---------------------------------------
def _int(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi] from a number or its text (bool, NaN and fractions refused)."""
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if value.lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise UserError(
                f"{what} must be a whole number, got {value[:40]!r}", f"e.g. {lo}"
            ) from None
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise UserError(f"{what} must be a whole number, got {str(value)[:40]!r}", f"e.g. {lo}")
    if not lo <= value <= hi:
        raise UserError(f"{what} must be in [{lo}, {hi}], got {value}", "pick a value in range")
    return value


def _float(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] from a number or its text."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UserError(
                f"{what} must be a number, got {value[:40]!r}", f"e.g. {lo:g}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {str(value)[:40]!r}", f"e.g. {lo:g}")
    if not lo <= value <= hi:
        raise UserError(
            f"{what} must be in [{lo:g}, {hi:g}], got {value:g}", "pick a value in range"
        )
    return float(value)


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{what} must be text, got a {type(value).__name__}", "send a string")
    if len(value) > limit:
        raise UserError(f"{what} is {len(value)} characters, more than {limit}", "shorten it")
    if "\x00" in value:
        raise UserError(f"{what} contains a NUL character", "remove it")
    return value


def _list(text: Any, what: str, n_max: int, parse) -> tuple:
    """A comma list ("0,1,2") or a JSON list, each item through ``parse``, at most ``n_max``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        items: list = [text]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [x for x in _text(text, what, 20 * n_max + 20).replace(" ", "").split(",") if x]
    if not items:
        raise UserError(f"{what} is empty", f"e.g. {what} 0")
    if len(items) > n_max:
        raise UserError(
            f"{what} lists {len(items)} values, more than this server's {n_max}",
            f"pass at most {n_max}",
        )
    return tuple(parse(x) for x in items)


def _token(value: Any, what: str = "job") -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"no {what} given", f"pick a {what} from the page")
    return value.strip()


class Server:
    """The queue, the store and the worker of one `unitune serve`."""

    def __init__(self, cfg: ServeConfig, start_worker: bool = True) -> None:
        self.cfg = cfg
        self.limits = cfg.limits
        self.store = Store.open(cfg.data)
        self.queue = JobQueue(self.store.queue_path, cfg.max_queue, cfg.max_attempts)
        self.models = {ref: ref for ref in cfg.models}  # name shown -> model reference
        self.recovered = self.queue.recover()  # jobs a stopped server left running run again
        self.worker = Worker(
            self.queue,
            self.store,
            self.models,
            cfg.device,
            cfg.gpu_jobs,
            timeout_s=cfg.job_timeout_s,
        )
        if start_worker:
            self.worker.start()

    # --- requests -----------------------------------------------------------------------------
    def submit_tune(
        self,
        photo: bytes,
        caption: Any = "",
        steps: Any = None,
        model: Any = None,
        owner: str | None = None,
        preview: Any = "",
    ) -> str:
        """Queue a tune of an uploaded photo (its bytes): the job's token. ``steps``: None or ""
        for the method's default (config.TUNE_SCHEDULES), checkpoints at its default steps below
        ``steps`` and the last. ``preview``: an edit prompt rendered at each saved checkpoint
        while the tune runs (:meth:`previews`)."""
        lim = self.limits
        model = model or next(iter(self.models))
        if not isinstance(model, str) or model not in self.models:
            raise UserError(
                f"model {str(model)[:80]!r} is not one this server offers",
                f"pick one of {', '.join(self.models)}",
            )
        given = steps is not None and steps != ""
        steps = _int(steps, "steps", 1, lim.max_tune_steps) if given else None
        caption = _text(caption, "the caption", lim.max_prompt_chars).strip()
        # save_at stays the method's: tune() drops those past ``steps`` and saves the last
        cfg = replace(TuneConfig(), steps=steps, base_prompt=caption or None)
        cfg.validate(limits=lim)
        upload = self.store.save_upload(photo)
        settings = {k: v for k, v in asdict(cfg).items() if v != getattr(TuneConfig(), k)}
        params = {"upload": upload, "model": model, "settings": settings}
        preview = check_prompt(preview or "", lim, what="the preview edit", required=False)
        if preview.strip():
            params["preview"] = preview
        return self.queue.submit("tune", params, owner).token

    def previews(self, token: Any, owner: str | None = None) -> list[Path]:
        """The preview edits a tune job of ``owner`` has rendered so far (running or done), by
        checkpoint: the PNGs under that job's own tune folder, nothing else."""
        from ..preview import PREVIEW_DIR

        job = self.job(token, owner)
        if job.kind != "tune":
            return []  # only tunes render previews
        root = self.store.tune_dir(job.id) / PREVIEW_DIR
        steps = sorted(root.glob("step-*"), key=lambda d: int(d.name.split("-")[1]))
        pngs = [
            p for d in steps for p in sorted(d.glob("*.png")) if not p.name.endswith(".mask.png")
        ]
        return [self.store.inside(self.store.rel(p)) for p in pngs]

    def _tune(self, tune: Any, owner: str | None) -> tuple[Job, Path]:
        """A finished tune job of ``owner`` and its folder."""
        job = self.queue.find(_token(tune, "tune"), owner)
        if job is None or job.kind != "tune":
            raise UserError("no such tune", "pick a tune from the list")
        if job.state != "done":
            raise UserError(f"that tune is {job.state}", "wait until it is done")
        return job, self.store.inside(job.result["tune"])

    def _seeds(self, seeds: Any) -> tuple[int, ...]:
        lim = self.limits
        return _list(seeds, "seeds", lim.max_seeds, lambda x: _int(x, "a seed", 0, lim.max_seed))

    def _prompt(self, prompt: Any) -> str:
        return check_prompt(prompt, self.limits)

    def submit_grid(
        self,
        tune: Any,
        prompt: Any,
        t0s: Any = GridConfig.t0s,
        seeds: Any = GridConfig.seeds,
        checkpoints: Any = "",
        owner: str | None = None,
    ) -> str:
        """Queue the checkpoints x t0 (x seeds) grid of a tune: the job's token."""
        from ..checks import check_edit
        from ..tunefolder import TuneFolder

        lim = self.limits
        prompt = self._prompt(prompt)
        _job, folder = self._tune(tune, owner)
        cells = lim.max_grid_cells
        given = checkpoints if isinstance(checkpoints, (list, tuple)) else str(checkpoints or "")
        ckpts = (
            _list(given, "checkpoints", cells, lambda x: _int(x, "a checkpoint", 0, 10**9))
            if given
            else tuple(TuneFolder.open(folder).checkpoints)
        )
        grid = GridConfig(
            checkpoints=ckpts,
            t0s=_list(t0s, "t0", cells, lambda x: _float(x, "a t0", 0, 1)),
            seeds=self._seeds(seeds),
        )
        grid.validate(limits=lim)
        ec = EditConfig(interpolate=False)
        check_edit(folder, replace(ec, checkpoint=ckpts[0]), checkpoints=ckpts, limits=lim)
        params = {
            "tune": self.store.rel(folder),
            "prompt": prompt,
            "edit": {"interpolate": False},
            "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(grid).items()},
        }
        return self.queue.submit("grid", params, owner).token

    def submit_edit(
        self,
        tune: Any,
        prompt: Any,
        settings: dict[str, Any] | None = None,
        mask: bytes | None = None,
        owner: str | None = None,
    ) -> str:
        """Queue an edit; ``settings``: EditConfig fields (plus "fidelity" in [0, 1])."""
        from ..checks import check_edit

        lim = self.limits
        prompt = self._prompt(prompt)
        if settings is not None and not isinstance(settings, dict):
            raise UserError("the edit settings must be an object", "send EditConfig's fields")
        s = dict(settings or {})
        fidelity = s.pop("fidelity", None)
        unknown = set(s) - set(EditConfig.__dataclass_fields__) - {"guides", "size"}
        if unknown:
            raise UserError(
                f"unknown edit settings {sorted(unknown)[:5]}", "use EditConfig's fields"
            )
        if "seeds" in s:
            s["seeds"] = self._seeds(s["seeds"])
        try:
            ec = from_json(EditConfig, {k: v for k, v in s.items() if k not in ("guides", "size")})
        except TypeError as e:
            raise UserError(f"bad edit settings ({e})", "use EditConfig's fields") from None
        _job, folder = self._tune(tune, owner)
        if fidelity is not None:
            from ..fidelity_knob import apply_fidelity
            from ..tunefolder import TuneFolder

            steps = set(TuneFolder.open(folder).checkpoints)
            ec = apply_fidelity(ec, _float(fidelity, "fidelity", 0, 1), steps)
        check_edit(folder, ec, limits=lim)
        params = {
            "tune": self.store.rel(folder),
            "prompt": prompt,
            "edit": _fields(ec),
            "mask": None,
        }
        if mask is not None:
            params["mask"] = self.store.save_upload(mask, what="mask", mode="L")
        return self.queue.submit("edit", params, owner).token

    def cancel(self, token: Any, owner: str | None = None) -> str:
        """Stop a job of ``owner``: a queued one now, a running one at its next step (a tune keeps
        the checkpoints it saved). The job's state after the call."""
        return self.queue.request_cancel(self.job(token, owner).id)

    # --- reports ------------------------------------------------------------------------------
    def job(self, token: Any, owner: str | None = None) -> Job:
        job = self.queue.find(_token(token), owner)
        if job is None:
            raise UserError("no such job", "pick a job from the history")
        return job

    def files(self, token: Any, owner: str | None = None) -> list[Path]:
        """The images a finished job of ``owner`` made (absolute paths under the data dir): the
        only files the server hands out, with their sidecars (:meth:`sidecar`)."""
        r = self.job(token, owner).result or {}
        rels = r.get("cells") or r.get("images") or ([r["sheet"]] if "sheet" in r else [])
        return [self.store.inside(p) for p in rels]

    def masks(self, token: Any, owner: str | None = None) -> list[Path]:
        """The automatic masks a finished edit job of ``owner`` used (--auto-mask), one beside
        each of its images; none for other jobs."""
        r = self.job(token, owner).result or {}
        return [self.store.inside(p) for p in r.get("masks") or []]

    def sidecar(self, token: Any, index: Any, owner: str | None = None) -> tuple[Path, Path]:
        """(image, its sidecar .json) of one of a job's images."""
        from ..pngmeta import sidecar_path

        files = self.files(token, owner)
        if not files:
            raise UserError("that job has no images", "wait until it is done")
        path = files[_int(index, "the image index", 0, len(files) - 1)]
        return path, sidecar_path(path)

    def tunes(self, owner: str | None = None) -> list[tuple[str, str]]:
        """``owner``'s finished tunes as (label, token), newest first."""
        out = []
        for j in self.queue.list(kind="tune", state="done", owner=owner):
            cap = j.params["settings"].get("base_prompt") or "photo"
            steps = j.params["settings"].get("steps")
            length = f"{steps} steps" if steps is not None else "default steps"
            out.append((f"#{j.id} {cap} ({j.params['model']}, {length})", j.token))
        return out

    def history(self, owner: str | None = None, limit: int = 50) -> list[Job]:
        return self.queue.list(limit=limit, owner=owner)

    def close(self) -> None:
        self.worker.stop()


def _fields(ec: EditConfig) -> dict[str, Any]:
    """An EditConfig as job parameters: only what differs from the defaults."""
    d = EditConfig()
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in asdict(ec).items()
        if v != getattr(d, k)
    }


def check_serve(cfg: ServeConfig) -> None:
    """Every `unitune serve` argument checked before anything loads."""
    from ..backbones import probe

    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not cfg.auth:
        raise UserError(
            f"--host {cfg.host} opens the server beyond this machine without a login",
            "add --auth USER:PASSWORD",
        )
    for a in cfg.auth:
        if ":" not in a or not all(a.split(":", 1)):
            raise UserError("--auth must be USER:PASSWORD", "e.g. --auth ana:a-long-password")
    names = [a.split(":", 1)[0] for a in cfg.auth]
    if len(set(names)) != len(names):
        raise UserError("--auth names a user twice", "give each user one --auth USER:PASSWORD")
    if not 0 < cfg.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {cfg.port}", "e.g. --port 7860")
    if cfg.gpu_jobs < 1 or cfg.max_queue < 1:
        raise UserError(
            "--gpu-jobs and --max-queue must be >= 1", "e.g. --gpu-jobs 1 --max-queue 32"
        )
    if not (math.isfinite(cfg.job_timeout_s) and cfg.job_timeout_s > 0):
        raise UserError(
            f"--job-timeout must be > 0 seconds, got {cfg.job_timeout_s}",
            "e.g. --job-timeout 14400",
        )
    bad = [k for k, v in asdict(cfg.limits).items() if v < 0]
    if bad:
        raise UserError(f"--limit {bad[0]} must be >= 0", "e.g. --limit max_seeds=16")
    data = Path(cfg.data)
    if data.exists() and not data.is_dir():
        raise UserError(f"--data {cfg.data!r} is a file", "pass a folder")
    for ref in cfg.models:
        probe(ref)
