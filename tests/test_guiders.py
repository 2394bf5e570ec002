"""Guiders (guiders/: CFG, SINE, multi-model guidance): the pure builders on fake denoisers, then
SINE and multi-model guidance on the tiny model (library and CLI). The pure guidance math lives
in test_guidance.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from cli_run import one_error_line, run
from unitune.backbones.base import Conditioning
from unitune.config import EditConfig
from unitune.edit import Editor
from unitune.errors import UserError
from unitune.guidance import cfg as cfg_mix
from unitune.guidance import sine_mix
from unitune.guiders.cfg import CFG, cfg_guided
from unitune.guiders.multi import MultiModel, Term, evaluate, terms
from unitune.guiders.sine import SINE, sine_guided
from unitune.guidespec import GuideSpec, parse_guide

FAST = EditConfig(steps=3, seeds=(0,))


HW = (32, 32)  # the tiny model's resolution


def _eps(editor: Editor, x, t, cond: Conditioning):
    """The prediction of the checkpoint ``editor`` has applied (its own, independent model)."""
    return editor.state.tuned()(x, t, cond)


def _conds(editor: Editor, texts: list[str]) -> list[Conditioning]:
    return editor.encode(texts, HW, warn=False)


@pytest.mark.parametrize("kind", ["lora", "full", "patch"])
def test_sine_guided_terms_ends_and_switch(kind, lora_tune, full_tune, patch_tune):
    """eps_u / eps_pre from the pretrained model with the edit prompt (no rare token), eps_ft from
    the tuned one with c_hat (and its positional module); v = 1 / v = 0 ends; plain pretrained
    CFG for t <= K."""
    folder = {"lora": lora_tune, "full": full_tune, "patch": patch_tune}[kind]
    ed = Editor(folder, "cpu")
    ed.use_checkpoint(2)
    pre_ref = Editor(folder, "cpu")  # an independent copy: pretrained
    pre_ref.use_checkpoint(0)
    ft_ref = Editor(folder, "cpu")  # an independent copy: tuned
    ft_ref.use_checkpoint(2)
    c_hat = ed.folder.manifest.prompt
    assert c_hat == ed.tune_cfg.prompt()
    emb_u, emb_e, emb_h = _conds(pre_ref, ["", "a cat", c_hat])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    w, K = 5.0, 400
    hi, lo = torch.tensor(K + 1), torch.tensor(K)
    eps_u = _eps(pre_ref, x, hi, emb_u)
    eps_pre = _eps(pre_ref, x, hi, emb_e)
    eps_ft = _eps(ft_ref, x, hi, emb_h)
    assert not torch.allclose(eps_ft, _eps(pre_ref, x, hi, emb_h), atol=1e-4)

    def sine_fn(v):
        return ed.guider("a cat", EditConfig(method="sine", cfg=w, sine_v=v, sine_K=K), HW).build()

    for v in (0.0, 0.7, 1.0):
        want = sine_mix(eps_u, eps_pre, eps_ft, w, v)
        assert torch.allclose(sine_fn(v)(x, hi), want, atol=1e-4), v
    g0 = sine_fn(0.0)
    assert torch.allclose(g0(x, hi), cfg_mix(eps_u, eps_ft, w), atol=1e-4)  # v = 0 end
    assert torch.allclose(sine_fn(1.0)(x, hi), cfg_mix(eps_u, eps_pre, w), atol=1e-4)  # v = 1
    low = cfg_mix(_eps(pre_ref, x, lo, emb_u), _eps(pre_ref, x, lo, emb_e), w)
    assert torch.allclose(g0(x, lo), low, atol=1e-4)  # t <= K: pretrained CFG even at v = 0


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_sine_never_active_equals_pretrained_cfg(kind, lora_tune, full_tune):
    """K >= 1000: SINE never uses the tuned model, so it IS plain CFG on checkpoint 0 (for LoRA
    this checks the adapter is really switched off for the pretrained predictions)."""
    ed = Editor(lora_tune if kind == "lora" else full_tune, "cpu")
    ec = replace(FAST, checkpoint=2, method="sine", sine_K=1000, seeds=(0, 1))
    got = ed.edit("a cat", ec, progress=False).latents
    ref_cfg = replace(FAST, checkpoint=0, rare_token=False, seeds=(0, 1))
    ref = ed.edit("a cat", ref_cfg, progress=False).latents
    assert torch.allclose(got, ref, atol=1e-5)
    tuned = ed.edit("a cat", replace(ec, sine_K=0), progress=False).latents
    assert not torch.allclose(tuned, ref, atol=1e-4)  # and K = 0 does use it


def test_parse_guide(lora_tune, tmp_path):
    g = parse_guide(f"{lora_tune}:a painting: in the beikkpic style:2.5")
    assert g == GuideSpec(str(lora_tune), "a painting: in the beikkpic style", 2.5)
    assert parse_guide(f"{lora_tune}@2:x:-1") == GuideSpec(str(lora_tune), "x", -1.0, 2)
    assert parse_guide("pretrained:a dog:5") == GuideSpec(None, "a dog", 5.0)
    assert parse_guide(str(g)) == g  # round trip
    odd = tmp_path / "we:ird"
    odd.mkdir()
    assert parse_guide(f"{odd}:p:1").tune == str(odd)  # a ':' in the folder name
    for bad in ("nope", "a:1", f"{lora_tune}:p:abc", f"{lora_tune}:p:nan", "/no/such:p:1"):
        with pytest.raises(UserError, match="TUNE_DIR:PROMPT:WEIGHT"):
            parse_guide(bad)


def test_multi_refuses_other_base_model(lora_tune, full_tune, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(full_tune, other)
    m = json.loads((other / "manifest.json").read_text())
    m["model_path"] = m["model"] = "some/other-model"
    (other / "manifest.json").write_text(json.dumps(m))
    ed = Editor(lora_tune, "cpu")
    with pytest.raises(UserError, match="base model"):
        ed.edit("a cat", replace(FAST, guides=(f"{other}:x:1",)), progress=False)


def test_cli_edit_sine_and_guides(lora_tune, full_tune, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "edit",
        lora_tune,
        "a cat",
        "--method",
        "sine",
        "--steps",
        2,
        "--seeds",
        "0,1",
        "--out",
        tmp_path / "s",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    files = [Path(p) for p in out.split()]
    assert len(files) == 2 and all(f.suffix == ".png" and f.is_file() for f in files)
    text = Image.open(files[0]).text["parameters"]
    assert "Method: sine" in text and "SINE v: 0.7" in text and "beikkpic a cat" not in text
    code, out, err = run(
        capsys,
        "edit",
        lora_tune,
        "a painting of a cat",
        "--method",
        "sine",
        "--guide",
        f"{full_tune}:a painting in the beikkpic style:2",
        "--guide",
        "pretrained:a cat:1.5",
        "--steps",
        2,
        "--out",
        tmp_path / "g",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    (png,) = [Path(p) for p in out.split()]
    assert png.is_file() and "Guides:" in Image.open(png).text["parameters"]
    code, out2, err = run(
        capsys,
        "edit",
        lora_tune,
        "--params",
        png,
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    again = Path(out2.split()[0])
    assert Image.open(again).tobytes() == Image.open(png).tobytes()  # guides are reproduced


@pytest.mark.parametrize(
    "spec", ["nonsense", "pretrained:1", "{tune}:a cat:lots", "{tmp}/missing:a cat:1"]
)
def test_cli_bad_guide_spec(lora_tune, tmp_path, capsys, spec):
    spec = spec.format(tune=lora_tune, tmp=tmp_path)
    code, _, err = run(
        capsys,
        "edit",
        lora_tune,
        "a cat",
        "--guide",
        spec,
        "--out",
        tmp_path / "e",
        "--device",
        "cpu",
    )
    line = one_error_line(code, err)
    assert "--guide" in line and "TUNE_DIR:PROMPT:WEIGHT" in line
    assert not (tmp_path / "e").exists()


# --- the pure builders on fake denoisers -------------------------------------------------------


class Fake:
    """A denoiser whose prediction is ``scale x + c`` (c: the conditioning row's value); it
    records the batch size of every call."""

    def __init__(self, scale: float) -> None:
        self.scale, self.calls = scale, []

    def __call__(self, x, t, cond: Conditioning):
        self.calls.append(x.shape[0])
        return self.scale * x + cond.emb[:, 0, 0].view(-1, 1, 1, 1)


def _c(value: float) -> Conditioning:
    return Conditioning(torch.full((1, 2, 3), value))


X = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("w", [7.5, 0.0, -2.0])
def test_cfg_is_one_batched_pass(w):
    den = Fake(0.5)
    out = CFG(den, _c(1.0), _c(3.0), w).build()(X, torch.tensor(500))
    eps_u, eps_c = 0.5 * X + 1.0, 0.5 * X + 3.0
    torch.testing.assert_close(out, eps_u + w * (eps_c - eps_u))
    assert den.calls == [4]  # [baseline x 2 ; conditional x 2]


def test_cfg_at_w_1_is_one_conditional_pass():
    den = Fake(0.5)
    out = cfg_guided(den, _c(1.0), _c(3.0), 1.0)(X, torch.tensor(500))
    torch.testing.assert_close(out, 0.5 * X + 3.0)
    assert den.calls == [2]


def test_sine_mixes_above_K_and_is_pretrained_cfg_at_or_below_K_and_at_v_1():
    w, K = 5.0, 400
    eps_u, eps_pre, eps_ft = 0.5 * X + 1.0, 0.5 * X + 2.0, 2.0 * X + 3.0
    for v, t, want_ft in ((0.7, K + 1, True), (0.7, K, False), (1.0, K + 1, False)):
        pre, ft = Fake(0.5), Fake(2.0)
        g = SINE(pre, ft, _c(1.0), _c(2.0), _c(3.0), w, v, K).build()
        out = g(X, torch.tensor(t))
        want = sine_mix(eps_u, eps_pre, eps_ft, w, v) if want_ft else cfg_mix(eps_u, eps_pre, w)
        torch.testing.assert_close(out, want)
        assert pre.calls == [4] and ft.calls == ([2] if want_ft else []), (v, t)
    g = sine_guided(Fake(0.5), Fake(2.0), _c(1.0), _c(2.0), _c(3.0), w, 0.0, K)
    torch.testing.assert_close(g(X, torch.tensor(K + 1)), cfg_mix(eps_u, eps_ft, w))


def test_multi_model_batches_per_view_and_switches_to_low_under_sine():
    pre, a, b = Fake(0.5), Fake(2.0), Fake(-1.0)
    high = (
        Term(pre, _c(2.0), 2.0, False),
        Term(a, _c(3.0), 1.5, True),
        Term(a, _c(4.0), -0.5, True),
        Term(b, _c(5.0), 3.0, True),
    )
    low = (Term(pre, _c(2.0), 4.0, False), Term(pre, _c(6.0), 1.0, False))
    eps_u = 0.5 * X + 1.0
    preds = [0.5 * X + 2.0, 2.0 * X + 3.0, 2.0 * X + 4.0, -1.0 * X + 5.0]
    want_high = eps_u + sum(t.weight * (p - eps_u) for t, p in zip(high, preds))
    want_low = eps_u + 4.0 * (0.5 * X + 2.0 - eps_u) + 1.0 * (0.5 * X + 6.0 - eps_u)
    g = MultiModel(pre, _c(1.0), high, low, True, 400).build()
    torch.testing.assert_close(g(X, torch.tensor(401)), want_high)
    assert (pre.calls, a.calls, b.calls) == ([4], [4], [2])  # one forward per distinct view
    torch.testing.assert_close(g(X, torch.tensor(400)), want_low)
    assert (pre.calls, a.calls, b.calls) == ([4, 6], [4], [2])  # t <= K: low only
    unitune = MultiModel(pre, _c(1.0), high, (), False, 400).build()
    torch.testing.assert_close(unitune(X, torch.tensor(400)), want_high)  # no switch
    torch.testing.assert_close(evaluate(pre, _c(1.0), high, X, torch.tensor(9)), want_high)


def _rows(ts):
    return [(t.view, t.cond, pytest.approx(t.weight), t.tuned) for t in ts]


def test_terms_drop_zero_weights_and_keep_pretrained_guides_low():
    pre, tuned, g1 = Fake(1.0), Fake(2.0), Fake(3.0)
    guides = [Term(g1, "style", 2.0, True), Term(pre, "a dog", 1.5, False)]
    guides += [Term(g1, "zero", 0.0, True)]
    args = (pre, tuned, "a cat", "beikkpic a cat", "a photo of a beikkpic cat", guides)
    high, low = terms(True, 5.0, 0.7, *args)
    assert _rows(high) == [
        (pre, "a cat", 3.5, False),
        (tuned, "a photo of a beikkpic cat", 1.5, True),
        (g1, "style", 2.0, True),
        (pre, "a dog", 1.5, False),
    ]
    assert _rows(low) == [(pre, "a cat", 5.0, False), (pre, "a dog", 1.5, False)]
    high, _ = terms(True, 5.0, 1.0, *args)  # v = 1: the tuned c_hat term has weight 0
    assert [t.view for t in high] == [pre, g1, pre]
    high, low = terms(False, 5.0, 0.7, *args)
    assert _rows(high) == [
        (tuned, "beikkpic a cat", 5.0, True),
        (g1, "style", 2.0, True),
        (pre, "a dog", 1.5, False),
    ]
    assert low == []
