"""Tune schedules (tune_schedule.py): the learning rate per step, squeezed timesteps, the
automatic stop, their CLI flags, and the time-to-quality study's summary
(bench/time_to_quality.py)."""

from __future__ import annotations

import math

import pytest
import torch

from cli_run import one_error_line, run
from unitune.backbones import load_model
from unitune.bench.config import PRESETS, BenchConfig, Schedule
from unitune.bench.runner import run_bench
from unitune.bench.time_to_quality import matches, summarise
from unitune.config import TuneConfig
from unitune.edit import Editor
from unitune.tune import tune
from unitune.tune_schedule import Stopper, lr_at, squeeze
from unitune.tunefolder import load_resume_state


def test_lr_at_warmup_then_constant_or_cosine():
    c = TuneConfig(steps=10, lr=1e-3, warmup_steps=4)
    assert [lr_at(c, s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(lr_at(c, s) == 1e-3 for s in range(4, 10))
    cos = TuneConfig(steps=10, lr=1e-3, warmup_steps=2, lr_schedule="cosine")
    rates = [lr_at(cos, s) for s in range(10)]
    assert rates[:2] == pytest.approx([5e-4, 1e-3])
    # from cfg.lr down to 0 at the end of the last step, monotone, half-way at half the span
    assert all(a > b for a, b in zip(rates[1:], rates[2:], strict=False))
    assert rates[-1] == pytest.approx(0, abs=1e-12)
    assert rates[5] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    paper = TuneConfig(lr=1e-4)  # the paper's schedule: the same rate at every step
    assert {lr_at(paper, s) for s in range(128)} == {1e-4}


def test_squeeze_keeps_the_dtype_and_bounds():
    t = torch.tensor([0, 1, 500, 999])
    s = squeeze(t, 0.9)
    assert s.dtype == t.dtype and s.tolist() == [0, 0, 450, 899]
    f = torch.tensor([0.0, 1000.0, 250.0])
    assert squeeze(f, 0.5).tolist() == [0.0, 500.0, 125.0]
    assert squeeze(t, 1.0) is t


def test_stopper_needs_patience_misses_in_a_row():
    s = Stopper(2)
    # 1.0 best; 0.995 is not 1% better (miss); 0.9 better (reset); 0.95, 0.899 misses -> stop
    assert [s.add(v) for v in (1.0, 0.995, 0.9, 0.95, 0.899)] == [False] * 4 + [True]
    assert not any(Stopper(0).add(v) for v in (1.0, 2.0, 3.0))  # 0: never stops


@pytest.mark.slow
def test_schedules_in_a_tune(tiny_model, photo, tmp_path):
    bb = load_model(tiny_model, "cpu")

    def run_tune(name, **kw):
        cfg = TuneConfig(lr=1e-3, **kw)
        return tune(photo, tmp_path / name, cfg, backbone=bb, model=tiny_model, progress=False)

    # a constant rate: a shorter run's last checkpoint IS the longer run's checkpoint there
    # (the time-to-quality study's "fewer steps" rows rest on it)
    long, short = run_tune("long", steps=4, save_at=(2, 4)), run_tune("short", steps=2)
    a, _ = long.load_checkpoint(2)
    b, _ = short.load_checkpoint(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # warm-up over 2 steps: step 1 at half the rate, so half the constant run's first update
    warm = run_tune("warm", steps=2, save_at=(1,), warmup_steps=2)
    one = run_tune("one", steps=1)
    w, _ = warm.load_checkpoint(1)
    o, _ = one.load_checkpoint(1)
    moved = [k for k in o if o[k].abs().max() > 0]
    # (deltas are stored in the model's fp16: a rounding's worth of tolerance)
    assert moved and all(torch.allclose(w[k], 0.5 * o[k], rtol=1e-2, atol=2e-6) for k in moved)
    # --max-timestep: every training timestep below the fraction of the schedule
    seen: list[torch.Tensor] = []
    real = bb.add_noise

    def spy(x0, noise, t):
        seen.append(t.clone())
        return real(x0, noise, t)

    bb.add_noise = spy
    try:
        run_tune("tmax", steps=6, max_timestep=0.3)
    finally:
        del bb.add_noise
    ts = torch.cat(seen)
    assert len(ts) == 6 * 4 and int(ts.max()) < 300


@pytest.mark.slow
def test_auto_stop_saves_where_it_stops(tiny_model, photo, tmp_path):
    # a rate too small to move the probe: the 2nd probe misses its 1% and patience 1 stops there
    cfg = TuneConfig(steps=8, save_at=(8,), lr=1e-12, auto_stop=1, probe_every=2)
    f = tune(photo, tmp_path / "a", cfg, model=tiny_model, device="cpu", progress=False)
    m = f.manifest
    assert sorted(m.checkpoints) == [4] and m.status == "complete" and len(m.loss_history) == 4
    res = Editor(f.path, "cpu").edit("a cat", steps_cfg(), progress=False)
    assert res.params[0]["edit_config"]["checkpoint"] == 4  # the last one saved
    # the probes ride in the resume state, so a resumed run decides as an uninterrupted one
    g = tune(
        photo, tmp_path / "b", cfg, model=tiny_model, device="cpu", progress=False, keep_resume=True
    )
    step, _, scalars, _ = load_resume_state(g)
    assert step == 4 and len(scalars["probe"]) == 2
    # a real rate keeps improving: no stop in 4 steps
    busy = TuneConfig(steps=4, save_at=(4,), lr=1e-3, auto_stop=3, probe_every=1)
    h = tune(photo, tmp_path / "c", busy, model=tiny_model, device="cpu", progress=False)
    assert sorted(h.manifest.checkpoints) == [4]


def steps_cfg():
    from unitune.config import EditConfig

    return EditConfig(steps=1, seeds=(0,))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--lr-schedule", "linear"], "--lr-schedule"),
        (["--max-timestep", "0"], "--max-timestep"),
        (["--max-timestep", "1.5"], "--max-timestep"),
        (["--warmup-steps", "-1"], "--warmup-steps"),
        (["--auto-stop", "1", "--patches"], "--auto-stop"),
        (["--probe-every", "0"], "--probe-every"),
    ],
)
def test_cli_refuses_bad_schedules_before_loading(capsys, photo, tmp_path, flags, needle):
    code, _, err = run(capsys, "tune", photo, "--out", tmp_path / "t", *flags)
    assert needle in one_error_line(code, err)
    assert not (tmp_path / "t").exists()


def _rec(label, scene, kind, success, fidelity, tune_s, run_s, schedule, ck):
    return {
        "label": label,
        "schedule": schedule,
        "checkpoint": ck,
        "scene": scene,
        "kind": kind,
        "success": success,
        "fidelity": fidelity,
        "tune_s": tune_s,
        "run_s": run_s,
        "run_steps": 128,
    }


def test_summary_pairs_with_the_default_and_picks_the_fastest_match():
    bc = BenchConfig(
        schedules=(
            Schedule("paper", (("steps", 128),), (8, 32)),
            Schedule("cos", (("steps", 16), ("lr_schedule", "cosine")), (16,)),
        )
    )
    recs = []
    for i in range(6):
        s = f"s{i}"
        for kind in ("add", "recolour"):
            ok = (i + (kind == "add")) % 2 == 0
            recs.append(_rec("paper c32", s, kind, ok, 0.85, 10.0, 40.0, "paper", 32))
            # c8: the same samples (a match) reached at 2.5 s of a constant-rate run
            recs.append(_rec("paper c8", s, kind, ok, 0.85, 2.5, 40.0, "paper", 8))
            # cos c16: never succeeds (no match); its time is the whole run, 5 s
            recs.append(_rec("cos c16", s, kind, False, 0.9, 4.0, 5.0, "cos", 16))
    out = summarise(recs, bc, boot=200)
    rows = {r["label"]: r for r in out["rows"]}
    assert rows["paper c32"]["seconds"] == 40.0  # the default waits for the whole run
    assert rows["paper c8"]["seconds"] == 2.5 and rows["paper c8"]["steps"] == 8
    assert rows["cos c16"]["seconds"] == 5.0 and rows["cos c16"]["steps"] == 128
    assert rows["paper c8"]["matches_default"] and not rows["cos c16"]["matches_default"]
    v = rows["cos c16"]["vs_default"]
    assert v["success"]["diff"] == -0.5 and v["success"]["ci95"][1] < 0
    assert set(rows["cos c16"]["per_kind"]) == {"add", "recolour"}
    assert out["fastest_match"]["label"] == "paper c8" and out["speedup"] == 16.0
    assert not matches(
        {"success": {"diff": 0, "ci95": [-1, 1]}, "fidelity": {"diff": -0.01, "ci95": [-1, 1]}}
    )


def test_the_study_preset_validates_and_keeps_other_fingerprints():
    ttq = PRESETS["time-to-quality"]
    ttq.validate()
    assert ttq.schedules and ttq.schedules[0].name == "paper" and 32 in ttq.schedules[0].checkpoints
    with pytest.raises(ValueError, match="checkpoints not saved"):
        BenchConfig(schedules=(Schedule("x", (("steps", 4),), (8,)),)).validate()
    assert PRESETS["medium"].fingerprint() != ttq.fingerprint()
    # the 40-scene check: its reference is the default tune, whose checkpoint 32 is the paper's
    check = PRESETS["time-to-quality-40"]
    check.validate()
    ref = TuneConfig(**dict(check.schedules[0].tune))
    full = TuneConfig().schedule("full")
    assert (ref.steps, ref.save_at) == (full.steps, full.save_at)
    assert check.n_scenes == 40 and 32 in check.schedules[0].checkpoints


@pytest.mark.slow
def test_the_study_end_to_end_on_the_tiny_model(tiny_model, tmp_path):
    bc = BenchConfig(
        n_scenes=1,
        kinds=("recolour",),
        seeds=(0,),
        steps=2,
        model=tiny_model,
        schedules=(
            Schedule("paper", (("steps", 2), ("save_at", (1, 2))), (0, 1, 2)),
            Schedule("cos", (("steps", 2), ("lr_schedule", "cosine"), ("warmup_steps", 1)), (2,)),
            Schedule("auto", (("steps", 4), ("auto_stop", 1), ("probe_every", 1), ("lr", 1e-12))),
        ),
    )
    s = run_bench(bc, tmp_path / "out", device="cpu", log=None)
    labels = [r["label"] for r in s["rows"]]
    assert labels == ["paper c0", "paper c1", "paper c2", "cos c2", "auto stop"]
    assert s["default"] is None  # no 32-step checkpoint in this small run: nothing to pair with
    auto = s["rows"][-1]
    assert auto["checkpoint"] == 2 and auto["steps"] == 2  # where it stopped (1 scene)
    for f in ("time_to_quality.json", "time_to_quality.md", "time_to_quality.png"):
        assert (tmp_path / "out" / f).is_file()
    again = run_bench(bc, tmp_path / "out", device="cpu", log=None)  # results reused
    assert again["rows"] == s["rows"] and again["meta"]["scenes_run"] == 0
