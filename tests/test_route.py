"""--route auto (route.py): the automatic mask's map decides, before sampling, whether an edit is
local (it then samples negative-prompt inversion inside the automatic mask from --route-t0 at
--route-cfg) or global (it samples as set); each branch is exactly the config it names, the
decision is recorded with the image and --params reproduces it; what it cannot combine with is
refused before any model loads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unitune import route
from unitune.cli import main
from unitune.config import EditConfig
from unitune.edit import Editor
from unitune.errors import UserError

STEPS = 6


@pytest.fixture(scope="module")
def editor(tuned) -> Editor:
    return Editor(tuned, "cpu")


def test_spread_tells_a_peaked_map_from_a_broad_one():
    """A few bright cells (a local edit's map) spread far more than a raised field with a
    little texture (a global edit's); a flat or zero map has spread 0."""
    g = torch.Generator().manual_seed(0)
    field = 1.0 + 0.3 * torch.rand(1, 1, 8, 8, generator=g)  # broad: std / mean ~0.08
    peaked = 0.1 * torch.rand(1, 1, 8, 8, generator=g)
    peaked[..., 2:4, 2:4] += 3.0  # 4 of 64 cells
    assert route.spread(field) < 0.2 < 2.0 < route.spread(peaked)
    assert route.spread(torch.ones(1, 1, 4, 4)) == 0.0
    assert route.spread(torch.zeros(1, 1, 4, 4)) == 0.0
    assert route.decide(peaked, 0.85).local and not route.decide(field, 0.85).local


def _cfg(**kw) -> EditConfig:
    return EditConfig(steps=STEPS, seeds=(0,), route="auto", **kw)


@pytest.mark.parametrize("cut", [1e-6, 1e6])
def test_each_branch_is_the_config_it_names(editor, cut):
    """With the spread cut below any map the edit is local and samples exactly the keep config
    (negative-prompt inversion, the automatic mask from the same map, route_t0, route_cfg);
    above any map it is global and samples exactly the config as set (route off)."""
    cfg = _cfg(route_spread=cut, t0=0.9, cfg=7.5, route_t0=0.7, route_cfg=2.0)
    plan = editor.plan("a dog", cfg)
    assert plan.route is not None and plan.route.local == (cut < 1)
    assert plan.route.spread > 0 and f"{plan.route.kind} edit" in plan.describe()
    if plan.route.local:
        named = replace(
            cfg, route="off", start="inversion", inversion_negative=True, auto_mask=True
        )
        named = replace(named, t0=0.7, cfg=2.0)
        assert plan.cfg.t0 == 0.7 and plan.cfg.cfg == 2.0 and plan.cfg.start == "inversion"
        assert plan.auto_mask is not None and plan.inversion is not None
    else:
        named = replace(cfg, route="off")
        assert plan.cfg.start == "noise" and plan.auto_mask is None and plan.cfg.t0 == 0.9
    ours = editor.run(plan, progress=False)
    ref = editor.edit("a dog", named, progress=False)
    assert torch.equal(ours.latents, ref.latents)
    assert torch.equal(ours.pixels, ref.pixels)
    (p,) = ours.params
    assert p["route"] == {"edit": plan.route.kind, "spread": round(plan.route.spread, 4)}
    assert p["edit_config"]["route"] == "auto"


def test_route_refuses_what_it_cannot_pick_for(editor):
    for over, flag in [
        (dict(method="sine"), "--method sine"),
        (dict(prompt_guidance="a cat"), "--prompt-guidance"),
        (dict(eta=0.5), "--eta"),
        (dict(route_spread=0.0), "--route-spread"),
        (dict(route_t0=0.0), "--route-t0"),
    ]:
        with pytest.raises(UserError, match=flag):
            _cfg(**over).validate()
    with pytest.raises(UserError, match="t0s"):
        editor.plan("a dog", _cfg(), t0s=(0.8, 1.0))


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main([*map(str, argv), "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_routed_edit_is_recorded_and_reproduced_by_params(tuned, tmp_path, capsys):
    """The image says which branch ran (A1111 'Route'), and --params re-runs it bit for bit
    (the map again, the same branch, the same image and mask)."""
    args = ["edit", tuned, "a dog", "--route", "auto", "--route-spread", "1e-6", "--steps", STEPS]
    code, out, err = _run([*args, "--out", tmp_path / "a", "--quiet"], capsys)
    assert code == 0, err
    (png,) = [Path(p) for p in out.split()]
    side = json.loads(png.with_suffix(".json").read_text())
    assert side["route"]["edit"] == "local" and side["edit_config"]["start"] == "inversion"
    text = Image.open(png).text["parameters"]
    assert "Route: local edit" in text and "Start: inversion (negative prompt)" in text
    code, out, err = _run(["edit", tuned, "--params", png, "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    (again,) = [Path(p) for p in out.split()]
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(again)))
    mask = png.with_name(png.stem + ".mask.png")
    assert np.array_equal(
        np.asarray(Image.open(mask)), np.asarray(Image.open(again.with_name(mask.name)))
    )


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--method", "sine"], "--method sine"),
        (["--best-of", "2"], "--best-of"),
        (["--route-cfg", "-1"], "--route-cfg"),
    ],
)
def test_cli_refuses_before_loading(tuned, tmp_path, capsys, extra, says):
    out = tmp_path / "o"
    code, _, err = _run(["edit", tuned, "a dog", "--route", "auto", *extra, "--out", out], capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_grid_refuses_route(tuned, tmp_path, capsys):
    out = tmp_path / "g.png"
    code, _, err = _run(["grid", tuned, "a dog", "--route", "auto", "--out", out], capsys)
    assert code == 2 and "--route auto" in err and not out.exists()


def test_a_routed_plan_encodes_each_prompt_once(editor, monkeypatch):
    """The route, the guider and the start of a local edit ask for the same prompts: within one
    plan the text encoder sees each batch of prompts once (the negative prompt included); the
    next plan encodes anew."""
    bb = editor.backbone
    seen: list[tuple[str, ...]] = []
    real = bb.encode

    def counted(prompts, *a, **k):
        seen.append(tuple(prompts))
        return real(prompts, *a, **k)

    monkeypatch.setattr(bb, "encode", counted)
    plan = editor.plan("a dog", _cfg(route_spread=1e-6))
    assert plan.route.local and seen and len(seen) == len(set(seen)), seen
    first = list(seen)
    editor.plan("a dog", _cfg(route_spread=1e-6))
    assert seen == first + first
