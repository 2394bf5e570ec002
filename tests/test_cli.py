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
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("unitune: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
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
