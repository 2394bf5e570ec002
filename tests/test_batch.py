"""`unitune batch`: three images from one JSONL file (one bad line), on a local process pool and
on Ray in local mode; a rerun skips what finished and redoes what an interruption left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from unitune.cli import main

EDIT = {"prompt": "a green circle", "steps": 2, "seeds": [0], "t0": 0.9}


def _jobs(tmp_path: Path, demo_photo: str, photo: str) -> Path:
    shutil.copy(demo_photo, tmp_path / "scene.png")
    lines = [
        {
            "image": "scene.png",
            "name": "scene",
            "tune": {"steps": 2, "save-at": [2]},
            "edits": [EDIT, {**EDIT, "K": 300, "method": "sine"}],
        },  # fmt: skip
        {"image": "missing.png", "tune": {"steps": 2}, "edits": [EDIT]},
        {
            "image": photo,
            "name": "cat",
            "tune": {"steps": 2, "save_at": [1, 2]},
            "edits": [{**EDIT, "seeds": "0,1"}],
        },  # fmt: skip
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _run(capsys, *argv) -> dict:
    code = main(["batch", *map(str, argv), "--device", "cpu", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "line 2 failed" in err and "missing.png" in err, err
    return json.loads((Path(argv[argv.index("--out") + 1]) / "manifest.json").read_text())


def _check(m: dict) -> None:
    assert (m["done"], m["failed"]) == (2, 1)
    scene, bad, cat = m["results"]
    assert bad["status"] == "failed" and "does not exist" in bad["error"]
    assert len(scene["images"]) == 2 and len(cat["images"]) == 2  # 1 seed x 2 edits, 2 seeds
    for p in scene["images"] + cat["images"]:
        assert "beikkpic a green circle" in Image.open(p).text["parameters"] or "a green circle" in Image.open(p).text["parameters"]  # fmt: skip


@pytest.mark.slow
def test_batch_local_workers_and_resume(tmp_path, demo_photo, photo, capsys):
    jobs, out = _jobs(tmp_path, demo_photo, photo), tmp_path / "out"
    m = _run(capsys, jobs, "--out", out, "--workers", 2)
    _check(m)
    assert not any(r.get("skipped") for r in m["results"])
    # an interruption before "cat" finished: its marker is gone, its tune folder stays
    (out / "cat" / "result.json").unlink()
    shutil.rmtree(out / "cat" / "edit-0")
    m2 = _run(capsys, jobs, "--out", out, "--workers", 2)
    _check(m2)
    scene, _, cat = m2["results"]
    assert scene.get("skipped") and not cat.get("skipped")


@pytest.mark.slow
def test_batch_on_ray_local_mode(tmp_path, demo_photo, photo, capsys):
    pytest.importorskip("ray")
    jobs = _jobs(tmp_path, demo_photo, photo)
    _check(_run(capsys, jobs, "--out", tmp_path / "out", "--ray", "local", "--workers", 2))


def test_batch_refuses_bad_arguments_before_loading(tmp_path, capsys):
    for argv in (["nope.jsonl", "--out", tmp_path / "o"], [tmp_path, "--out", tmp_path / "o"]):
        code = main(["batch", *map(str, argv)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
