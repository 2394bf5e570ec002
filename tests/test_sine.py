"""SINE on the tiny model: model-based guidance wiring, patch tunes, presets, multi-model guidance
(library and CLI). The pure guidance math lives in test_guidance.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unitune import patches
from unitune.backbones.base import Conditioning
from unitune.cli import main
from unitune.config import EditConfig, TuneConfig, tune_preset
from unitune.edit import Editor
from unitune.errors import UserError
from unitune.guidance import cfg as cfg_mix
from unitune.guidance import multi_guidance, sine_mix
from unitune.guidespec import GuideSpec, parse_guide
from unitune.tune import tune

FAST = EditConfig(steps=3, seeds=(0,))


def _tune(tmp_path_factory, tiny_model, photo, name, **kw) -> Path:
    out = tmp_path_factory.mktemp("sine") / name
    cfg = TuneConfig(steps=2, save_at=(2,), **kw)
    tune(photo, out, cfg, model=tiny_model, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def lora_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return _tune(tmp_path_factory, tiny_model, photo, "lora", method="lora", lora_rank=4, lr=1e-2)


@pytest.fixture(scope="module")
def full_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return _tune(tmp_path_factory, tiny_model, photo, "full", lr=1e-3, class_noun="cat")


@pytest.fixture(scope="module")
def patch_tune(tiny_model, photo, tmp_path_factory) -> Path:
    return _tune(tmp_path_factory, tiny_model, photo, "patch", patches=True, lr=1e-2)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("unitune: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- guidance wiring ---------------------------------------------------------------------------


def test_sine_mix_is_multi_guidance_over_both_models():
    u, pre, ft = (torch.randn(1, 4, 2, 2) for _ in range(3))
    w, v = 7.5, 0.7
    ref = multi_guidance(u, [pre, ft], [w * v, w * (1 - v)])
    assert torch.allclose(sine_mix(u, pre, ft, w, v), ref, atol=1e-5)


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


# --- patch tunes -------------------------------------------------------------------------------


def test_patch_tune_saves_and_reloads_positional_module(patch_tune):
    tensors = load_file(str(patch_tune / "checkpoints" / "step-000002.safetensors"))
    pos = {k: v for k, v in tensors.items() if k.startswith("pos.")}
    assert set(pos) == {"pos.weight", "pos.bias"} and pos["pos.weight"].abs().sum() > 0
    assert not any("pos_proj" in k for k in tensors)  # not also inside the fp16 delta
    ed = Editor(patch_tune, "cpu")
    ed.use_checkpoint(2)
    proj, n_freq = ed.state.tuned().pos  # the tuned view's positional module
    assert torch.equal(proj.weight.detach().cpu(), pos["pos.weight"]) and n_freq == 6
    assert torch.equal(proj.bias.detach().cpu(), pos["pos.bias"])
    x = torch.randn(1, 4, 8, 8)
    (c,) = _conds(ed, ["beikkpic"])
    ed.state.tuned()(x, torch.tensor(500), c)
    mod = patches.get(ed.backbone.module, ed.backbone.patch_site)
    assert mod.box is None and mod.enabled  # sampling: the whole image
    ed.use_checkpoint(0)  # and back: the pretrained model again, the module off
    assert ed.state.tuned().pos is None
    ed.state.tuned()(x, torch.tensor(500), c)
    assert not patches.get(ed.backbone.module, ed.backbone.patch_site).enabled


@pytest.mark.parametrize("method", ["sine", "unitune"])
def test_edit_at_non_training_size(patch_tune, method):
    ed = Editor(patch_tune, "cpu")
    ec = replace(FAST, checkpoint=2, method=method, size=(32, 48), sine_K=0)
    res = ed.edit("a cat", ec, progress=False)
    assert res.images[0].size == (48, 32) and res.latents.shape == (1, 4, 8, 12)
    assert torch.isfinite(res.pixels).all()


# --- presets -----------------------------------------------------------------------------------


def test_tune_presets():
    assert tune_preset("unitune") == {}
    sine_p = tune_preset("sine")
    assert sine_p["lr"] == 1e-6 and sine_p["batch_size"] == 1 and sine_p["steps"] == 800
    assert tune_preset("sine", patches=True)["steps"] == 10_000
    assert "lr" not in tune_preset("sine", method="lora")
    cfg = TuneConfig(base_prompt="a beikkpic dog with a flower in its mouth")
    assert cfg.prompt() == "a beikkpic dog with a flower in its mouth"  # verbatim: has the token
    assert TuneConfig(base_prompt="dog").prompt() == "beikkpic dog"
    assert TuneConfig(class_noun="dog").prompt() == "a photo of a beikkpic dog"


def test_cli_sine_preset(tiny_model, photo, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "a",
        "--preset",
        "sine",
        "--device",
        "cpu",
        "--quiet",
    )
    assert "--class-noun" in one_error_line(code, err) and not (tmp_path / "a").exists()
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "a",
        "--patches",
        "--patch-min-frac",
        "0",
        "--device",
        "cpu",
    )
    assert "--patch-min-frac" in one_error_line(code, err)
    code, _, err = run(
        capsys,
        "tune",
        photo,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "b",
        "--preset",
        "sine",
        "--class-noun",
        "cat",
        "--steps",
        1,
        "--save-at",
        1,
        "--patches",
        "--patch-min-frac",
        0.5,
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    st = m["settings"]
    assert st["lr"] == 1e-6 and st["batch_size"] == 1 and st["steps"] == 1  # explicit flags win
    assert st["patches"] and st["patch_min_frac"] == 0.5
    assert m["prompt"] == "a photo of a beikkpic cat"


# --- multi-model guidance ----------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def lora_patch(tiny_model, photo, tmp_path_factory) -> Path:
    return _tune(
        tmp_path_factory,
        tiny_model,
        photo,
        "lora-patch",
        method="lora",
        lora_rank=4,
        lr=1e-2,
        patches=True,
        pos_freqs=3,
    )


@pytest.fixture(scope="module")
def lora_copy(lora_tune, tmp_path_factory) -> Path:
    """Another LoRA tune folder (same weights): loads as a second adapter, not as the primary."""
    out = tmp_path_factory.mktemp("sine") / "lora-copy"
    shutil.copytree(lora_tune, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("primary", ["lora", "full"])
def test_multi_views_match_separate_models_and_restore_state(
    primary, lora_tune, full_tune, patch_tune, lora_copy, lora_patch
):
    """Each guide's prediction equals its own separately loaded tune (LoRA guides as adapters on
    the shared pretrained UNet, full ones as their own UNets); a zero-weight guide leaves SINE
    unchanged; afterwards the primary samples exactly as before."""
    ed = Editor(lora_tune if primary == "lora" else full_tune, "cpu")
    ec = replace(FAST, checkpoint=2, method="sine", sine_K=0)
    before = ed.edit("a cat", ec, progress=False).latents
    guides = (f"{full_tune}:a photo of a beikkpic cat:0", f"{patch_tune}:beikkpic:0")
    same = ed.edit("a cat", replace(ec, guides=guides), progress=False).latents
    assert torch.allclose(same, before, atol=1e-5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(501)
    emb = _conds(ed, ["", "beikkpic"])
    # lora_patch first: later full guides are then rebuilt from a UNet carrying adapters and a
    # positional module
    guides = (
        (lora_patch, 1.0),
        (full_tune, 1.5),
        (patch_tune, -0.5),
        (lora_tune, 2.0),
        (lora_copy, 3.0),
    )
    pre = Editor(lora_tune, "cpu")
    pre.use_checkpoint(0)  # every tune shares this base model
    eps_u = _eps(pre, x, t, emb[0])
    for folder, w in guides:
        g = ed.guider("a cat", replace(ec, cfg=0.0, guides=(f"{folder}:beikkpic:{w}",)), HW).build()
        ref = Editor(folder, "cpu")
        ref.use_checkpoint(2)
        want = eps_u + w * (_eps(ref, x, t, emb[1]) - eps_u)
        assert torch.allclose(g(x, t), want, atol=1e-4), folder
    # t <= K: tuned guides drop out, pretrained ones stay, beside plain pretrained CFG
    gs = (f"{full_tune}:beikkpic:2", "pretrained:a dog:1.5")
    g = ed.guider("a cat", replace(ec, cfg=4.0, sine_K=400, guides=gs), HW).build()
    lo = torch.tensor(400)
    e_u, e_cat, e_dog = (_eps(pre, x, lo, e) for e in _conds(pre, ["", "a cat", "a dog"]))
    assert torch.allclose(g(x, lo), e_u + 4.0 * (e_cat - e_u) + 1.5 * (e_dog - e_u), atol=1e-4)
    after = ed.edit("a cat", ec, progress=False).latents
    assert torch.allclose(after, before, atol=1e-6)
    plain = replace(FAST, checkpoint=2)
    fresh = Editor(ed.folder.path, "cpu").edit("a cat", plain, progress=False).latents
    assert torch.allclose(ed.edit("a cat", plain, progress=False).latents, fresh, atol=1e-6)


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
