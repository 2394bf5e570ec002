"""Every bad-input case through the CLI: exit 2, one line on stderr, no traceback, nothing
half-written. Plus the happy path: tune -> edit -> grid, and bit-for-bit reproduction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unitune.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("unitune: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


def test_tune_writes_manifest_and_checkpoints(tuned):
    m = json.loads((tuned / "manifest.json").read_text())
    assert m["status"] == "complete" and sorted(m["checkpoints"], key=int) == ["2", "4"]
    assert m["settings"]["steps"] == 4 and m["prompt"] == "beikkpic"
    assert {"torch", "diffusers", "transformers", "unitune"} <= set(m["versions"])
    assert len(m["image"]["sha256"]) == 64
    for s in ("2", "4"):
        assert (tuned / m["checkpoints"][s]["file"]).is_file()
        assert isinstance(m["checkpoints"][s]["loss"], float)


def test_edit_png_parameters_and_bit_exact_reproduction(tuned, tmp_path, capsys):
    code, out, _ = run(capsys, "edit", tuned, "a cat, wearing \"sunglasses\"", "--checkpoint", 2,
                       "--t0", 0.9, "--cfg", 5, "--steps", 4, "--seeds", "0,1", "--out",
                       tmp_path / "a", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    files = [Path(p) for p in out.split()]
    assert len(files) == 2 and all(f.is_file() for f in files)
    text = Image.open(files[1]).text["parameters"]
    assert "beikkpic a cat" in text and "Seed: 1" in text and "CFG scale: 5" in text
    assert "Checkpoint: 2" in text and "t0: 0.9" in text
    code, out2, _ = run(capsys, "edit", tuned, "--params", files[1], "--out", tmp_path / "b",
                        "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    again = Path(out2.split()[0])
    assert np.array_equal(np.asarray(Image.open(files[1])), np.asarray(Image.open(again)))


def test_edit_defaults_are_the_measured_ones(tuned, tmp_path, capsys):
    # t0 0.9 and interpolation on (docs/BENCHMARKS.md "Defaults"); --no-interpolate turns it off
    for flags, interp in (((), True), (("--no-interpolate",), False)):
        code, out, err = run(capsys, "edit", tuned, "a dog", *flags, "--steps", 2, "--out",
                             tmp_path / str(interp), "--device", "cpu", "--quiet")  # fmt: skip
        assert code == 0, err
        ec = json.loads(Path(out.split()[0]).with_suffix(".json").read_text())["edit_config"]
        assert (ec["t0"], ec["cfg"], ec["interpolate"]) == (0.9, 7.5, interp)


def test_grid(tuned, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, _, _ = run(capsys, "grid", tuned, "a dog", "--checkpoints", "2,4", "--t0", "0.8,1.0",
                     "--seeds", "0", "--steps", 2, "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    sheet = Image.open(out)
    assert sheet.width > 2 * 128 and sheet.height > 2 * 128


# --- bad input -------------------------------------------------------------------------------


def test_missing_image(tmp_path, capsys, tiny_model):
    code, _, err = run(capsys, "tune", tmp_path / "nope.jpg", "--model", tiny_model, "--out",
                       tmp_path / "o")  # fmt: skip
    assert_user_error(code, err, "nope.jpg")
    assert not (tmp_path / "o").exists()


def test_corrupt_image(tmp_path, capsys, tiny_model):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code, _, err = run(capsys, "tune", bad, "--model", tiny_model, "--out", tmp_path / "o")
    assert_user_error(code, err, "bad.png")
    assert not (tmp_path / "o").exists()


def test_unsupported_file(tmp_path, capsys, tiny_model):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    code, _, err = run(capsys, "tune", txt, "--model", tiny_model, "--out", tmp_path / "o")
    assert_user_error(code, err, "notes.txt")


def test_unknown_model(photo, tmp_path, capsys):
    code, _, err = run(capsys, "tune", photo, "--model", tmp_path / "no-such-model", "--out",
                       tmp_path / "o")  # fmt: skip
    assert_user_error(code, err, "no-such-model")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickle_models_refused(photo, tmp_path, capsys, suffix):
    f = tmp_path / f"model{suffix}"
    f.write_bytes(b"whatever")
    code, _, err = run(capsys, "tune", photo, "--model", f, "--out", tmp_path / "o")
    assert_user_error(code, err, suffix, "safetensors")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--t0", "1.5"], ["t0", "[0, 1]"]),
        (["--t0", "-0.1"], ["t0"]),
        (["--cfg", "-1"], ["cfg"]),
        (["--checkpoint", "3"], ["checkpoint 3", "saved: 2, 4"]),
        (["--steps", "0"], ["--steps"]),
        (["--seeds", "-1"], ["--seeds"]),
        (["--v", "1.5"], ["--v"]),
        (["--interp-window", "4"], ["odd"]),
        (["--best-of", "2", "--sweep-checkpoints", "2,3"], ["checkpoint 3"]),
        (["--best-of", "2", "--sweep-t0", "0.5,2"], ["t0"]),
        (["--guide", "pretrained:a dog:x"], ["--guide", "not a number"]),
    ],
)
def test_bad_edit_flags(tuned, tmp_path, capsys, flags, words):
    code, _, err = run(capsys, "edit", tuned, "a dog", *flags, "--out", tmp_path / "e",
                       "--device", "cpu")  # fmt: skip
    assert_user_error(code, err, *words)
    assert not (tmp_path / "e").exists()


def test_not_a_tune_folder(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    code, _, err = run(capsys, "edit", tmp_path / "x", "a dog", "--out", tmp_path / "e")
    assert_user_error(code, err, "not a unitune tune folder")
    code, _, err = run(capsys, "edit", tmp_path / "missing", "a dog")
    assert_user_error(code, err, "does not exist")


def test_long_prompt_warns_where_cut(tuned, tmp_path, capsys):
    long = "a cat " + " ".join(f"word{i}" for i in range(80)) + " THEEND"
    code, _, err = run(capsys, "edit", tuned, long, "--steps", 1, "--out", tmp_path / "e",
                       "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    warn = [ln for ln in err.splitlines() if ln.startswith("unitune: warning:")]
    assert warn and "cut after" in warn[0] and "theend" in warn[0].lower()


def test_entry_point_has_no_traceback(tmp_path):
    """The installed console entry point, as a user runs it."""
    r = subprocess.run(
        [sys.executable, "-m", "unitune.cli", "edit", str(tmp_path), "x"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("unitune: error:")


def _cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unitune.cli", *map(str, argv)],
                          capture_output=True, text=True)  # fmt: skip


BAD_RUNS = [  # (argv after "unitune", words of the one error line); TUNE / MODEL / PHOTO filled in
    (["edit", "TUNE", "a dog", "--t0", "1.5"], ["--t0"]),
    (["edit", "TUNE", "a dog", "--cfg", "-3"], ["--cfg"]),
    (["edit", "TUNE", "a dog", "--checkpoint", "999"], ["checkpoint 999"]),
    (["edit", "TUNE", "a dog", "--mask", "NOPE/mask.png"], ["mask"]),
    (["edit", "TUNE", "a dog", "--sampler", "euler-a"], ["--sampler"]),
    (["grid", "TUNE", "a dog", "--t0", "0.5,2"], ["t0"]),
    (["tune", "NOPE/photo.jpg", "--model", "MODEL", "--out", "NOPE/out"], ["photo.jpg"]),
    (["tune", "PHOTO", "--model", "NOPE/model", "--out", "NOPE/out"], ["nope"]),
    (["tune", "PHOTO", "--model", "MODEL", "--out", "NOPE/out", "--steps", "-1"], ["--steps"]),
]


@pytest.mark.slow
def test_bad_arguments_fail_before_any_model_loads(tuned, tiny_model, photo, tmp_path):
    """A bad argument: exit 2, exactly one line on stderr, nothing written, and no model load.
    Deterministic half: torch is never imported. Timed half: each such run takes a small
    fraction of a run that only loads the model (a ratio measured here, not a budget)."""
    import time

    fill = {"TUNE": str(tuned), "MODEL": tiny_model, "PHOTO": photo, "NOPE": str(tmp_path / "nope")}  # fmt: skip
    worst = 0.0
    for argv, words in BAD_RUNS:
        argv = [fill.get(a, a) if "/" not in a else a.replace("NOPE", fill["NOPE"]) for a in argv]
        t = time.perf_counter()
        r = _cli(*argv)
        worst = max(worst, time.perf_counter() - t)
        assert_user_error(r.returncode, r.stderr, *words)
        assert r.stdout == ""
        assert not (tmp_path / "nope").exists()
    probe = ("import sys; from unitune.cli import main; rc = main(sys.argv[1:]); "
             "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", probe, "edit", str(tuned), "a dog", "--t0", "2"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "torch was imported" not in r.stderr, r.stderr
    t = time.perf_counter()
    load = subprocess.run([sys.executable, "-c", "import sys; from unitune.backbones import "
                           "load_model; load_model(sys.argv[1], 'cpu')", tiny_model])  # fmt: skip
    load_s = time.perf_counter() - t
    assert load.returncode == 0
    assert worst < 0.25 * load_s, (worst, load_s)


@pytest.mark.slow
def test_third_party_logs_quiet_unless_verbose(tuned, tmp_path):
    """A good edit prints only unitune's own lines; --verbose lets the libraries speak."""
    argv = ["edit", tuned, "a dog", "--steps", 1, "--device", "cpu", "--quiet"]
    r = _cli(*argv, "--out", tmp_path / "q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    v = _cli(*argv, "--out", tmp_path / "v", "--verbose")
    assert v.returncode == 0 and "Loading pipeline components" in v.stderr, v.stderr
