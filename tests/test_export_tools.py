"""What travels with an export: the model card (huggingface_hub's own reader reads it back), the
upload (--push-to-hub through huggingface_hub's real client and HTTP, against a local stand-in
of the hub), the merged file's dtype and weights (one tensor at a time, equal to PEFT's merge),
and no local path in anything written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from unitune.config import ExportConfig, TuneConfig
from unitune.export import LORA_FILE, export
from unitune.tune import tune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_tune(tiny_model, photo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tools") / "cat-tune"
    cfg = TuneConfig(steps=2, save_at=(2,), method="lora", lr=1e-2, lora_rank=4, resolution=32)
    tune(photo, path, cfg, model=tiny_model, device="cpu", progress=False)
    return path


def test_model_card_reads_back_and_says_how_to_load(lora_tune, tmp_path):
    from huggingface_hub import ModelCard

    res = export(lora_tune, "diffusers-lora", tmp_path / "x", cfg=ExportConfig(samples=("a dog",)))
    card = ModelCard.load(res.path / "README.md")
    d = card.data.to_dict()
    assert d["instance_prompt"] == "beikkpic" and d["library_name"] == "diffusers"
    assert {"lora", "unitune", "text-to-image"} <= set(d["tags"])
    (w,) = d["widget"]
    assert w["text"] == "beikkpic a dog" and (res.path / w["output"]["url"]).is_file()
    for words in ("load_lora_weights", "ComfyUI", "A1111", "beikkpic"):
        assert words in card.text, words
    assert "base_model" not in d  # a local model (a folder name) is no hub repo: left out
    from unitune.export.card import _hub_id

    assert _hub_id("stable-diffusion-v1-5/stable-diffusion-v1-5") and not _hub_id("sd15-fp16")


def test_no_local_path_in_any_export(lora_tune, tmp_path):
    private = [str(tmp_path.parent), str(lora_tune.parent), str(Path.home())]
    for fmt, out in (
        ("kohya-lora", tmp_path / "k.safetensors"),
        ("diffusers-lora", tmp_path / "d"),
        ("merged", tmp_path / "m.safetensors"),
    ):
        res = export(lora_tune, fmt, out, cfg=ExportConfig(card=True))
        for f in res.files:
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as sf:
                    text = json.dumps(sf.metadata())
            elif f.suffix in (".md", ".json"):
                text = f.read_text()
            else:
                continue
            for p in private:
                assert p not in text, (fmt, f.name, p)
        (tmp_path / "README.md").unlink(missing_ok=True)  # the next file export's card


def test_merged_file_dtype_and_weights(lora_tune, tmp_path):
    """--dtype fp16 writes fp16; auto keeps the base's (the tiny model is stored fp32); the
    streamed, in-place merge equals PEFT's own merge (State.merged) of the same checkpoint."""
    from safetensors.torch import load_file

    from unitune.backbones import load_model
    from unitune.state import state_of
    from unitune.tunefolder import TuneFolder

    half = export(lora_tune, "merged", tmp_path / "h.safetensors", cfg=ExportConfig(dtype="fp16"))
    full = export(lora_tune, "merged", tmp_path / "f.safetensors")
    with safe_open(str(half.path), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
        assert f.metadata()["modelspec.unet_dtype"] == "float16"
    got = load_file(str(full.path))
    assert all(t.dtype == torch.float32 for t in got.values())
    folder = TuneFolder.open(lora_tune)
    bb = load_model(folder.manifest.model, "cpu")
    ref = bb.original_layout(state_of(bb).merged(folder, 2))
    assert set(ref) == set(got)
    worst = max(float((got[k] - ref[k].float()).abs().max()) for k in ref)
    assert worst < 1e-6, worst
    h = load_file(str(half.path))
    assert max(float((h[k].float() - ref[k].float()).abs().max()) for k in ref) < 2e-3


def test_push_to_hub_uploads_through_the_real_client(lora_tune, tmp_path):
    from hub_stub import Hub

    hub = Hub()
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "hf_test",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    out = tmp_path / "cat-lora"
    cmd = [
        sys.executable,
        "-m",
        "unitune.cli",
        "export",
        str(lora_tune),
        "--format",
        "diffusers-lora",
    ]
    cmd += ["--out", str(out), "--push-to-hub", "me/cat-lora", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == f"{hub.url}/me/cat-lora"
    assert hub.repos["me/cat-lora"]["visibility"] == "private"
    assert hub.cards and "beikkpic" in json.dumps(hub.cards)  # the card went through validation
    sent = {path for repo, path in hub.files if repo == "me/cat-lora"}
    assert {LORA_FILE, "README.md"} <= sent and any(p.startswith("images/") for p in sent)
    assert hub.files["me/cat-lora", LORA_FILE] == (out / LORA_FILE).read_bytes()
    # a file export pushed goes up with its card (a hub repo's page), written beside it
    file = tmp_path / "single" / "cat.safetensors"
    cmd = [sys.executable, "-m", "unitune.cli", "export", str(lora_tune), "--format", "kohya-lora"]
    cmd += ["--out", str(file), "--push-to-hub", "me/cat-file", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sent = {path for repo, path in hub.files if repo == "me/cat-file"}
    assert {"cat.safetensors", "README.md"} <= sent, sent


@pytest.mark.parametrize("fmt", ["kohya-lora", "diffusers-lora"])
def test_lycoris_loads_and_merges_the_lora_as_unitune_does(
    fmt, lora_tune, tiny_model, tmp_path, monkeypatch
):
    """LyCORIS' own kohya loader (create_network_from_weights + merge_to, what sd-scripts'
    tools run) on a diffusers UNet: every layer of the file finds its module and the merged
    weights equal unitune's merged export."""
    import diffusers
    from lycoris.kohya import LycorisNetworkKohya, create_network_from_weights
    from safetensors.torch import load_file

    # the loader first builds LyCORIS' default training network, whose by-name targets
    # (time_embedding.linear_1, ...) collide with its by-class ones on a diffusers UNet ("duplicated
    # lora name"); it then replaces those modules with the file's, so the default targets do not
    # matter: none by name
    monkeypatch.setattr(LycorisNetworkKohya, "UNET_TARGET_REPLACE_NAME", [])

    out = tmp_path / ("k.safetensors" if fmt == "kohya-lora" else "d")
    path = export(lora_tune, fmt, out).path
    file = path if path.is_file() else path / LORA_FILE
    sd = load_file(str(file))
    layers = {k.split(".")[0] for k in sd}
    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    network, weights = create_network_from_weights(1.0, str(file), None, None, unet, weights_sd=sd)
    assert len(network.unet_loras) == len(layers)
    network.merge_to(None, unet, weights, torch.float32, "cpu")
    merged = export(lora_tune, "merged", tmp_path / "m").path
    ref = diffusers.UNet2DConditionModel.from_pretrained(merged, subfolder="unet").state_dict()
    got = unet.state_dict()
    worst = max(float((got[k] - ref[k]).abs().max()) for k in ref)
    assert worst < 1e-5, worst
