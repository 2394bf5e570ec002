"""The worker of `unitune serve`: takes jobs from the queue and runs them through the library.

One worker thread per device slot (``gpu_jobs``, default 1): tunes and edits use the model, so
they run one at a time per slot, while the web handlers only read and write the queue and never
wait for a job. Each model the server offers is loaded once and shared by every tune and edit
of it (tune() leaves a model it is handed as it found it). A job that raises a UserError fails
with that one line; anything else fails with its type and first line, and the worker goes on.

A job runs inside a cancel scope (cancel.py): at every tuning or sampling step it asks whether
the job was cancelled (the queue's flag, read at most every ``CANCEL_POLL_S``) or ran past the
server's time limit, and stops there; the job ends "cancelled", keeping what it saved (a tune's
checkpoints).

Job parameters are checked when they are submitted (server.py); here they are only run:

- ``tune``: {upload, model, settings (TuneConfig fields)} -> tunes/tune-<id> (resumes there
  after a restart, from its last checkpoint);
- ``grid``: {tune, prompt, edit (EditConfig fields), grid (GridConfig fields)} -> the sheet and
  every cell as its own PNG, under edits/grid-<id>;
- ``edit``: {tune, prompt, edit, mask} -> one PNG per seed under edits/edit-<id>.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

from ..cancel import Cancelled, cancellable, checkpoint
from ..config import EditConfig, GridConfig, TuneConfig, from_json
from ..errors import UserError
from .jobs import Job, JobQueue
from .store import Store

log = logging.getLogger("unitune.serve")
CANCEL_POLL_S = 0.5  # how often a running job reads its cancel flag from the queue


class Worker:
    """Runs ``queue``'s jobs on ``slots`` threads with the models named in ``models``."""

    def __init__(
        self,
        queue: JobQueue,
        store: Store,
        models: dict[str, str],
        device: str = "auto",
        slots: int = 1,
        poll: float = 0.3,
        timeout_s: float = float("inf"),
    ) -> None:
        self.queue, self.store, self.models, self.device = queue, store, models, device
        self.slots, self.poll, self.timeout_s = slots, poll, timeout_s
        self._local = threading.local()  # per slot: model name -> Backbone (a model's state is
        # not shared between threads: each slot loads its own copy of the models it runs)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.slots):
            t = threading.Thread(target=self._loop, name=f"unitune-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim()
            if job is None:
                self._stop.wait(self.poll)
                continue
            self.run(job)

    def _should_stop(self, job: Job):
        """The cancel scope's question for ``job``: cancelled, or past the time limit?"""
        start, seen = time.monotonic(), {"at": 0.0, "cancel": False}

        def ask() -> bool:
            now = time.monotonic()
            if now - start > self.timeout_s:
                seen["why"] = f"stopped after the server's time limit of {self.timeout_s:g} s"
                return True
            if now - seen["at"] >= CANCEL_POLL_S:
                seen["at"], seen["cancel"] = now, self.queue.cancel_requested(job.id)
            return seen["cancel"]

        return ask, seen

    def run(self, job: Job) -> None:
        ask, seen = self._should_stop(job)
        try:
            with cancellable(ask):
                result = getattr(self, f"_{job.kind}")(job)
        except Cancelled:
            self.queue.fail(job.id, seen.get("why", "cancelled"), state="cancelled")
        except UserError as e:
            self.queue.fail(job.id, str(e))
        except Exception as e:  # noqa: BLE001 - a job's failure must not stop the worker
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.queue.fail(job.id, f"{type(e).__name__}: {first}")
        else:
            self.queue.finish(job.id, result)

    def backbone(self, name: str, copy: str = "main"):
        """The model ``name`` (one of the server's), loaded once per slot and ``copy``: "main"
        for tunes and edits, "preview" for the previews a tune renders while it trains that
        model (a second copy: the first is being trained)."""
        loaded = self._local.__dict__.setdefault("models", {})
        if (name, copy) not in loaded:
            from ..backbones import load_model

            loaded[name, copy] = load_model(self.models[name], self.device)
        return loaded[name, copy]

    def _editor(self, tune_rel: str):
        from ..edit import Editor
        from ..tunefolder import TuneFolder

        folder = self.store.inside(tune_rel)
        model = TuneFolder.open(folder).manifest.model
        name = next((n for n, ref in self.models.items() if ref == model), None)
        if name is None:
            raise UserError(
                f"{tune_rel} was tuned on a model this server does not offer", "tune it again here"
            )
        return Editor(folder, self.device, backbone=self.backbone(name))

    # --- the job kinds ------------------------------------------------------------------------
    def _tune(self, job: Job) -> dict[str, Any]:
        from ..tune import tune

        p = job.params
        # the model's and its method's defaults filled in (steps for the progress and ETA)
        cfg = from_json(TuneConfig, p["settings"]).for_model(self.backbone(p["model"]).defaults)
        out = self.store.tune_dir(job.id)
        start = time.time()
        first: list[int] = []
        shown: dict[str, Any] = {}  # the job's progress record (steps and previews)
        lock = threading.Lock()  # the preview thread writes it too

        def show(**fields: Any) -> None:
            with lock:
                shown.update(fields)
                self.queue.progress(job.id, **shown)

        def on_step(step: int, loss: float) -> None:
            checkpoint()  # a cancelled tune stops here, its saved checkpoints kept
            first.append(step) if not first else None
            done = step - first[0] + 1  # steps run by this process (a resumed run starts later)
            eta = (time.time() - start) / done * (cfg.steps - step)
            show(step=step, of=cfg.steps, loss=round(loss, 5), eta_s=round(eta, 1))

        previews = None
        if p.get("preview"):  # the edit at each checkpoint while the tune goes on
            from ..preview import Previewer

            previews = Previewer(
                out,
                p["preview"],
                self.device,
                backbone=self.backbone(p["model"], copy="preview"),
                on_preview=lambda step, _: show(preview_step=step),
                on_error=lambda step, e: log.warning("preview at step %s failed: %s", step, e),
            )
        finished = False
        try:
            folder = tune(
                self.store.upload(p["upload"]),
                out,
                cfg,
                model=self.models[p["model"]],
                device=self.device,
                progress=False,
                backbone=self.backbone(p["model"]),
                on_step=on_step,
                on_checkpoint=previews.submit if previews is not None else None,
            )
            finished = True
        finally:
            # a finished tune's previews all finish (the last checkpoint's too); a cancelled or
            # failed one keeps those already made and drops the queued
            if previews is not None:
                previews.close(cancel=not finished)
        return {
            "tune": self.store.rel(out),
            "checkpoints": folder.checkpoints,
            "loss": [round(v, 5) for v in folder.manifest.loss_history],
        }

    def _grid(self, job: Job) -> dict[str, Any]:
        from ..outputs import render_grid

        p = job.params
        ed = self._editor(p["tune"])
        out = self.store.edit_dir("grid", job.id)
        paths = render_grid(
            ed,
            p["prompt"],
            from_json(EditConfig, p["edit"]),
            from_json(GridConfig, p["grid"]),
            out / "grid.png",
            progress=False,
            cells=out / "cells",
        )
        return {"sheet": self.store.rel(paths[0]), "cells": [self.store.rel(c) for c in paths[1:]]}

    def _edit(self, job: Job) -> dict[str, Any]:
        from ..outputs import mask_path, save_edit

        p = job.params
        ed = self._editor(p["tune"])
        mask = self.store.upload(p["mask"]) if p.get("mask") else None
        res = ed.edit(p["prompt"], from_json(EditConfig, p["edit"]), mask=mask, progress=False)
        out = self.store.edit_dir("edit", job.id)
        saved = [save_edit(im, prm, out, res.mask) for im, prm in zip(res.images, res.params)]
        done: dict[str, Any] = {"images": [self.store.rel(s) for s in saved]}
        if res.mask is not None:  # --auto-mask: the mask the edit used, beside its image
            done["masks"] = [self.store.rel(mask_path(s)) for s in saved]
        return done
