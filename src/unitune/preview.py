"""Edits before the tune ends: `unitune tune --preview PROMPT` renders the edit at every saved
checkpoint while tuning goes on, so the first edit is on screen after the first checkpoint
(step 16 of the paper's 128), not after the whole tune.

How: ``tune(on_checkpoint=...)`` calls :meth:`Previewer.submit` with each step as soon as its
checkpoint is on disk; a background thread samples the edit from that checkpoint file with its
own copy of the model (the tune's copy is being trained: sampling from it would need it to stop),
writes the images (PNGs with their parameters, as `unitune edit` writes them) under
``<tune>/previews/step-N/`` and reports their paths through ``on_preview``. Training and previews
share the device: on a CPU a preview slows the tune while it runs. The previews use the edit
defaults at that checkpoint (t0, CFG, steps of the model) and a small batch (``seeds``).
:meth:`Previewer.close` waits for the previews asked for (or, with ``cancel``, drops the ones not
started); a preview that fails is reported, never stops the tune.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import EditConfig

PREVIEW_DIR = "previews"  # under the tune folder: previews/step-N/<edit PNGs + sidecars>


def preview_dir(tune_dir: str | Path, step: int) -> Path:
    return Path(tune_dir) / PREVIEW_DIR / f"step-{step}"


class Previewer:
    """Renders ``prompt`` at each checkpoint step it is given, in a thread of its own."""

    def __init__(
        self,
        tune_dir: str | Path,
        prompt: str,
        device: str = "auto",
        cfg: EditConfig = EditConfig(seeds=(0, 1)),
        on_preview: Callable[[int, list[Path]], None] | None = None,
        on_error: Callable[[int, Exception], None] | None = None,
        backbone=None,
    ) -> None:
        """``backbone``: a loaded model for the previews (not the one being tuned), else the
        tune's model is loaded at the first checkpoint."""
        self.tune_dir, self.prompt, self.device, self.cfg = Path(tune_dir), prompt, device, cfg
        self.on_preview, self.on_error = on_preview, on_error
        self.done: dict[int, list[Path]] = {}  # step -> the preview images written
        self._jobs: queue.Queue[int | None] = queue.Queue()
        self._backbone = backbone  # the previews' own model (loaded at the first checkpoint)
        self._thread = threading.Thread(target=self._work, name="unitune-preview", daemon=True)
        self._thread.start()

    def submit(self, step: int) -> None:
        """Render the preview of checkpoint ``step`` (saved already) when the thread is free."""
        self._jobs.put(step)

    def close(self, cancel: bool = False) -> dict[int, list[Path]]:
        """Wait for the submitted previews (``cancel``: only the one running); returns them."""
        if cancel:
            while True:
                try:
                    self._jobs.get_nowait()
                except queue.Empty:
                    break
        self._jobs.put(None)
        self._thread.join()
        return self.done

    def _work(self) -> None:
        while (step := self._jobs.get()) is not None:
            try:
                paths = self._render(step)
            except Exception as e:  # noqa: BLE001 - a preview never stops the tune
                if self.on_error is not None:
                    self.on_error(step, e)
                continue
            self.done[step] = paths
            if self.on_preview is not None:
                self.on_preview(step, paths)

    def _render(self, step: int) -> list[Path]:
        from .backbones import load_model
        from .checks import tune_model_ref
        from .edit import Editor
        from .outputs import save_edit
        from .tunefolder import TuneFolder

        if self._backbone is None:
            folder = TuneFolder.open(self.tune_dir)
            self._backbone = load_model(
                tune_model_ref(folder), self.device, vae=folder.manifest.vae
            )
        # an Editor per checkpoint: it reads the manifest as it is now (this step saved)
        ed = Editor(self.tune_dir, backbone=self._backbone)
        res = ed.edit(self.prompt, replace(self.cfg, checkpoint=step), progress=False)
        out = preview_dir(self.tune_dir, step)
        return [save_edit(im, p, out, res.mask) for im, p in zip(res.images, res.params)]
