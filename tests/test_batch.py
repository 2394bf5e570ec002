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
        },
        {"image": "missing.png", "tune": {"steps": 2}, "edits": [EDIT]},
        {
            "image": photo,
            "name": "cat",
            "tune": {"steps": 2, "save_at": [1, 2]},
            "edits": [{**EDIT, "seeds": "0,1"}],
        },
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
        assert (
            "beikkpic a green circle" in Image.open(p).text["parameters"]
            or "a green circle" in Image.open(p).text["parameters"]
        )


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


BAD_LINES = [  # (a line, words of its one-line failure); each fails alone, the others run
    ({"image": "scene.png", "seeds": "abc"}, ["unknown key", "seeds"]),
    ({"image": "scene.png", "tune": {"steps": "x"}}, ["--steps", "integer"]),
    ({"image": "scene.png", "tune": []}, ["tune settings", "object"]),
    ({"image": "scene.png", "edits": {}}, ['"edits"', "list"]),
    ({"image": "scene.png", "edits": [{"prompt": "a", "seeds": "abc"}]}, ["seeds", "integers"]),
    ({"image": "scene.png", "edits": [{"prompt": "a", "seeds": [2**70]}]}, ["--seeds", "max_seed"]),
    ({"image": "scene.png", "edits": [{"prompt": "x" * 5000}]}, ["5000 characters", "2000"]),
    ({"image": "scene.png", "edits": [{"prompt": "a", "t0": float("nan")}]}, ["--t0"]),
    ({"image": "scene.png", "edits": [{"prompt": "a", "seeds": list(range(5))}]}, ["max_seeds"]),
    ({"image": "scene.png", "edits": ["a cat"]}, ["an edit must be an object"]),
    ({"image": 7}, ['"image"', "file path"]),
    ({"image": "scene.png", "name": "../escape"}, ["is a path", "inside --out"]),
    ({"image": "scene.png", "name": "/tmp/abs"}, ["is a path"]),
    ({"image": "scene.png", "name": ".."}, ["is a path"]),
    ({"image": "scene.png", "name": ["x"]}, ['"name" must be text']),
    ({"image": "scene.png", "name": "ok"}, ["name 'ok' is also line 1's"]),
    ({"image": "scene.png", "name": "OK"}, ["name 'OK' is also line 1's"]),
    ({"image": "scene.png", "name": "manifest.json"}, ["not a usable folder name"]),
    ({"image": "scene.png", "bogus": 1}, ["unknown key", "bogus"]),
]


def test_batch_checks_each_line_alone(tmp_path, demo_photo, capsys, monkeypatch):
    """Wrong types, unknown keys, oversized fields, names that leave --out or share a folder:
    each such line fails with its one line and the valid lines still run (the runner is faked
    here: which lines reach it is the point), under the --limit work limits."""
    import unitune.batch as batch

    shutil.copy(demo_photo, tmp_path / "scene.png")
    good = {"image": "scene.png", "name": "ok", "edits": [{"prompt": "a cat", "seeds": [0, 1]}]}
    lines = [good, *(line for line, _ in BAD_LINES), {**good, "name": "fine"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ran = []

    def fake_run(args, workers, ray):
        for line_no, text, _base, _out, _device, limits in args:
            ran.append((line_no, limits.max_seeds))
            job = batch.parse_line(text, line_no, tmp_path, limits)
            yield {"line": line_no, "status": "done", "name": job["name"], "images": []}

    monkeypatch.setattr(batch, "_run", fake_run)
    out = tmp_path / "out"
    code = main(["batch", str(jobs), "--out", str(out), "--limit", "max_seeds=4", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert ran == [(1, 4), (len(lines), 4)]  # only the valid lines ran, under the limits given
    m = json.loads((out / "manifest.json").read_text())
    assert (m["done"], m["failed"]) == (2, len(BAD_LINES))
    failed = [ln for ln in err.splitlines() if ln.startswith("unitune: line")]
    assert len(failed) == len(BAD_LINES) and "Traceback" not in err
    for i, (_, words) in enumerate(BAD_LINES, 2):
        rec = m["results"][i - 1]
        assert rec["line"] == i and rec["status"] == "failed" and "\n" not in rec["error"]
        for w in words:
            assert w.lower() in rec["error"].lower(), (i, w, rec["error"])
    assert not (tmp_path / "escape").exists() and not Path("/tmp/abs").exists()
    assert not (out / "ok" / "result.json").exists()  # the duplicate wrote nothing into "ok"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--limit", "max_bogus=3"], ["unknown --limit", "max_seeds"]),
        (["--limit", "max_seeds=x"], ["--limit max_seeds", "integer"]),
        (["--limit", "max_seeds"], ["KEY=VALUE"]),
        (["--out", "/dev/null"], ["device"]),
    ],
)
def test_batch_limit_and_out_refused_before_loading(tmp_path, capsys, extra, words):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"image": "x.png"}\n')
    code = main(["batch", str(jobs), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w.lower() in err.lower(), (w, err)
    assert not (tmp_path / "o").exists()


def test_parse_limits():
    from unitune.config import WorkLimits, parse_limits

    assert parse_limits([]) == WorkLimits()
    got = parse_limits(["max_seeds=8", "max-side=512", "max_tune_steps=20_000"])
    assert (got.max_seeds, got.max_side, got.max_tune_steps) == (8, 512, 20_000)
    assert got.max_sample_steps == WorkLimits().max_sample_steps


def test_sine_keys_by_the_clis_names_or_the_papers():
    """A line's SINE settings by the CLI's flag names (dashes or underscores), the paper's K and
    v, or EditConfig's own field names."""
    from unitune.batch import _fields
    from unitune.config import EditConfig

    for keys in (
        {"sine-until-t": 300, "sine-pretrained-weight": 0.6},
        {"sine_until_t": 300, "sine_pretrained_weight": 0.6},
        {"K": 300, "v": 0.6},
        {"sine_K": 300, "sine_v": 0.6},
    ):
        assert _fields(keys, EditConfig, "edit") == {"sine_K": 300, "sine_v": 0.6}, keys
