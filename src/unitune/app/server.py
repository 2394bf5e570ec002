"""What `unitune serve` does, without the web page: check a request, queue it, report on it.

The page (ui.py) and the HTTP API (the page's own events, callable with gradio_client) call only
these methods; they never name a file path. Every request is checked here, before it is queued,
with the library's own checks (config validation, the tune folder's checkpoints, the upload
checks of store.py), so a bad one is refused with one line and nothing reaches the queue; a full
queue answers with jobs.QueueFull's message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import EditConfig, GridConfig, TuneConfig, from_json
from ..errors import UserError
from .jobs import Job, JobQueue
from .store import Store
from .worker import Worker

# what the page lets a user set for a tune: (TuneConfig field, smallest, largest)
TUNE_FIELDS = {"steps": (1, 2000)}


@dataclass(frozen=True)
class ServeConfig:
    """`unitune serve`'s settings (the CLI's flags)."""

    data: str = "unitune-data"  # the data directory: queue, uploads, tunes, edits
    host: str = "127.0.0.1"  # loopback only by default; another host needs auth
    port: int = 7860
    auth: str | None = None  # "user:password" (required when host is not loopback)
    models: tuple[str, ...] = ("world",)  # the models the page may tune (fixed at start)
    device: str = "auto"
    gpu_jobs: int = 1  # jobs run at once (each slot loads its own copy of the models)
    max_queue: int = 32  # waiting jobs beyond which a submit is refused


def _steps_list(text: str, what: str, lo: float, hi: float, cast=float) -> tuple:
    try:
        vals = tuple(cast(x) for x in str(text).replace(" ", "").split(",") if x != "")
    except ValueError:
        raise UserError(f"{what} must be a comma list of numbers, got {text!r}", f"e.g. {what} 0.8,0.9,1") from None  # fmt: skip
    if not vals or not all(lo <= v <= hi for v in vals):
        raise UserError(f"{what} must list values in [{lo:g}, {hi:g}], got {text!r}", "fix the list")  # fmt: skip
    return vals


class Server:
    """The queue, the store and the worker of one `unitune serve`."""

    def __init__(self, cfg: ServeConfig, start_worker: bool = True) -> None:
        self.cfg = cfg
        self.store = Store.open(cfg.data)
        self.queue = JobQueue(self.store.queue_path, max_queued=cfg.max_queue)
        self.models = {ref: ref for ref in cfg.models}  # name shown -> model reference
        self.recovered = self.queue.recover()  # jobs a stopped server left running run again
        self.worker = Worker(self.queue, self.store, self.models, cfg.device, cfg.gpu_jobs)
        if start_worker:
            self.worker.start()

    # --- requests -----------------------------------------------------------------------------
    def submit_tune(self, photo: bytes, caption: str = "", steps: int = 128,
                    model: str | None = None) -> int:  # fmt: skip
        """Queue a tune of an uploaded photo (its bytes): the job id."""
        model = model or next(iter(self.models))
        if model not in self.models:
            raise UserError(f"model {model!r} is not one this server offers", f"pick one of {', '.join(self.models)}")  # fmt: skip
        steps = int(steps)
        lo, hi = TUNE_FIELDS["steps"]
        if not lo <= steps <= hi:
            raise UserError(f"steps must be in [{lo}, {hi}], got {steps}", "e.g. 128 (the paper)")
        save_at = tuple(s for s in TuneConfig().save_at if s < steps) + (steps,)
        cfg = replace(TuneConfig(), steps=steps, save_at=save_at, base_prompt=caption.strip() or None)  # fmt: skip
        cfg.validate()
        upload = self.store.save_upload(photo)
        settings = {k: v for k, v in asdict(cfg).items() if v != getattr(TuneConfig(), k)}
        return self.queue.submit("tune", {"upload": upload, "model": model, "settings": settings})

    def tune_of(self, tune_job: int) -> str:
        """The tune folder (relative to the data dir) of a finished tune job."""
        job = self.queue.get(int(tune_job))
        if job is None or job.kind != "tune":
            raise UserError(f"no tune job {tune_job}", "pick a tune from the list")
        if job.state != "done":
            raise UserError(f"tune {tune_job} is {job.state}", "wait until it is done")
        return job.result["tune"]

    def _check_edit(self, tune_job: int, prompt: str, ec: EditConfig, checkpoints=()) -> str:
        from ..checks import check_edit

        if not prompt.strip():
            raise UserError("the edit prompt is empty", 'describe the edit, e.g. "a cat wearing sunglasses"')  # fmt: skip
        tune = self.tune_of(tune_job)
        check_edit(self.store.inside(tune), ec, checkpoints=tuple(checkpoints))
        return tune

    def submit_grid(self, tune_job: int, prompt: str, t0s: str = "0.8,0.9,1",
                    seeds: str = "0", checkpoints: str = "") -> int:  # fmt: skip
        """Queue the checkpoints x t0 (x seeds) grid of a tune: the job id."""
        from ..tunefolder import TuneFolder

        tune = self.tune_of(tune_job)
        ckpts = (_steps_list(checkpoints, "checkpoints", 0, 1e9, int) if str(checkpoints).strip()
                 else tuple(TuneFolder.open(self.store.inside(tune)).checkpoints))  # fmt: skip
        grid = GridConfig(checkpoints=ckpts, t0s=_steps_list(t0s, "t0", 0, 1),
                          seeds=_steps_list(seeds, "seeds", 0, 2**31, int))  # fmt: skip
        grid.validate()
        ec = EditConfig(interpolate=False)
        self._check_edit(tune_job, prompt, replace(ec, checkpoint=ckpts[0]), ckpts)
        params = {"tune": tune, "prompt": prompt, "edit": {"interpolate": False},
                  "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(grid).items()}}  # fmt: skip
        return self.queue.submit("grid", params)

    def submit_edit(self, tune_job: int, prompt: str, settings: dict[str, Any] | None = None,
                    mask: bytes | None = None) -> int:  # fmt: skip
        """Queue an edit; ``settings``: EditConfig fields (plus "fidelity" in [0, 1])."""
        s = dict(settings or {})
        fidelity = s.pop("fidelity", None)
        unknown = set(s) - set(EditConfig.__dataclass_fields__) - {"guides", "size"}
        if unknown:
            raise UserError(f"unknown edit settings {sorted(unknown)}", "use EditConfig's fields")
        try:
            ec = from_json(EditConfig, {k: v for k, v in s.items() if k not in ("guides", "size")})
        except TypeError as e:
            raise UserError(f"bad edit settings ({e})", "use EditConfig's fields") from None
        tune = self.tune_of(tune_job)
        if fidelity is not None:
            from ..fidelity import apply_fidelity
            from ..tunefolder import TuneFolder

            steps = set(TuneFolder.open(self.store.inside(tune)).checkpoints)
            ec = apply_fidelity(ec, float(fidelity), steps)
        self._check_edit(tune_job, prompt, ec)
        params = {"tune": tune, "prompt": prompt, "edit": _fields(ec), "mask": None}
        if mask is not None:
            params["mask"] = self.store.save_upload(mask, what="mask", mode="L")
        return self.queue.submit("edit", params)

    # --- reports ------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        job = self.queue.get(int(job_id))
        if job is None:
            raise UserError(f"no job {job_id}", "pick a job from the history")
        return job

    def files(self, job_id: int) -> list[Path]:
        """The images a finished job made (absolute paths under the data dir)."""
        r = self.job(job_id).result or {}
        rels = r.get("cells") or r.get("images") or ([r["sheet"]] if "sheet" in r else [])
        return [self.store.inside(p) for p in rels]

    def tunes(self) -> list[tuple[str, int]]:
        """Finished tunes as (label, job id), newest first."""
        out = []
        for j in self.queue.list(kind="tune", state="done"):
            cap = j.params["settings"].get("base_prompt") or "photo"
            out.append((f"#{j.id} {cap} ({j.params['model']}, {j.params['settings'].get('steps', 128)} steps)", j.id))  # fmt: skip
        return out

    def close(self) -> None:
        self.worker.stop()


def _fields(ec: EditConfig) -> dict[str, Any]:
    """An EditConfig as job parameters: only what differs from the defaults."""
    d = EditConfig()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(ec).items() if v != getattr(d, k)}  # fmt: skip


def check_serve(cfg: ServeConfig) -> None:
    """Every `unitune serve` argument checked before anything loads."""
    from ..backbones import probe

    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not cfg.auth:
        raise UserError(f"--host {cfg.host} opens the server beyond this machine without a login", "add --auth USER:PASSWORD")  # fmt: skip
    if cfg.auth is not None and (":" not in cfg.auth or not all(cfg.auth.split(":", 1))):
        raise UserError("--auth must be USER:PASSWORD", "e.g. --auth ana:a-long-password")
    if not 0 < cfg.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {cfg.port}", "e.g. --port 7860")
    if cfg.gpu_jobs < 1 or cfg.max_queue < 1:
        raise UserError("--gpu-jobs and --max-queue must be >= 1", "e.g. --gpu-jobs 1 --max-queue 32")  # fmt: skip
    data = Path(cfg.data)
    if data.exists() and not data.is_dir():
        raise UserError(f"--data {cfg.data!r} is a file", "pass a folder")
    for ref in cfg.models:
        probe(ref)
