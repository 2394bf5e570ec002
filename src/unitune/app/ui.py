"""The web page of `unitune serve` (Gradio): Tune -> Explore -> Refine -> Download, and History.

No logic of its own: every button calls a :class:`~unitune.app.server.Server` method, which
checks the request and queues a job; one timer polls the jobs and shows their progress. The
events carry ``api_name``s, so the same calls are the HTTP API (gradio_client; README).

What leaves the server: a job's own images and sidecars, as copies handed to Gradio (``_hand``),
never a path into the data directory. Gradio serves only its own upload/cache folder, which is a
private temporary folder outside the data directory (cli.py), and the data directory is on its
block list besides. Every call runs as the caller: gradio's login name is the owner passed to
the server, so a user sees and fetches only their own jobs. An upload is read once as bytes,
decoded and re-encoded by store.py, and the file the browser sent is deleted at once.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import json
import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from ..config import (
    AUTO_MASK_RULES,
    EDIT_METHODS,
    ROUTES,
    STARTS,
    TUNE_PRESETS,
    TUNE_SCHEDULES,
    EditConfig,
    GridConfig,
)
from ..errors import UserError
from ..pngmeta import read_sidecar
from .jobs import QueueFull
from .server import Server

CSS = "#cells .thumbnail-item {min-width: 96px}"
OUTBOX = "unitune-out"  # under Gradio's upload folder: the copies handed to clients
log = logging.getLogger("unitune.serve")


def _owner(request: gr.Request | None) -> str | None:
    """The caller's login (None on a server without --auth)."""
    return getattr(request, "username", None) or None


def _ui_error(fn):
    """A refused request -> gr.Error with its one line (in the page and the API's reply);
    anything else is a bug: logged with its traceback, answered without internals."""

    @functools.wraps(fn)  # gradio reads gr.Request / gr.SelectData from the signature
    def wrapped(*a, **kw):
        try:
            return fn(*a, **kw)
        except (UserError, QueueFull) as e:  # a refusal: one line back, one line in the log
            log.info("%s refused: %s", fn.__name__, e)
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - a bug: the client gets one line, the log the traceback
            log.exception("%s failed", fn.__name__)
            raise gr.Error(
                "the server could not do that (its log says why)", print_exception=False
            ) from None

    return wrapped


def _choice(field: str, choices: tuple[str, ...], label: str):
    """A radio of one of EditConfig's choice fields, at its default (elem_id: the field's name
    with dashes), its value passed through raw (:func:`_raw`)."""
    default = getattr(EditConfig, field)
    elem = field.replace("_", "-")
    return _raw(gr.Radio(list(choices), value=default, label=label, elem_id=elem))


def _raw(component):
    """``component`` whose value reaches the handler as the client sent it: server.py checks
    every value (one line for any type), where gradio's own preprocessing answers a wrong type
    with a Python message and a logged traceback. (Set on the instance: a subclass would make
    gradio write a .pyi stub beside this module.)"""
    component.preprocess = lambda payload: payload
    return component


def _quiet(component, validate: bool = False):
    """``component`` whose preprocessing failures (an upload of the wrong type, an unreadable
    image; with ``validate``, a payload of the wrong shape too) are answered in one line, without
    a logged traceback."""
    inner, model = component.preprocess, None
    if validate:  # an input-only component: its payload's model is checked below, in one line
        info, model = component.api_info(), component.data_model
        component.data_model, component.api_info = None, lambda: info

    def preprocess(payload):
        try:
            if model is not None and payload is not None:
                payload = model.model_validate(payload, context={"validate_meta": True})
            return inner(payload)
        except gr.Error as e:
            _drop_upload(payload)  # refused (e.g. the wrong type): not kept
            raise gr.Error(str(e).splitlines()[0][:200], print_exception=False) from None
        except Exception:  # noqa: BLE001 - gradio's decoders raise anything
            what = component.label or "upload"
            raise gr.Error(f"the {what} could not be read", print_exception=False) from None

    component.preprocess = preprocess
    return component


def _upload_dir() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _take_upload(path: Any, what: str) -> bytes:
    """The bytes of a file the client uploaded; the uploaded file itself is deleted (only the
    decoded image store.py writes is kept). Only files in Gradio's upload folder are read."""
    if not path or not isinstance(path, str):
        raise UserError(f"no {what} uploaded", f"drop a {what} into the page first")
    p = Path(path).resolve()
    if _upload_dir() not in p.parents or not p.is_file():
        raise UserError(f"no {what} uploaded", f"upload the {what} again")
    data = p.read_bytes()
    if _upload_dir() / OUTBOX not in p.parents:  # our own hand-outs are decoded images: kept
        p.unlink(missing_ok=True)
    return data


def _drop_upload(payload: Any) -> None:
    """Delete the file(s) a refused upload left in Gradio's upload folder."""
    for item in payload if isinstance(payload, list) else [payload]:
        p = getattr(item, "path", None)
        if isinstance(p, str) and _upload_dir() in Path(p).resolve().parents:
            Path(p).unlink(missing_ok=True)


def _hand(path: Path) -> str:
    """A copy of one of the server's files for Gradio to serve: in a fresh folder with a random
    name inside Gradio's own upload folder, never the data directory's path."""
    out = _upload_dir() / OUTBOX / secrets.token_hex(16)
    out.mkdir(parents=True)
    dst = out / path.name
    shutil.copyfile(path, dst)
    return str(dst)


def _progress_html(job: dict[str, Any] | None) -> str:
    if not job:
        return ""
    state, p = job["state"], job.get("progress") or {}
    if state in ("failed", "cancelled"):
        return f"<b>{job['kind']} {state}:</b> {html.escape(job['error'] or '')}"
    if state == "done":
        return f"<b>{job['kind']} done</b>"
    if state == "queued" or not p:
        return f"{job['kind']} {state}…"
    return (
        f"<progress value='{p['step']}' max='{p['of']}'></progress> "
        f"{job['kind']} step {p['step']}/{p['of']} · loss {p['loss']:.4f} · ETA {p['eta_s']:.0f} s"
    )


def _mask_bytes(editor_value: dict | None) -> bytes | None:
    """gr.ImageEditor's value -> a white-on-black PNG of what was drawn (None: nothing drawn)."""
    import io

    import numpy as np
    from PIL import Image

    layers = (editor_value or {}).get("layers") or [] if isinstance(editor_value, dict) else []
    if not layers:
        return None
    alpha = np.zeros(np.asarray(layers[0]).shape[:2], dtype=np.uint8)
    for layer in layers:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4 and a.shape[:2] == alpha.shape:
            alpha = np.maximum(alpha, a[..., 3])
    if not alpha.any():
        return None
    buf = io.BytesIO()
    Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def build(server: Server) -> gr.Blocks:
    """The page, wired to ``server``."""

    @_ui_error
    def show_upload(photo: str | None, request: gr.Request):
        """The photo as the server keeps it (checked, RGB, PNG): shown, and what the Tune
        button sends (the browser's file is gone once read)."""
        name = server.store.save_upload(_take_upload(photo, "photo"))
        kept = _hand(server.store.upload(name))
        return kept, kept

    @_ui_error
    def submit_tune(
        photo: str | None,
        caption: str,
        steps: float | None,
        model: str,
        preview: str,
        request: gr.Request,
    ):
        """Upload a photo and queue its tune -> (job token, status). ``preview``: an edit shown
        at each checkpoint while the tune runs."""
        job = server.submit_tune(
            _take_upload(photo, "photo"), caption, steps, model, _owner(request), preview
        )
        return job, "tune queued"

    @_ui_error
    def submit_grid(tune: str | None, prompt: str, t0s: str, seeds: str, request: gr.Request):
        """Queue the checkpoints x t0 grid of a finished tune -> (job token, status)."""
        job = server.submit_grid(tune, prompt, t0s, seeds, owner=_owner(request))
        return job, "grid queued"

    @_ui_error
    def submit_edit(
        tune,
        prompt,
        seeds,
        fidelity,
        use_fidelity,
        guidance,
        method,
        K,
        v,
        mask,
        start,
        inv_neg,
        auto,
        rule,
        threshold,
        routing,
        request: gr.Request,
    ):
        """Queue an edit with the Refine settings -> (job token, status)."""
        settings: dict[str, Any] = {"seeds": seeds, "method": method, "sine_K": K, "sine_v": v}
        settings |= {
            "start": start,
            "auto_mask": auto,
            "auto_mask_rule": rule,
            "auto_mask_threshold": threshold,
            "route": routing,
        }
        if start == "inversion":  # the fix applies to an inversion start only
            settings["inversion_negative"] = inv_neg
        if isinstance(guidance, str) and guidance.strip():
            settings["prompt_guidance"] = guidance.strip()
        if use_fidelity:
            settings["fidelity"] = fidelity
        job = server.submit_edit(tune, prompt, settings, _mask_bytes(mask), _owner(request))
        return job, "edit queued"

    @_ui_error
    def cancel(job: str | None, request: gr.Request) -> str:
        """Stop a job: a queued one now, a running one at its next step -> its state."""
        return server.cancel(job, _owner(request))

    @_ui_error
    def job_status(job: str, request: gr.Request) -> dict[str, Any]:
        """A job's state, progress or error (API: poll this)."""
        return server.job(job, _owner(request)).public()

    @_ui_error
    def job_files(job: str, request: gr.Request) -> list[str]:
        """The PNGs a finished job made (each with its `parameters` chunk)."""
        return [_hand(p) for p in server.files(job, _owner(request))]

    @_ui_error
    def job_previews(job: str, request: gr.Request) -> list[str]:
        """The preview edits a tune has rendered so far, checkpoint by checkpoint."""
        return [_hand(p) for p in server.previews(job, _owner(request))]

    @_ui_error
    def job_masks(job: str, request: gr.Request) -> list[str]:
        """The automatic masks a finished edit used, one per image (white = may change)."""
        return [_hand(p) for p in server.masks(job, _owner(request))]

    def _job_public(token: str | None, owner: str | None) -> dict | None:
        job = server.queue.find(token, owner) if token else None
        return job.public() if job else None

    def poll(
        tune_job,
        grid_job,
        edit_job,
        grid_shown,
        edit_shown,
        picks_shown,
        previews_shown,
        request: gr.Request,
    ):
        """One tick: progress of the three current jobs; the tune list when a tune finished (the
        newest picked); galleries filled once a job is done. Unchanged parts are skipped, so an
        open list or a selection in the page is left alone."""
        owner = _owner(request)
        out: list[Any] = [
            _progress_html(_job_public(j, owner)) for j in (tune_job, grid_job, edit_job)
        ]
        picks = server.tunes(owner)
        ids = [i for _, i in picks]
        changed = ids != (picks_shown or [])
        out += [gr.update(choices=picks, value=ids[0]) if changed else gr.skip(), ids]
        fresh = None  # the edit job whose images are shown now
        for j, shown in ((grid_job, grid_shown), (edit_job, edit_shown)):
            job = server.queue.find(j, owner) if j else None
            if job is not None and job.state == "done" and shown != job.token:
                out += [
                    [(_hand(p), _caption(p)) for p in server.files(job.token, owner)],
                    job.token,
                ]
                fresh = job.token if j == edit_job else None
            else:
                out += [gr.skip(), gr.skip()]
        # the edit's automatic masks, with its images (empty without the automatic mask)
        masks = server.masks(fresh, owner) if fresh else None
        out.append([_hand(p) for p in masks] if masks is not None else gr.skip())
        out.append(
            [
                [j.kind, j.state, (j.progress or {}).get("step", ""), j.error or ""]
                for j in server.history(owner)
            ]
        )
        # the tune's previews, as each checkpoint's arrive (a tune without previews: none)
        try:
            pv = server.previews(tune_job, owner) if tune_job else []
        except UserError:  # a token from elsewhere: no previews to show
            pv = []
        key = [tune_job, len(pv)]
        fresh_pv = key != (previews_shown or [])
        out += [[(_hand(p), _caption(p)) for p in pv] if fresh_pv else gr.skip(), key]
        return out

    @_ui_error
    def select(files_of: str | None, evt: gr.SelectData, request: gr.Request):
        """A clicked cell -> its image, parameters and downloads (PNG, sidecar)."""
        path, side = server.sidecar(files_of, evt.index, _owner(request))
        params = read_sidecar(path)
        text = json.dumps(
            {k: params[k] for k in ("prompt", "seed", "cfg_scale", "steps") if k in params}
            | {"checkpoint": params["edit_config"]["checkpoint"], "t0": params["edit_config"]["t0"]}
        )
        png = _hand(path)
        return (
            png,
            text,
            gr.update(value=png, interactive=True),
            gr.update(value=_hand(side), interactive=True),
        )

    with gr.Blocks(title="unitune", delete_cache=(600, 3600)) as page:
        gr.Markdown("# unitune\nTune a diffusion model on one photo, then edit it with a sentence.")
        # job tokens: hidden text, not State, so the API's replies carry them too
        tune_job, grid_job, edit_job = (gr.Textbox(None, visible=False) for _ in range(3))
        grid_shown, edit_shown = gr.State(None), gr.State(None)
        picks_shown = gr.State([])
        previews_shown = gr.State([])  # [tune token, previews shown]
        d_steps = server.limits.max_tune_steps
        paper = TUNE_PRESETS["unitune"]["steps"]  # UniTune §3.2
        full, lora = TUNE_SCHEDULES["full"].steps, TUNE_SCHEDULES["lora"].steps
        with gr.Tab("1 Tune"):
            with gr.Row():
                with gr.Column():
                    # a file, not gr.Image: the upload reaches our checks (store.py) undecoded
                    photo = _quiet(
                        gr.File(
                            label="photo", file_types=["image"], type="filepath", elem_id="photo"
                        )
                    )
                    preview = gr.Image(
                        label="as stored", interactive=False, elem_id="photo-preview"
                    )
                with gr.Column():
                    caption = gr.Textbox(
                        label="base caption (optional)", placeholder="a cat", elem_id="caption"
                    )
                    steps = _raw(
                        gr.Number(
                            None,  # empty: the method's default
                            label=f"steps (empty: full {full}, LoRA {lora}; paper {paper}; "
                            f"at most {d_steps})",
                            precision=0,
                            elem_id="steps",
                        )
                    )
                    model = _raw(
                        gr.Dropdown(
                            list(server.models), value=next(iter(server.models)), label="model"
                        )
                    )
                    preview_prompt = gr.Textbox(
                        label="preview edit (optional): shown at every checkpoint while it tunes",
                        placeholder="a cat wearing sunglasses",
                        elem_id="preview-prompt",
                    )
                    with gr.Row():
                        tune_btn = gr.Button("Tune", variant="primary", elem_id="tune-btn")
                        tune_stop = gr.Button("Cancel", elem_id="tune-cancel")
                    tune_status = gr.HTML(elem_id="tune-status")
            previews_view = gr.Gallery(
                label="previews (by checkpoint: stop the tune once one is good)",
                columns=4,
                elem_id="previews",
            )
        with gr.Tab("2 Explore"):
            with gr.Row():
                # any token may come from the API; the server checks it
                # (a finished tune of the caller's)
                pick = _raw(
                    gr.Dropdown(
                        [], label="tune", elem_id="pick", interactive=True, allow_custom_value=True
                    )
                )
                prompt = gr.Textbox(
                    label="edit prompt", placeholder="a cat wearing sunglasses", elem_id="prompt"
                )
                t0s = gr.Textbox(_comma(GridConfig.t0s), label="t0 (SDEdit starts)", elem_id="t0s")
                grid_seeds = gr.Textbox(
                    _comma(GridConfig.seeds), label="seeds", elem_id="grid-seeds"
                )
            with gr.Row():
                grid_btn = gr.Button("Render grid", variant="primary", elem_id="grid-btn")
                grid_stop = gr.Button("Cancel", elem_id="grid-cancel")
            grid_status = gr.HTML(elem_id="grid-status")
            cells = gr.Gallery(
                label="checkpoints x t0: click a cell",
                columns=6,
                height=420,
                format="png",
                elem_id="cells",
            )
        with gr.Tab("3 Refine"):
            with gr.Row():
                seeds = gr.Textbox(_comma(server.cfg.page_seeds), label="seeds", elem_id="seeds")
                use_fid = _raw(gr.Checkbox(False, label="use the fidelity knob"))
                fidelity = _raw(gr.Slider(0, 1, 0.5, label="fidelity (0 expressive .. 1 faithful)"))
                guidance = gr.Textbox(label="prompt guidance: base prompt (optional)")
            with gr.Row():
                method = _raw(gr.Radio(list(EDIT_METHODS), value=EditConfig.method, label="method"))
                K = _raw(
                    gr.Slider(
                        0,
                        1000,
                        EditConfig.sine_K,
                        step=10,
                        label="SINE: the tuned model guides until t (K, 0..1000)",
                    )
                )
                v = _raw(
                    gr.Slider(
                        0, 1, EditConfig.sine_v, label="SINE: the pretrained model's weight (v)"
                    )
                )
            with gr.Row():  # what the edit keeps of the photo (inversion.py, automask.py)
                start = _raw(
                    gr.Radio(
                        list(STARTS),
                        value=EditConfig.start,
                        label="start: noise (SDEdit) or the photo's inversion",
                        elem_id="start",
                    )
                )
                inv_neg = _raw(
                    gr.Checkbox(
                        EditConfig.inversion_negative,
                        label="inversion: the tune prompt as CFG's baseline",
                        elem_id="inv-neg",
                    )
                )
                auto = _raw(
                    gr.Checkbox(
                        EditConfig.auto_mask,
                        label="automatic mask: only where the edit belongs may change",
                        elem_id="auto-mask",
                    )
                )
                rule = _choice(
                    "auto_mask_rule",
                    AUTO_MASK_RULES,
                    "automatic mask cut: diffedit (local edits) or otsu (any area, also "
                    "backgrounds)",
                )
                threshold = _raw(
                    gr.Slider(
                        0,
                        1,
                        EditConfig.auto_mask_threshold,
                        label="automatic mask threshold, diffedit cut (lower = larger)",
                        elem_id="auto-mask-threshold",
                    )
                )
                routing = _choice(
                    "route",
                    ROUTES,
                    "route: auto = the map decides; a local edit keeps the photo (inversion + "
                    "automatic mask), a global one samples as set",
                )
            mask = _quiet(
                gr.ImageEditor(
                    label="mask: paint where the edit may change (optional; with the automatic "
                    "mask, their intersection)",
                    type="numpy",
                ),
                validate=True,
            )
            with gr.Row():
                edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
                edit_stop = gr.Button("Cancel", elem_id="edit-cancel")
            edit_status = gr.HTML(elem_id="edit-status")
            results = gr.Gallery(
                label="edits: click one", columns=6, height=420, format="png", elem_id="results"
            )
            masks_view = gr.Gallery(
                label="the automatic masks the edits used (white = may change)",
                columns=6,
                height=200,
                format="png",
                elem_id="masks",
            )
        with gr.Tab("Download"):
            with gr.Row():
                chosen = gr.Image(
                    label="chosen", type="filepath", interactive=False, elem_id="chosen"
                )
                with gr.Column():
                    chosen_params = gr.Code(
                        label="parameters", language="json", elem_id="chosen-params"
                    )
                    download = gr.DownloadButton(
                        "Download PNG", interactive=False, elem_id="download"
                    )
                    sidecar = gr.DownloadButton(
                        "Download sidecar (.json)", interactive=False, elem_id="sidecar"
                    )
        with gr.Tab("History"):
            history = gr.Dataframe(headers=["kind", "state", "step", "error"], elem_id="history")
        # the API-only calls: poll a job, fetch its files, cancel it
        api_job = gr.Textbox(visible=False)
        api_status, api_files, api_state = (
            gr.JSON(visible=False),
            gr.File(file_count="multiple", visible=False),
            gr.Textbox(visible=False),
        )

        private = {"api_visibility": "private"}
        photo.upload(show_upload, photo, [preview, photo], **private)
        tune_btn.click(
            submit_tune,
            [photo, caption, steps, model, preview_prompt],
            [tune_job, tune_status],
            api_name="submit_tune",
        )
        grid_btn.click(
            submit_grid,
            [pick, prompt, t0s, grid_seeds],
            [grid_job, grid_status],
            api_name="submit_grid",
        )
        edit_btn.click(
            submit_edit,
            [pick, prompt, seeds, fidelity, use_fid, guidance, method, K, v, mask]
            + [start, inv_neg, auto, rule, threshold, routing],
            [edit_job, edit_status],
            api_name="submit_edit",
        )
        api_job.change(job_status, api_job, api_status, api_name="job")
        api_status.change(job_files, api_job, api_files, api_name="files")
        api_masks = gr.File(file_count="multiple", visible=False)
        gr.Button(visible=False).click(job_masks, api_job, api_masks, api_name="masks")
        api_previews = gr.File(file_count="multiple", visible=False)
        gr.Button(visible=False).click(job_previews, api_job, api_previews, api_name="previews")
        gr.Button(visible=False).click(cancel, api_job, api_state, api_name="cancel")
        for btn, job in ((tune_stop, tune_job), (grid_stop, grid_job), (edit_stop, edit_job)):
            btn.click(cancel, job, api_state, **private)
        timer = gr.Timer(1.0)
        timer.tick(
            poll,
            [tune_job, grid_job, edit_job, grid_shown, edit_shown, picks_shown, previews_shown],
            [
                tune_status,
                grid_status,
                edit_status,
                pick,
                picks_shown,
                cells,
                grid_shown,
                results,
                edit_shown,
                masks_view,
                history,
                previews_view,
                previews_shown,
            ],
            show_progress="hidden",
            **private,
        )
        shown = [chosen, chosen_params, download, sidecar]
        cells.select(select, grid_shown, shown, **private)
        results.select(select, edit_shown, shown, **private)
    return page


def _caption(path: Path) -> str:
    ec = read_sidecar(path)["edit_config"]
    return (
        f"ckpt {ec['checkpoint']} · t0 {ec['t0']:g} · "
        f"seed {ec['seeds'][0] if len(ec['seeds']) == 1 else read_sidecar(path)['seed']}"
    )


def _comma(values) -> str:
    """A form's comma list of a config's numbers, e.g. (0.8, 0.9, 1.0) -> "0.8,0.9,1"."""
    return ",".join(f"{v:g}" for v in values)


class LoginGuard:
    """gradio's login check, slowed for guessing: passwords compared in constant time, and after
    ``free`` failed attempts for a user name every attempt for it is refused (the right password
    too) for a lockout that doubles with each further failure, up to ``cap_s`` seconds. Parallel
    guesses do not help: the lockout is per name, not per connection."""

    def __init__(
        self, logins: dict[str, str], free: int = 5, base_s: float = 1.0, cap_s: float = 300.0
    ) -> None:
        self.logins = dict(logins)
        self.free, self.base_s, self.cap_s = free, base_s, cap_s
        self._fails: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, username: str, password: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._until.get(username, 0.0):
                return False
            want = self.logins.get(username)
            # compared even for an unknown name, so the answer's time does not tell names apart
            ok = hmac.compare_digest(password.encode(), (want or secrets.token_hex(16)).encode())
            if ok and want is not None:
                self._fails.pop(username, None)
                return True
            n = self._fails[username] = self._fails.get(username, 0) + 1
            if n >= self.free:
                self._until[username] = now + min(self.base_s * 2 ** (n - self.free), self.cap_s)
            return False


class _SecurityHeaders:
    """ASGI middleware: every response says nosniff (a served file is never re-typed by the
    browser), no referrer, and may not be framed by another site."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"SAMEORIGIN"),
    ]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def launch(server: Server, quiet: bool = True) -> None:
    """Serve the page until interrupted (binds the configured host; no share link ever)."""
    from starlette.middleware import Middleware

    cfg = server.cfg
    auth = None
    if cfg.auth:
        guard = LoginGuard(dict(a.split(":", 1) for a in cfg.auth))

        async def auth(username: str, password: str) -> bool:  # a coroutine: gradio awaits it
            ok = guard.check(username, password)
            if not ok:
                await asyncio.sleep(0.2)  # a refused attempt is never instant (nothing blocks)
            return ok

    if _upload_dir() == server.store.root or server.store.root in _upload_dir().parents:
        raise UserError("Gradio's temp folder is inside --data", "unset GRADIO_TEMP_DIR")
    os.makedirs(_upload_dir(), exist_ok=True)
    page = build(server)
    page.queue(default_concurrency_limit=8)
    page.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        auth=auth,
        share=False,
        max_file_size="25mb",
        blocked_paths=[str(server.store.root)],
        quiet=quiet,
        show_error=True,
        css=CSS,
        app_kwargs={"middleware": [Middleware(_SecurityHeaders)]},
    )
