"""The web page of `unitune serve` (Gradio): Tune -> Explore -> Refine -> Download, and History.

No logic of its own: every button calls a :class:`~unitune.app.server.Server` method, which
checks the request and queues a job; one timer polls the jobs and shows their progress. The
events carry ``api_name``s, so the same calls are the HTTP API (gradio_client; README).

Everything the page shows comes from the data directory; uploads are read as bytes and stored
under a name derived from their content (store.py), never under the name the browser sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import UserError
from ..pngmeta import read_sidecar, sidecar_path
from .jobs import QueueFull
from .server import Server

CSS = "#cells .thumbnail-item {min-width: 96px}"


def _ui_error(fn):
    """A UserError / full queue -> gr.Error: its one line in the page and in the API's reply."""

    def wrapped(*a):
        try:
            return fn(*a)
        except (UserError, QueueFull) as e:
            raise gr.Error(str(e)) from None

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _read(path: str | None, what: str) -> bytes:
    if not path:
        raise UserError(f"no {what} uploaded", f"drop a {what} into the page first")
    return Path(path).read_bytes()


def _progress_html(job: dict[str, Any] | None) -> str:
    if not job:
        return ""
    state, p = job["state"], job.get("progress") or {}
    if state == "failed":
        return f"<b>#{job['id']} failed:</b> {job['error']}"
    if state == "done":
        return f"<b>#{job['id']} done</b>"
    if state == "queued" or not p:
        return f"#{job['id']} {state}…"
    return (f"<progress value='{p['step']}' max='{p['of']}'></progress> "
            f"#{job['id']} step {p['step']}/{p['of']} · loss {p['loss']:.4f} · ETA {p['eta_s']:.0f} s")  # fmt: skip


def _mask_bytes(editor_value: dict | None) -> bytes | None:
    """gr.ImageEditor's value -> a white-on-black PNG of what was drawn (None: nothing drawn)."""
    import io

    import numpy as np
    from PIL import Image

    layers = (editor_value or {}).get("layers") or []
    if not layers:
        return None
    alpha = np.zeros(np.asarray(layers[0]).shape[:2], dtype=np.uint8)
    for layer in layers:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4:
            alpha = np.maximum(alpha, a[..., 3])
    if not alpha.any():
        return None
    buf = io.BytesIO()
    Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def build(server: Server) -> gr.Blocks:
    """The page, wired to ``server``."""

    @_ui_error
    def show_upload(photo: str | None) -> str:
        """The photo as the server keeps it (checked, RGB, PNG)."""
        return str(server.store.upload(server.store.save_upload(_read(photo, "photo"))))

    @_ui_error
    def submit_tune(photo: str | None, caption: str, steps: float, model: str):
        """Upload a photo and queue its tune -> (job id, status)."""
        job = server.submit_tune(_read(photo, "photo"), caption or "", int(steps), model)
        return job, f"tune #{job} queued"

    @_ui_error
    def submit_grid(tune: int | None, prompt: str, t0s: str, seeds: str):
        """Queue the checkpoints x t0 grid of a finished tune -> (job id, status)."""
        if tune is None:
            raise UserError("no tune picked", "tune a photo first, then pick it")
        job = server.submit_grid(int(tune), prompt, t0s, seeds)
        return job, f"grid #{job} queued"

    @_ui_error
    def submit_edit(tune, prompt, seeds, fidelity, use_fidelity, guidance, method, K, v, mask):
        """Queue an edit with the Refine settings -> (job id, status)."""
        if tune is None:
            raise UserError("no tune picked", "tune a photo first, then pick it")
        settings: dict[str, Any] = {"seeds": [int(s) for s in str(seeds).split(",") if s.strip()],
                                    "method": method, "sine_K": int(K), "sine_v": float(v)}  # fmt: skip
        if guidance and guidance.strip():
            settings["prompt_guidance"] = guidance.strip()
        if use_fidelity:
            settings["fidelity"] = float(fidelity)
        job = server.submit_edit(int(tune), prompt, settings, _mask_bytes(mask))
        return job, f"edit #{job} queued"

    @_ui_error
    def job_status(job_id: float) -> dict[str, Any]:
        """A job's state, progress, result or error (API: poll this)."""
        return server.job(int(job_id)).public()

    @_ui_error
    def job_files(job_id: float) -> list[str]:
        """The PNGs a finished job made (each with its `parameters` chunk)."""
        return [str(p) for p in server.files(int(job_id))]

    def poll(tune_job, grid_job, edit_job, grid_shown, edit_shown, picks_shown):
        """One tick: progress of the three current jobs; the tune list when a tune finished (the
        newest picked); galleries filled once a job is done. Unchanged parts are skipped, so an
        open list or a selection in the page is left alone."""
        out: list[Any] = []
        for j in (tune_job, grid_job, edit_job):
            out.append(_progress_html(server.queue.get(int(j)).public() if j else None))
        picks = server.tunes()
        ids = [i for _, i in picks]
        changed = ids != (picks_shown or [])
        out += [gr.update(choices=picks, value=ids[0]) if changed else gr.skip(), ids]
        for j, shown in ((grid_job, grid_shown), (edit_job, edit_shown)):
            job = server.queue.get(int(j)) if j else None
            if job is not None and job.state == "done" and shown != job.id:
                out += [[(str(p), _caption(p)) for p in server.files(job.id)], job.id]
            else:
                out += [gr.skip(), gr.skip()]
        out.append(_history())
        return out

    def _history():
        return [[j.id, j.kind, j.state, (j.progress or {}).get("step", ""), j.error or ""]
                for j in server.queue.list(limit=50)]  # fmt: skip

    def select(files_of: int | None, evt: gr.SelectData):
        """A clicked cell -> its image, parameters and downloads (PNG, sidecar)."""
        path = server.files(int(files_of))[evt.index]
        params = read_sidecar(path)
        text = json.dumps({k: params[k] for k in ("prompt", "seed", "cfg_scale", "steps") if k in params}
                          | {"checkpoint": params["edit_config"]["checkpoint"], "t0": params["edit_config"]["t0"]})  # fmt: skip
        side = gr.update(value=str(sidecar_path(path)), interactive=True)
        return str(path), text, gr.update(value=str(path), interactive=True), side

    with gr.Blocks(title="unitune") as page:
        gr.Markdown("# unitune\nTune a diffusion model on one photo, then edit it with a sentence.")
        # job ids: hidden numbers, not State, so the API's replies carry them too
        tune_job, grid_job, edit_job = (gr.Number(None, visible=False, precision=0) for _ in range(3))  # fmt: skip
        grid_shown, edit_shown = gr.State(None), gr.State(None)
        picks_shown = gr.State([tid for _, tid in server.tunes()])
        with gr.Tab("1 Tune"):
            with gr.Row():
                with gr.Column():
                    # a file, not gr.Image: the upload reaches our checks (store.py) undecoded
                    photo = gr.File(label="photo", file_types=["image"], type="filepath", elem_id="photo")  # fmt: skip
                    preview = gr.Image(label="as stored", interactive=False, elem_id="photo-preview")  # fmt: skip
                with gr.Column():
                    caption = gr.Textbox(label="base caption (optional)", placeholder="a cat", elem_id="caption")  # fmt: skip
                    steps = gr.Number(128, label="steps (paper: 128)", precision=0, elem_id="steps")
                    model = gr.Dropdown(list(server.models), value=next(iter(server.models)), label="model")  # fmt: skip
                    tune_btn = gr.Button("Tune", variant="primary", elem_id="tune-btn")
                    tune_status = gr.HTML(elem_id="tune-status")
        with gr.Tab("2 Explore"):
            with gr.Row():
                # any id may come from the API; the server checks it (a finished tune of its own)
                pick = gr.Dropdown(server.tunes(), label="tune", elem_id="pick", interactive=True, allow_custom_value=True)  # fmt: skip
                prompt = gr.Textbox(label="edit prompt", placeholder="a cat wearing sunglasses", elem_id="prompt")  # fmt: skip
                t0s = gr.Textbox("0.8,0.9,1", label="t0 (SDEdit starts)", elem_id="t0s")
                grid_seeds = gr.Textbox("0", label="seeds", elem_id="grid-seeds")
            grid_btn = gr.Button("Render grid", variant="primary", elem_id="grid-btn")
            grid_status = gr.HTML(elem_id="grid-status")
            cells = gr.Gallery(label="checkpoints x t0: click a cell", columns=6, height=420, format="png", elem_id="cells")  # fmt: skip
        with gr.Tab("3 Refine"):
            with gr.Row():
                seeds = gr.Textbox("0,1,2,3", label="seeds", elem_id="seeds")
                use_fid = gr.Checkbox(False, label="use the fidelity knob")
                fidelity = gr.Slider(0, 1, 0.5, label="fidelity (0 expressive .. 1 faithful)")
                guidance = gr.Textbox(label="prompt guidance: base prompt (optional)")
            with gr.Row():
                method = gr.Radio(["unitune", "sine"], value="unitune", label="method")
                K = gr.Slider(0, 1000, 400, step=10, label="SINE K")
                v = gr.Slider(0, 1, 0.7, label="SINE v")
            mask = gr.ImageEditor(label="mask: paint where the edit may change (optional)", type="numpy")  # fmt: skip
            edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
            edit_status = gr.HTML(elem_id="edit-status")
            results = gr.Gallery(label="edits: click one", columns=6, height=420, format="png", elem_id="results")  # fmt: skip
        with gr.Tab("Download"):
            with gr.Row():
                chosen = gr.Image(label="chosen", type="filepath", interactive=False, elem_id="chosen")  # fmt: skip
                with gr.Column():
                    chosen_params = gr.Code(label="parameters", language="json", elem_id="chosen-params")  # fmt: skip
                    download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")  # fmt: skip
                    sidecar = gr.DownloadButton("Download sidecar (.json)", interactive=False, elem_id="sidecar")  # fmt: skip
        with gr.Tab("History"):
            history = gr.Dataframe(headers=["job", "kind", "state", "step", "error"], elem_id="history")  # fmt: skip
        # the API-only calls: poll a job, fetch its files
        api_job = gr.Number(visible=False)
        api_status, api_files = (
            gr.JSON(visible=False),
            gr.File(file_count="multiple", visible=False),
        )

        photo.upload(show_upload, photo, preview, api_visibility="private")
        tune_btn.click(submit_tune, [photo, caption, steps, model], [tune_job, tune_status], api_name="submit_tune")  # fmt: skip
        grid_btn.click(submit_grid, [pick, prompt, t0s, grid_seeds], [grid_job, grid_status], api_name="submit_grid")  # fmt: skip
        edit_btn.click(submit_edit, [pick, prompt, seeds, fidelity, use_fid, guidance, method, K, v, mask],
                       [edit_job, edit_status], api_name="submit_edit")  # fmt: skip
        api_job.change(job_status, api_job, api_status, api_name="job")
        api_status.change(job_files, api_job, api_files, api_name="files")
        timer = gr.Timer(1.0)
        timer.tick(poll, [tune_job, grid_job, edit_job, grid_shown, edit_shown, picks_shown],
                   [tune_status, grid_status, edit_status, pick, picks_shown, cells, grid_shown,
                    results, edit_shown, history], show_progress="hidden", api_visibility="private")  # fmt: skip
        shown = [chosen, chosen_params, download, sidecar]
        cells.select(select, grid_shown, shown, api_visibility="private")
        results.select(select, edit_shown, shown, api_visibility="private")
    return page


def _caption(path: Path) -> str:
    ec = read_sidecar(path)["edit_config"]
    return f"ckpt {ec['checkpoint']} · t0 {ec['t0']:g} · seed {ec['seeds'][0] if len(ec['seeds']) == 1 else read_sidecar(path)['seed']}"  # fmt: skip


def launch(server: Server, quiet: bool = True) -> None:
    """Serve the page until interrupted (binds the configured host; no share link ever)."""
    cfg = server.cfg
    auth = tuple(cfg.auth.split(":", 1)) if cfg.auth else None
    page = build(server)
    page.queue(default_concurrency_limit=8)
    page.launch(server_name=cfg.host, server_port=cfg.port, auth=auth, share=False,
                max_file_size="25mb", allowed_paths=[str(server.store.root)], quiet=quiet,
                show_error=True, css=CSS)  # fmt: skip
