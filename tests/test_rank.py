"""Best-of-N ranking (unitune/rank.py) and the --fidelity knob (unitune/fidelity_knob.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_cli import assert_user_error, run
from unitune.config import EditConfig
from unitune.errors import UserError
from unitune.fidelity_knob import apply_fidelity, frontier_point, load_map
from unitune.rank import RankConfig, combine, edit_region, probe_timesteps, zscores


def test_zscores_and_combine_on_hand_made_numbers():
    z = zscores(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(z, torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)
    assert torch.equal(zscores(torch.tensor([5.0, 5.0])), torch.zeros(2))  # no spread: no vote
    assert torch.equal(zscores(torch.tensor([4.0])), torch.zeros(1))
    edit = torch.tensor([0.0, 1.0, 1.0])  # candidates 1 and 2 show the edit equally well
    lp = torch.tensor([0.1, 0.5, 0.2])  # ... but 2 kept the rest of the image better
    s = combine(edit, lp, balance=1.0)
    assert int(s.argmax()) == 2
    assert int(combine(edit, lp, balance=0.0).argmin()) == 0  # fidelity ignored: 0 is worst
    assert int(combine(edit, lp, balance=10.0).argmax()) == 0  # fidelity dominates: 0 is best


def test_edit_region_marks_where_the_prompts_disagree():
    ref = torch.zeros(3, 4, 8, 8)
    ed = ref.clone()
    ed[:, :, 2:4, 5:7] = 1.0  # the edit prompt moves the prediction only there
    m = edit_region(ed, ref, (8, 8), 0.5)
    assert m.shape == (1, 1, 8, 8) and m.sum() == 4 and m[0, 0, 2:4, 5:7].all()
    up = edit_region(ed, ref, (32, 32), 0.5)  # bilinear to pixels: the 8x8-pixel block, +- edge
    assert abs(float(up.sum()) - 64) <= 8 and up[0, 0, 11, 23] == 1 and up[0, 0, 28, 4] == 0
    t = probe_timesteps(RankConfig(probes=5, t_lo=100, t_hi=900))
    assert t.tolist() == [100, 300, 500, 700, 900]


def test_best_of_cli_ranks_and_saves_the_top_pick(tuned, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "edit",
        tuned,
        "a red square",
        "--best-of",
        3,
        "--steps",
        3,
        "--seeds",
        5,
        "--out",
        tmp_path / "b",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    files = [Path(p) for p in out.split()]
    assert len(files) == 1
    side = json.loads(files[0].with_suffix(".json").read_text())
    bo = side["best_of"]
    assert bo["rank"] == 1 and bo["of"] == 3 and side["seed"] in (5, 6, 7)
    assert "rank" in err and err.count("seed ") == 3  # the ranking table, every candidate
    # the pick is an ordinary edit: --params reproduces it bit for bit
    code, out2, _ = run(
        capsys,
        "edit",
        tuned,
        "--params",
        files[0].with_suffix(".json"),
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0
    a, b = Image.open(files[0]), Image.open(out2.split()[0])
    assert a.tobytes() == b.tobytes()
    # a sweep over t0 doubles the candidates; --keep-all saves them all
    code, out, err = run(
        capsys,
        "edit",
        tuned,
        "a red square",
        "--best-of",
        2,
        "--sweep-t0",
        "0.8,1",
        "--steps",
        3,
        "--keep-all",
        "--out",
        tmp_path / "k",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0 and len(out.split()) == 4
    ranks = sorted(
        json.loads(Path(p).with_suffix(".json").read_text())["best_of"]["rank"] for p in out.split()
    )
    assert ranks == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--best-of", "-1"], ["--best-of", ">= 1"]),
        (["--keep-all"], ["only apply with --best-of"]),
        (["--best-of", "2", "--balance", "-1"], ["--balance"]),
        (["--fidelity", "2"], ["--fidelity", "[0, 1]"]),
        (["--fidelity", "0.5", "--t0", "0.9"], ["--fidelity", "--t0"]),
    ],
)
def test_best_of_and_fidelity_errors(tuned, tmp_path, capsys, flags, words):
    code, _, err = run(
        capsys, "edit", tuned, "a dog", *flags, "--out", tmp_path / "e", "--device", "cpu"
    )
    assert_user_error(code, err, *words)
    assert not (tmp_path / "e").exists()


POINTS = [  # a frontier, fidelity ascending (success descending)
    {"checkpoint": 16, "t0": 1.0, "cfg": 32.0, "fidelity": 0.50, "success": 0.6},
    {"checkpoint": 64, "t0": 1.0, "cfg": 7.5, "fidelity": 0.70, "success": 0.4},
    {"checkpoint": 128, "t0": 0.8, "cfg": 1.0, "fidelity": 0.90, "success": 0.0},
]


def test_fidelity_knob_walks_the_frontier():
    assert frontier_point(0.0, POINTS)["checkpoint"] == 16
    assert frontier_point(0.5, POINTS)["checkpoint"] == 64
    assert frontier_point(1.0, POINTS)["checkpoint"] == 128
    # only the tune's checkpoints are candidates
    assert frontier_point(1.0, POINTS, {16, 64})["checkpoint"] == 64
    with pytest.raises(UserError, match="--fidelity needs a checkpoint"):
        frontier_point(0.5, POINTS, {32})
    ec = apply_fidelity(EditConfig(seeds=(3,)), 1.0, None, {"points": POINTS})
    assert (ec.checkpoint, ec.t0, ec.cfg, ec.seeds) == (128, 0.8, 1.0, (3,))


def test_shipped_fidelity_map_is_a_measured_frontier():
    m = load_map()
    pts = m["points"]
    assert len(pts) >= 2 and m["source"]["samples"] > 0 and "command" in m
    fid = [p["fidelity"] for p in pts]
    suc = [p["success"] for p in pts]
    assert fid == sorted(fid) and suc == sorted(suc, reverse=True)  # a Pareto frontier
    assert {p["checkpoint"] for p in pts} <= set(m["source"]["bench_config"]["unitune_checkpoints"])


def test_fidelity_cli_sets_the_three_settings(tuned, tmp_path, capsys, monkeypatch):
    from unitune import fidelity_knob

    monkeypatch.setattr(
        fidelity_knob,
        "load_map",
        lambda path=None: {
            "points": [
                {"checkpoint": 2, "t0": 1.0, "cfg": 9.0, "fidelity": 0.4, "success": 0.5},
                {"checkpoint": 4, "t0": 0.8, "cfg": 2.0, "fidelity": 0.8, "success": 0.1},
            ]
        },
    )
    code, out, err = run(
        capsys,
        "edit",
        tuned,
        "a dog",
        "--fidelity",
        1,
        "--steps",
        2,
        "--out",
        tmp_path / "f",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    ec = json.loads(Path(out.split()[0]).with_suffix(".json").read_text())["edit_config"]
    assert (ec["checkpoint"], ec["t0"], ec["cfg"]) == (4, 0.8, 2.0)
    assert "checkpoint 4, t0 0.8, CFG 2" in err
