"""Edits before the tune ends: tune(on_checkpoint=) fires as each checkpoint is on disk, and
`unitune tune --preview PROMPT` renders the edit there (its own model copy, a thread) and prints
the paths, each preview what `unitune edit --checkpoint N` samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_run import run
from unitune.config import TuneConfig
from unitune.tune import tune

pytestmark = pytest.mark.slow


def test_on_checkpoint_fires_once_each_checkpoint_is_on_disk(tiny_model, photo, tmp_path):
    out = tmp_path / "t"
    seen = []

    def check(step: int) -> None:
        manifest = json.loads((out / "manifest.json").read_text())
        assert str(step) in manifest["checkpoints"]  # saved before the hook is called
        assert (out / manifest["checkpoints"][str(step)]["file"]).is_file()
        seen.append(step)

    cfg = TuneConfig(steps=3, save_at=(1, 2), resolution=32)
    tune(photo, out, cfg, model=tiny_model, device="cpu", progress=False, on_checkpoint=check)
    assert seen == [1, 2, 3]  # the last step is always saved


def test_tune_preview_prints_each_checkpoints_edit(tiny_model, photo, tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", photo, "--out", out, "--model", tiny_model, "--steps", 4, "--save-at", "2,4"]
    code, printed, err = run(
        capsys, *args, "--resolution", 32, "--preview", "a dog", "--device", "cpu", "--quiet"
    )
    assert code == 0, err
    lines = [ln for ln in printed.splitlines() if ln.startswith("preview at step")]
    assert [ln.split(":")[0] for ln in lines] == ["preview at step 2", "preview at step 4"]
    step2 = [Path(p) for p in lines[0].split(": ", 1)[1].split()]
    assert len(step2) == 2 and all(
        p.is_file() and p.parent == out / "previews" / "step-2" for p in step2
    )
    # the preview is the edit `unitune edit` makes at that checkpoint with the same seeds
    code, again, err = run(
        capsys,
        "edit",
        out,
        "a dog",
        "--checkpoint",
        2,
        "--seeds",
        "0,1",
        "--out",
        tmp_path / "e",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    for a, b in zip(step2, (Path(p) for p in again.split())):
        diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b), int)).max()
        assert diff <= 1, (a.name, diff)


def test_a_failing_preview_does_not_stop_the_tune(tiny_model, photo, tmp_path, monkeypatch):
    from unitune.preview import Previewer

    errors = []
    out = tmp_path / "t"
    pv = Previewer(out, "a dog", "cpu", on_error=lambda s, e: errors.append((s, str(e))))
    monkeypatch.setattr(pv, "_render", lambda step: (_ for _ in ()).throw(RuntimeError("boom")))
    cfg = TuneConfig(steps=2, save_at=(1,), resolution=32)
    folder = tune(
        photo, out, cfg, model=tiny_model, device="cpu", progress=False, on_checkpoint=pv.submit
    )
    assert pv.close() == {} and errors == [(1, "boom"), (2, "boom")]
    assert folder.manifest.status == "complete"
