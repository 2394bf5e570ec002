"""Every bad-input case through the CLI: exit 2, one line on stderr, no traceback, nothing
half-written. Plus the happy path: tune -> edit -> grid, and bit-for-bit reproduction."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_run import run
from unitune.cli import main


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
    code, out, _ = run(
        capsys,
        "edit",
        tuned,
        'a cat, wearing "sunglasses"',
        "--checkpoint",
        2,
        "--t0",
        0.9,
        "--cfg",
        5,
        "--steps",
        4,
        "--seeds",
        "0,1",
        "--out",
        tmp_path / "a",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0
    files = [Path(p) for p in out.split()]
    assert len(files) == 2 and all(f.is_file() for f in files)
    text = Image.open(files[1]).text["parameters"]
    assert "beikkpic a cat" in text and "Seed: 1" in text and "CFG scale: 5" in text
    assert "Checkpoint: 2" in text and "t0: 0.9" in text
    code, out2, _ = run(
        capsys,
        "edit",
        tuned,
        "--params",
        files[1],
        "--out",
        tmp_path / "b",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0
    again = Path(out2.split()[0])
    assert np.array_equal(np.asarray(Image.open(files[1])), np.asarray(Image.open(again)))


def test_edit_defaults_are_the_measured_ones(tuned, tmp_path, capsys):
    # t0 0.9 and interpolation on (docs/BENCHMARKS.md "Defaults"); --no-interpolate turns it off
    for flags, interp in (((), True), (("--no-interpolate",), False)):
        code, out, err = run(
            capsys,
            "edit",
            tuned,
            "a dog",
            *flags,
            "--steps",
            2,
            "--out",
            tmp_path / str(interp),
            "--device",
            "cpu",
            "--quiet",
        )
        assert code == 0, err
        ec = json.loads(Path(out.split()[0]).with_suffix(".json").read_text())["edit_config"]
        assert (ec["t0"], ec["cfg"], ec["interpolate"]) == (0.9, 7.5, interp)


@pytest.mark.parametrize("named", [["--checkpoints", "2,4"], []])
def test_grid(tuned, tmp_path, capsys, named):
    """Rows are the named checkpoints, or with none named every one the tune saved (2 and 4):
    the same sheet either way."""
    out = tmp_path / "grid.png"
    args = ["--t0", "0.8,1.0", "--seeds", "0", "--steps", 2, "--device", "cpu", "--quiet"]
    code, _, err = run(capsys, "grid", tuned, "a dog", *named, *args, "--out", out)
    assert code == 0, err
    sheet = Image.open(out)
    assert sheet.width > 2 * 128 and sheet.height > 2 * 128
    if not named:  # against the sheet with both rows named
        code, _, err = run(
            capsys,
            "grid",
            tuned,
            "a dog",
            "--checkpoints",
            "2,4",
            *args,
            "--out",
            tmp_path / "n.png",
        )
        assert code == 0, err
        assert np.array_equal(np.asarray(sheet), np.asarray(Image.open(tmp_path / "n.png")))


# --- bad input -------------------------------------------------------------------------------


def test_missing_image(tmp_path, capsys, tiny_model):
    code, _, err = run(
        capsys, "tune", tmp_path / "nope.jpg", "--model", tiny_model, "--out", tmp_path / "o"
    )
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
    code, _, err = run(
        capsys, "tune", photo, "--model", tmp_path / "no-such-model", "--out", tmp_path / "o"
    )
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
    code, _, err = run(
        capsys, "edit", tuned, "a dog", *flags, "--out", tmp_path / "e", "--device", "cpu"
    )
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
    code, _, err = run(
        capsys,
        "edit",
        tuned,
        long,
        "--steps",
        1,
        "--out",
        tmp_path / "e",
        "--device",
        "cpu",
        "--quiet",
    )
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
    return subprocess.run(
        [sys.executable, "-m", "unitune.cli", *map(str, argv)], capture_output=True, text=True
    )


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

    fill = {"TUNE": str(tuned), "MODEL": tiny_model, "PHOTO": photo, "NOPE": str(tmp_path / "nope")}
    worst = 0.0
    for argv, words in BAD_RUNS:
        argv = [fill.get(a, a) if "/" not in a else a.replace("NOPE", fill["NOPE"]) for a in argv]
        t = time.perf_counter()
        r = _cli(*argv)
        worst = max(worst, time.perf_counter() - t)
        assert_user_error(r.returncode, r.stderr, *words)
        assert r.stdout == ""
        assert not (tmp_path / "nope").exists()
    probe = (
        "import sys; from unitune.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, "edit", str(tuned), "a dog", "--t0", "2"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "torch was imported" not in r.stderr, r.stderr
    t = time.perf_counter()
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from unitune.backbones import load_model; load_model(sys.argv[1], 'cpu')",
            tiny_model,
        ]
    )
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


# --- #31: every bad input refused before work starts, in one line ------------------------------
class _Loaded(Exception):
    """The command got past its checks: it was about to load a model."""


@pytest.fixture
def no_load(monkeypatch):
    """Replace the step before any model loads: reaching it raises _Loaded."""
    import unitune.cli as cli

    monkeypatch.setattr(cli, "_before_load", lambda args: (_ for _ in ()).throw(_Loaded()))


@pytest.fixture
def bad_outs(tmp_path, monkeypatch):
    """Outputs that cannot be written: an existing file, a FIFO, a path under a file, a folder
    without write permission (faked through os.access: the tests may run as root)."""
    import os

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir.png").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real(p, mode, **kw))
    return tmp_path


FOLDER_OUTS = [
    ("a-file", "is a file"),
    ("fifo", "device"),
    ("a-file/x", "not a folder"),
    ("ro", "not writable"),
    ("ro/x", "not writable"),
]
FILE_OUTS = [
    ("a-dir.png", "is a folder"),
    ("fifo.png", "device"),
    ("a-file/x.png", "not a folder"),
    ("ro/x.png", "not writable"),
]


@pytest.mark.parametrize(("out", "words"), FOLDER_OUTS)
@pytest.mark.parametrize("cmd", ["edit", "tune", "demo", "export", "bench", "batch"])
def test_unwritable_out_refused_before_loading(
    tuned, tiny_model, photo, bad_outs, capsys, no_load, cmd, out, words
):
    o = str(bad_outs / out)
    (bad_outs / "jobs.jsonl").write_text('{"image": "x.png"}\n')
    argv = {
        "edit": ["edit", tuned, "a dog", "--out", o],
        "tune": ["tune", photo, "--model", tiny_model, "--out", o],
        "demo": ["demo", "--out", o],
        "export": ["export", tuned, "--format", "merged", "--out", o, "--overwrite"],
        "bench": ["bench", "edits", "--quick", "--out", o],
        "batch": ["batch", bad_outs / "jobs.jsonl", "--out", o],
    }[cmd]
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err, "--out", words)


@pytest.mark.parametrize(("out", "words"), FILE_OUTS)
def test_unwritable_grid_out_refused_before_loading(tuned, bad_outs, capsys, no_load, out, words):
    code, _, err = run(
        capsys, "grid", tuned, "a dog", "--checkpoints", "2,4", "--out", bad_outs / out
    )
    assert_user_error(code, err, "--out", words)


def _broken(m: dict, how: str):
    return {
        "list": lambda: [m],
        "settings": lambda: {**m, "settings": "lora"},
        "checkpoints": lambda: {**m, "checkpoints": [2, 4]},
        "placement": lambda: {k: v for k, v in m.items() if k != "placement"},
        "resolution": lambda: {**m, "resolution": "big"},
        "settings-key": lambda: {**m, "settings": {**m["settings"], "bogus": 1}},
    }[how]()


@pytest.mark.parametrize(
    "how", ["list", "settings", "checkpoints", "placement", "resolution", "settings-key"]
)
def test_manifest_of_the_wrong_shape_refused(
    tuned, tiny_model, photo, tmp_path, capsys, no_load, how
):
    import shutil

    t = tmp_path / "t"
    shutil.copytree(tuned, t)
    m = json.loads((t / "manifest.json").read_text())
    (t / "manifest.json").write_text(json.dumps(_broken(m, how)))
    for argv in (
        ["edit", t, "a dog", "--out", tmp_path / "e"],
        ["grid", t, "a dog", "--checkpoints", "2", "--out", tmp_path / "g.png"],
        ["export", t, "--format", "merged", "--out", tmp_path / "x"],
        ["tune", photo, "--model", tiny_model, "--out", t],
    ):
        code, _, err = run(capsys, *argv)
        assert_user_error(code, err, "manifest")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--seed", str(2**70)], ["--seed", "max_seed"]),
        (["--seed", "-1"], ["--seed"]),
        (["--steps", str(10**6)], ["--steps", "max_tune_steps"]),
        (["--resolution", "100000"], ["--resolution", "max_side"]),
        (["--batch-size", "1000"], ["--batch-size", "max_batch_size"]),
        (["--save-at", "0,4"], ["--save-at"]),
        (["--lr", "nan"], ["--lr"]),
        (["--base-prompt", "a\x00b"], ["--base-prompt", "NUL"]),
        (["--class-noun", "x" * 3000], ["--class-noun", "max_prompt_chars"]),
    ],
)
def test_out_of_range_tune_numbers(tiny_model, photo, tmp_path, capsys, no_load, flags, words):
    code, _, err = run(
        capsys, "tune", photo, "--model", tiny_model, "--out", tmp_path / "o", *flags
    )
    assert_user_error(code, err, *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--seeds", str(2**64 + 1)], ["--seeds", "max_seed"]),
        (["--seeds", ",".join(map(str, range(100)))], ["--seeds", "max_seeds"]),
        (["--steps", "5000"], ["--steps", "max_sample_steps"]),
        (["--size", "8192x8192"], ["--size", "max_side"]),
        (["--negative-prompt", "x" * 3000], ["--negative-prompt", "max_prompt_chars"]),
        (["--t0", "nan"], ["--t0"]),
        (["--cfg", "inf"], ["--cfg"]),
        (["--best-of", "1000"], ["--best-of", "max_seeds"]),
    ],
)
def test_out_of_range_edit_numbers(tuned, tmp_path, capsys, no_load, flags, words):
    code, _, err = run(capsys, "edit", tuned, "a dog", *flags, "--out", tmp_path / "e")
    assert_user_error(code, err, *words)


@pytest.mark.parametrize("prompt", ["", "   ", "a\x00b", "x" * 3000])
def test_bad_edit_prompts(tuned, tmp_path, capsys, no_load, prompt):
    for argv in (["edit", tuned, prompt], ["grid", tuned, prompt, "--checkpoints", "2"]):
        code, _, err = run(capsys, *argv, "--out", tmp_path / "e.png")
        assert_user_error(code, err, "prompt")


def test_resume_of_another_length_names_the_folders_steps(
    tuned, tiny_model, photo, capsys, no_load
):
    """A folder tuned to another length (e.g. the paper's 128 steps, before the default became
    32) is not resumed with the new default: refused, naming the settings that differ and the
    flags that resume it, before a model loads."""
    code, _, err = run(capsys, "tune", photo, "--model", tiny_model, "--out", tuned, "--steps", 6)
    assert_user_error(code, err, "settings (save_at, steps)", "--steps 4 --save-at 2,4")


def test_grid_cells_bounded(tuned, tmp_path, capsys, no_load):
    code, _, err = run(
        capsys,
        "grid",
        tuned,
        "a dog",
        "--checkpoints",
        "2,4",
        "--t0",
        ",".join(["0.9"] * 50),
        "--seeds",
        "0,1,2,3,4",
        "--out",
        tmp_path / "g.png",
    )
    assert_user_error(code, err, "500 cells", "max_grid_cells")


def test_steps_beyond_the_schedule_refused(tuned, tiny_model, tmp_path, capsys, no_load):
    """A model whose scheduler trained on 20 timesteps has no 50-step schedule: refused from its
    scheduler config, before the model loads."""
    import shutil

    short = tmp_path / "short"
    shutil.copytree(tiny_model, short)
    sc = short / "scheduler" / "scheduler_config.json"
    sc.write_text(json.dumps({**json.loads(sc.read_text()), "num_train_timesteps": 20}))
    t = tmp_path / "t"
    shutil.copytree(tuned, t)
    m = json.loads((t / "manifest.json").read_text())
    (t / "manifest.json").write_text(
        json.dumps({**m, "model": str(short), "model_path": str(short)})
    )
    code, _, err = run(capsys, "edit", t, "a dog", "--steps", 50, "--out", tmp_path / "e")
    assert_user_error(code, err, "--steps 50", "20-step")
    with pytest.raises(_Loaded):
        run(capsys, "edit", t, "a dog", "--steps", 10, "--out", tmp_path / "e")


def test_library_refuses_what_the_cli_refuses(tuned):
    """Editor.edit runs the CLI's checks (and the scheduler's table, with the limits raised)."""
    from unitune.config import EditConfig, WorkLimits
    from unitune.edit import Editor
    from unitune.errors import UserError

    ed = Editor(tuned, "cpu")
    for prompt, cfg, words in [
        ("a dog", EditConfig(seeds=(2**70,)), "max_seed"),
        ("a dog", EditConfig(steps=2.5), "--steps"),
        ("a\x00", EditConfig(), "NUL"),
        ("x" * 3000, EditConfig(), "max_prompt_chars"),
    ]:
        with pytest.raises(UserError, match=words):
            ed.edit(prompt, cfg, progress=False)
    with pytest.raises(UserError, match="1000-step training schedule"):
        ed.edit(
            "a dog",
            EditConfig(steps=1500),
            progress=False,
            limits=WorkLimits(max_sample_steps=5000),
        )


# --- #32: the library entry points run the CLI's checks (checks.py), with its messages ----------
def _cli_line(capsys, *argv) -> str:
    """The CLI's one error line for ``argv``, without its "unitune: error: " prefix."""
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err)
    return err.strip().removeprefix("unitune: error: ")


def test_library_tune_refuses_what_the_cli_refuses(
    tiny_model, photo, tmp_path, capsys, no_load, monkeypatch
):
    """unitune.tune.tune() refuses the CLI's cases with the CLI's line, before any model loads:
    SINE's preset without a class noun, an unknown preset, settings out of range."""
    from dataclasses import replace

    import unitune.tune as tune_mod
    from unitune.config import TuneConfig, tune_preset
    from unitune.errors import UserError

    monkeypatch.setattr(tune_mod, "load", lambda *a, **k: (_ for _ in ()).throw(_Loaded()))
    out = tmp_path / "o"
    sine = TuneConfig(**tune_preset("sine"))
    cases = [  # (the library's settings and preset, the CLI's flags for the same)
        (sine, "sine", ["--preset", "sine"]),
        (TuneConfig(steps=-1), None, ["--steps", "-1"]),
        (TuneConfig(seed=2**70), None, ["--seed", str(2**70)]),
    ]
    lines = []
    for cfg, preset, flags in cases:
        with pytest.raises(UserError) as e:
            tune_mod.tune(photo, out, cfg, model=tiny_model, device="cpu", preset=preset)
        lines.append(str(e.value))
        assert lines[-1] == _cli_line(
            capsys, "tune", photo, "--model", tiny_model, "--out", out, *flags
        )
        assert not out.exists()
    assert lines[0].startswith("--preset sine needs --class-noun"), lines[0]
    with pytest.raises(UserError, match="unknown --preset 'bogus'"):
        tune_mod.tune(photo, out, TuneConfig(), model=tiny_model, preset="bogus")
    # SINE's settings with a class noun pass every check: the next step is the model's load
    with pytest.raises(_Loaded):
        tune_mod.tune(photo, out, replace(sine, class_noun="cat"), model=tiny_model, preset="sine")
    assert not out.exists()


def test_library_batch_and_sweep_checks_are_the_clis(tuned, tmp_path, capsys, no_load):
    """run_batch refuses a missing jobs file and no workers as `unitune batch` does; the t0s of
    `edit --best-of --sweep-t0` are checked by check_edit(t0s=...); an edit needs a prompt."""
    from unitune.batch import run_batch
    from unitune.checks import check_edit
    from unitune.config import EditConfig
    from unitune.errors import UserError

    jobs, none, out = tmp_path / "jobs.jsonl", tmp_path / "none.jsonl", tmp_path / "b"
    jobs.write_text('{"image": "x.png"}\n')
    for (path, workers), words in (((none, 1), "does not exist"), ((jobs, 0), "--workers")):
        with pytest.raises(UserError, match=words) as e:
            run_batch(path, out, workers, progress=False)
        flags = [path, "--out", out, "--workers", workers]
        assert str(e.value) == _cli_line(capsys, "batch", *flags)
    assert not out.exists()
    with pytest.raises(UserError, match="--t0") as e:
        check_edit(tuned, EditConfig(), t0s=(0.5, 2.0))
    sweep = ["--best-of", "2", "--sweep-t0", "0.5,2", "--out", tmp_path / "e"]
    assert str(e.value) == _cli_line(capsys, "edit", tuned, "a dog", *sweep)
    assert _cli_line(capsys, "edit", tuned).startswith("no edit prompt given")


def test_sine_flags_have_readable_names_and_keep_the_papers(capsys):
    """--sine-until-t / --sine-pretrained-weight set EditConfig.sine_K / sine_v; the paper's --K
    and --v stay as aliases of the same flags; --help shows both."""
    from unitune.cli import _edit_config, build_parser
    from unitune.config import EditConfig
    from unitune.errors import UserError

    ap = build_parser()
    new = ["--sine-until-t", "300", "--sine-pretrained-weight", "0.6"]
    old = ["--K", "300", "--v", "0.6"]
    for cmd in (["edit", "TUNE", "a dog"], ["grid", "TUNE", "a dog"]):
        cfgs = [_edit_config(ap.parse_args([*cmd, *f])) for f in (new, old)]
        assert cfgs[0] == cfgs[1] and (cfgs[0].sine_K, cfgs[0].sine_v) == (300, 0.6)
    d = _edit_config(ap.parse_args(["edit", "TUNE", "a dog"]))
    assert (d.sine_K, d.sine_v) == (EditConfig().sine_K, EditConfig().sine_v)
    assert main(["edit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--sine-until-t K, --K K" in text and "--sine-pretrained-weight V, --v V" in text
    for flags, words in (
        (["--sine-until-t", "2000"], "--sine-until-t (--K) must be an integer in [0, 1000]"),
        (["--v", "1.5"], "--sine-pretrained-weight (--v) must be a number in [0, 1]"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            _edit_config(ap.parse_args(["edit", "TUNE", "a dog", *flags])).validate()
