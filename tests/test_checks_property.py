"""Property tests (Hypothesis) of the checks made before any model loads: generated arguments of
every kind (huge and negative integers, NaN and inf, empty, huge and NUL-carrying text, wrong
types, lists) thrown at the configs' validate(), check_prompt, parse_limits, the manifest-shape
check, a `unitune batch` line and the CLI's parse-and-check path. Each either succeeds or
refuses in ONE line (a UserError, or exit 2 with one line on stderr), never another exception.
Derandomized, so CI sees the same examples every run."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import fields, replace
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from unitune.batch import parse_line
from unitune.checks import check_manifest_shape, settings_dict
from unitune.config import (
    EditConfig,
    GridConfig,
    ModelDefaults,
    TuneConfig,
    WorkLimits,
    check_prompt,
    parse_limits,
)
from unitune.errors import UserError

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "a\x00b", "x" * 5000, "beikkpic", "a dog", "\n", "../x", "/etc"]),
)
NUMBER_TEXT = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "9" * 5000,
            "0",
            "1",
            "-1",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "0x10",
            "1,2",
            "0,,1",
            "abc",
            "512x512",
            "0x0",
            "99999x1",
            "2,4",
            "0.5,2",
            "",
        ]
    ),
)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.just(10**5000),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.lists(st.integers(-5, 2**40), max_size=4),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=2)), max_size=3),
    st.tuples(st.integers(-5, 5000), st.integers(-5, 5000)),
    st.just(list(range(500))),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
CLI = settings(FAST, max_examples=100)  # each example: a parse and the checks of a real command
SMALL = WorkLimits(
    max_seeds=2,
    max_seed=100,
    max_grid_cells=4,
    max_sample_steps=10,
    max_tune_steps=10,
    max_batch_size=2,
    max_prompt_chars=20,
    max_side=64,
    max_guides=1,
)
LIMITS = st.sampled_from([WorkLimits(), SMALL])


def one_line(e: BaseException) -> None:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg and len(msg) < 500, msg


def overrides(cls) -> st.SearchStrategy[dict]:
    names = [f.name for f in fields(cls)]
    return st.dictionaries(st.sampled_from(names), ANY, max_size=4)


@FAST
@given(over=overrides(TuneConfig), limits=LIMITS)
def test_tune_config_validate_refuses_in_one_line(over, limits):
    cfg = replace(TuneConfig(), **over)
    try:
        cfg.validate(limits=limits)
    except UserError as e:
        one_line(e)
        return
    # what passed is usable: the prompt, the model's defaults, the manifest's JSON
    cfg.prompt()
    json.dumps(settings_dict(cfg.for_model(ModelDefaults())), allow_nan=False)
    assert (cfg.steps or 0) <= limits.max_tune_steps and cfg.batch_size <= limits.max_batch_size


@FAST
@given(over=overrides(EditConfig), limits=LIMITS)
def test_edit_config_validate_refuses_in_one_line(over, limits):
    cfg = replace(EditConfig(), **over)
    try:
        cfg.validate(limits=limits)
    except UserError as e:
        one_line(e)
        return
    cfg = cfg.for_model(ModelDefaults())
    assert 1 <= len(cfg.seeds) <= limits.max_seeds and cfg.steps <= limits.max_sample_steps
    assert all(0 <= s <= limits.max_seed for s in cfg.seeds)
    assert cfg.size is None or max(cfg.size) <= limits.max_side


@FAST
@given(over=overrides(GridConfig), limits=LIMITS)
def test_grid_config_validate_refuses_in_one_line(over, limits):
    grid = replace(GridConfig(), **over)
    try:
        grid.validate(limits=limits)
    except UserError as e:
        one_line(e)
        return
    cells = len(grid.checkpoints) * len(grid.t0s) * len(grid.seeds)
    assert cells <= limits.max_grid_cells


@FAST
@given(prompt=ANY, limits=LIMITS, required=st.booleans())
def test_check_prompt_refuses_in_one_line(prompt, limits, required):
    try:
        assert check_prompt(prompt, limits, required=required) == prompt
    except UserError as e:
        one_line(e)
        return
    assert isinstance(prompt, str) and len(prompt) <= limits.max_prompt_chars
    assert "\x00" not in prompt and (prompt.strip() or not required)


LIMIT_ITEM = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from([f.name for f in fields(WorkLimits)]), NUMBER_TEXT
    ),
    TEXT,
    st.builds(lambda k, v: f"{k}={v}", TEXT, NUMBER_TEXT),
)


@FAST
@given(items=st.lists(LIMIT_ITEM, max_size=3))
def test_parse_limits_refuses_in_one_line(items):
    try:
        limits = parse_limits(items)
    except UserError as e:
        one_line(e)
        return
    assert all(isinstance(getattr(limits, f.name), int) for f in fields(WorkLimits))


GOOD_MANIFEST = {
    "format": "unitune-tune",
    "model": "world",
    "model_path": "/m",
    "settings": settings_dict(TuneConfig()),
    "checkpoints": {"2": {"file": "checkpoints/step-2.safetensors", "loss": 0.1}},
    "image": {"sha256": "0" * 64},
    "resolution": [32, 32],
    "placement": {"orig_size": [40, 30], "target": [32, 32], "mode": "crop", "box": [0, 5, 30, 35]},
}
MANIFEST_KEYS = [*GOOD_MANIFEST, "size_multiple", "family", "vae", "loss_history", "status"]


@FAST
@given(
    over=st.dictionaries(st.sampled_from(MANIFEST_KEYS), ANY, max_size=3),
    shape=st.sampled_from(["dict", "list", "str"]),
)
def test_manifest_shape_refuses_in_one_line(over, shape):
    from unitune.images import Placement

    m = {**GOOD_MANIFEST, **over}
    data = m if shape == "dict" else list(m) if shape == "list" else "x"
    try:
        check_manifest_shape(data, "t/manifest.json")
    except UserError as e:
        one_line(e)
        return
    # what passed is what the code reads without a traceback
    st_ = m["settings"]
    TuneConfig(**{**st_, "save_at": tuple(st_["save_at"])})
    sorted(int(s) for s in m.get("checkpoints", {}))
    Placement.from_dict(m["placement"]).geometry(tuple(m["resolution"]))
    str(m["model"]) + m["image"]["sha256"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prop")
    Image.new("RGB", (40, 30), (200, 100, 50)).save(d / "cat.png")
    (d / "jobs.jsonl").write_text(json.dumps({"image": "cat.png"}) + "\n")
    (d / "a-file").write_text("x")
    return d


LINE_VALUE = st.one_of(ANY, st.just("cat.png"), st.just({"steps": 2}), st.just([{"prompt": "a"}]))
LINE_KEYS = st.sampled_from(["image", "name", "model", "tune", "edits", "prompt", "steps"])
EDIT_SETTINGS = st.dictionaries(
    st.sampled_from(["prompt", "seeds", "steps", "t0", "cfg", "K", "size", "bogus"]),
    ANY,
    max_size=3,
)


@FAST
@given(
    line=st.one_of(
        st.dictionaries(LINE_KEYS, LINE_VALUE, max_size=4).map(lambda d: {"image": "cat.png", **d}),
        st.builds(
            lambda e, t: {"image": "cat.png", "edits": [e], "tune": t},
            EDIT_SETTINGS,
            st.dictionaries(
                st.sampled_from(["steps", "save-at", "seed", "lr", "x"]), ANY, max_size=2
            ),
        ),
        ANY,
        st.sampled_from(
            [
                '{"image": "cat.png", "tune": {"steps": ' + "9" * 5000 + "}}",
                "[" * 100_000 + "]" * 100_000,
                '{"image": "cat.png", "x": 1}',
                '{"image": "cat.png", "name": "../up"}',
                '{"image": "cat.png"',
            ]
        ),
    ),
    limits=LIMITS,
)
def test_batch_line_refuses_in_one_line(work, line, limits):
    try:
        text = line if isinstance(line, str) and line.startswith("{") else json.dumps(line)
    except (TypeError, ValueError):
        text = "not JSON"  # e.g. an integer beyond JSON's text: a bad line too
    try:
        job = parse_line(text, 3, work, limits)
    except UserError as e:
        one_line(e)
        return
    name = job["name"]
    assert name and "/" not in name and "\\" not in name and name not in (".", "..")
    assert (work / name).resolve().parent == work.resolve()  # inside --out


class Reached(Exception):
    """The CLI got past every check: it was about to load a model."""


def run_cli(argv: list[str], cwd: Path) -> None:
    """``unitune ARGV`` in-process with the model load replaced: a success reaches it, a bad
    argument exits 2 with one line on stderr; anything else is a bug."""
    from unitune import cli

    err = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with (
            mock.patch.object(cli, "_before_load", side_effect=Reached),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            code = cli.main(argv)
    except Reached:
        event("checks passed")
        return
    finally:
        os.chdir(old)
    lines = [ln for ln in err.getvalue().splitlines() if not ln.startswith("unitune: warning:")]
    event(f"refused: {lines[0][16:40] if lines else '?'}")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("unitune: error:"), (
        argv,
        err.getvalue(),
    )


PLAUSIBLE = st.one_of(
    st.integers(-3, 1200).map(str),
    st.floats(-1, 40, allow_nan=False).map(lambda x: f"{x:g}"),
    st.sampled_from(["0.9", "1", "2", "4", "0,1", "2,4", "64x64", "32x32", "ddim", "sine"]),
)
VALUE = st.one_of(PLAUSIBLE, PLAUSIBLE, NUMBER_TEXT, TEXT)


def argv_of(flags: list[str]) -> st.SearchStrategy[list[str]]:
    """Up to four of ``flags``, each with a generated value (``--flag=v`` or ``--flag v``)."""
    pair = st.tuples(st.sampled_from(flags), VALUE, st.booleans())
    return st.lists(pair, max_size=4).map(
        lambda ps: [x for f, v, eq in ps for x in ([f"{f}={v}"] if eq else [f, v])]
    )


EDIT_FLAGS = [
    "--t0",
    "--cfg",
    "--steps",
    "--seeds",
    "--checkpoint",
    "--sampler",
    "--method",
    "--negative-prompt",
    "--prompt-guidance",
    "--interp-window",
    "--interp-threshold",
    "--lora-scale",
    "--sine-until-t",
    "--sine-pretrained-weight",
    "--K",
    "--v",
    "--size",
    "--eta",
    "--true-cfg",
    "--sr-steps",
    "--sr-t0",
    "--upscale-steps",
    "--upscale-noise-level",
    "--sr-noise-level",
    "--best-of",
    "--balance",
    "--fidelity",
    "--guide",
    "--out",
    "--mask",
    "--params",
    "--sweep-t0",
    "--sweep-checkpoints",
]
TUNE_FLAGS = [
    "--steps",
    "--save-at",
    "--batch-size",
    "--lr",
    "--lora-rank",
    "--rare-token",
    "--base-prompt",
    "--class-noun",
    "--seed",
    "--resolution",
    "--patch-min-frac",
    "--preset",
    "--method",
    "--out",
    "--resize",
]
GRID_FLAGS = ["--checkpoints", "--t0", "--seeds", "--cell", "--rows", "--steps", "--cfg", "--out"]


@CLI
@given(prompt=TEXT, flags=argv_of(EDIT_FLAGS))
def test_cli_edit_refuses_in_one_line(tuned, work, prompt, flags):
    run_cli(["edit", str(tuned), prompt, "--out", str(work / "edits"), *flags], work)


@CLI
@given(flags=argv_of(TUNE_FLAGS))
def test_cli_tune_refuses_in_one_line(work, flags):
    run_cli(
        ["tune", str(work / "cat.png"), "--model", "world", "--out", str(work / "tune"), *flags],
        work,
    )


@CLI
@given(prompt=TEXT, flags=argv_of(GRID_FLAGS))
def test_cli_grid_refuses_in_one_line(tuned, work, prompt, flags):
    run_cli(
        ["grid", str(tuned), prompt, "--checkpoints", "2,4", "--out", str(work / "g.png"), *flags],
        work,
    )


@CLI
@given(
    cmd=st.sampled_from(["export", "batch", "demo"]),
    a=VALUE,
    b=VALUE,
    out=st.sampled_from(["new", "a-file", "", ".", "a-file/x", "/dev/null", "x.safetensors"]),
    fmt=st.sampled_from(["diffusers-lora", "merged", "lora-from-full", "bogus"]),
)
def test_cli_export_batch_demo_refuse_in_one_line(tuned, work, cmd, a, b, out, fmt):
    if cmd == "export":
        argv = ["export", str(tuned), "--format", fmt, "--out", out, "--rank", a, "--checkpoint", b]
    elif cmd == "batch":
        argv = ["batch", "jobs.jsonl", "--out", out, "--limit", f"max_seeds={a}", "--limit", b]
    else:
        argv = ["demo", "--out", out, "--seeds", a]
    run_cli(argv, work)
