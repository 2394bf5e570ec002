"""`unitune export` on tiny seeded models of every family: each format loads in diffusers' own
pipelines (and loaders) and samples what `unitune edit` samples."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from unitune.cli import main
from unitune.config import EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.export import LORA_FILE, export
from unitune.tune import tune

# every test here loads or tunes a tiny model end to end: out of the fast subset, still in CI
pytestmark = pytest.mark.slow

PIPES = {
    "sd1": "StableDiffusionPipeline",
    "sd2v": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "zimage": "ZImagePipeline",
    "qwenimage": "QwenImagePipeline",
    "flux2klein": "Flux2KleinPipeline",
    "flux2": "Flux2Pipeline",
}
# their pipelines keep their own (flow) scheduler
FLOW = ("sd3", "flux", "zimage", "qwenimage", "flux2klein", "flux2")
EC = EditConfig(checkpoint=2, t0=1.0, cfg=7.5, steps=6, seeds=(0, 1), interpolate=False)
PROMPT = "a cat"


class _Tunes(dict):
    """(family, method) -> its tune folder, made on first use (only the ones the tests run)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = self.make(*key)
        return self[key]


@pytest.fixture(scope="module")
def tunes(tiny_models, photo, tmp_path_factory) -> dict:
    """(family, method) -> a 2-step tune folder, lr high enough that the tune shows."""

    def make(fam: str, method: str):
        lr = {"lora": 1e-2, "lora-conv": 1e-2, "full": 1e-3}[method]
        path = tmp_path_factory.mktemp("exp") / f"{fam}-{method}"
        conv = method == "lora-conv"  # a LoRA tune with --lora-conv
        cfg = TuneConfig(
            steps=2,
            save_at=(1, 2),
            method="lora" if conv else method,
            lora_conv=conv,
            lr=lr,
            lora_rank=4,
            resolution=32,
        )
        tune(photo, path, cfg, model=tiny_models[fam], device="cpu", progress=False)
        return path

    return _Tunes(make)


def _pipe(family: str, source: str):
    import diffusers

    cls = getattr(diffusers, PIPES[family])
    sd = family in ("sd1", "sd2v")
    extra = {"safety_checker": None, "requires_safety_checker": False} if sd else {}
    pipe = cls.from_pretrained(source, **extra)
    if family not in FLOW:
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, ed: Editor) -> np.ndarray:
    """The pipeline's text-to-image at EC's settings, with unitune's SDXL time ids."""
    hw = ed.folder.manifest.resolution
    kw = dict(
        prompt=[f"beikkpic {PROMPT}"] * 2,
        guidance_scale=EC.cfg,
        num_inference_steps=EC.steps,
        generator=[torch.Generator("cpu").manual_seed(s) for s in EC.seeds],
        output_type="np",
        height=hw[0],
        width=hw[1],
    )
    if "Qwen" in type(pipe).__name__:  # its CFG: true_cfg_scale, on with a negative prompt
        kw |= dict(true_cfg_scale=kw.pop("guidance_scale"), negative_prompt=[""] * 2)
    if "XL" in type(pipe).__name__:
        g = ed.placement.geometry(hw)
        kw |= dict(original_size=g.original, crops_coords_top_left=g.crop, target_size=g.target)
    return pipe(**kw).images


def _ours(ed: Editor) -> np.ndarray:
    return ed.edit(PROMPT, EC, progress=False).pixels.permute(0, 2, 3, 1).cpu().numpy()


ARCH = {
    "sd1": "stable-diffusion-v1/lora",
    "sd2v": "stable-diffusion-v1/lora",  # SD 1.x's layout and CLIP, v-prediction (below)
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "sd3": "stable-diffusion-3/lora",
    "flux": "flux-1-dev/lora",
    "zimage": "Z-Image/lora",
    "qwenimage": "Qwen-Image/lora",
    "flux2klein": "Flux.2-klein-4b/lora",
    "flux2": "Flux.2-dev/lora",
}


@pytest.mark.parametrize("family", [*PIPES])
def test_diffusers_lora_loads_and_samples_the_same(family, tunes, tiny_models, tmp_path):
    """A folder as diffusers' training scripts leave one (pytorch_lora_weights.safetensors + a
    model card), keys in the layout the other tools read too: kohya's for SD / SDXL (diffusers
    converts it), diffusers' own transformer.* for SD3 / FLUX."""
    out = export(tunes[family, "lora"], "diffusers-lora", tmp_path / "l").path
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "images", LORA_FILE]
    with safe_open(str(out / LORA_FILE), framework="pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    if family in FLOW:
        assert json.loads(meta["lora_adapter_metadata"])["transformer.r"] == 4
        assert all(k.startswith("transformer.") for k in keys)
    else:
        assert all(KOHYA_KEY.match(k) for k in keys), keys[:3]
    assert json.loads(meta["unitune"])["checkpoint"] == 2
    assert meta["modelspec.architecture"] == ARCH[family]
    assert meta["modelspec.trigger_phrase"] == "beikkpic"
    assert meta["modelspec.resolution"] == "32x32"
    pred = {"sd1": "epsilon", "sd2v": "v", "sdxl": "epsilon"}.get(family)
    assert meta.get("modelspec.prediction_type") == pred
    pipe = _pipe(family, tiny_models[family])
    pipe.load_lora_weights(str(out))  # the folder: diffusers finds the file by its default name
    ed = Editor(tunes[family, "lora"], "cpu")
    assert np.abs(_sample(pipe, ed) - _ours(ed)).max() < 1e-4


KOHYA_KEY = re.compile(r"^lora_unet_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_lora_keys_and_diffusers_own_converter(family, tunes, tiny_models, tmp_path):
    path = export(tunes[family, "lora"], "kohya-lora", tmp_path / "k.safetensors").path
    sd = load_file(str(path))
    assert sd and all(KOHYA_KEY.match(k) for k in sd), [k for k in sd if not KOHYA_KEY.match(k)]
    downs = [k for k in sd if k.endswith("lora_down.weight")]
    assert all(float(sd[k.replace("lora_down.weight", "alpha")]) == 4.0 for k in downs)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert meta["ss_base_model_version"] == {"sd1": "sd_v1", "sdxl": "sdxl_base_v1-0"}[family]
    assert (
        "beikkpic" in json.loads(meta["ss_tag_frequency"])["unitune"]
        and "beikkpic" in meta["ss_training_comment"]
    )
    pipe = _pipe(family, tiny_models[family])
    pipe.load_lora_weights(str(path))  # diffusers converts kohya's keys itself
    ed = Editor(tunes[family, "lora"], "cpu")
    assert np.abs(_sample(pipe, ed) - _ours(ed)).max() < 1e-4


@pytest.mark.parametrize(
    ("family", "method"),
    [
        ("sd1", "full"),
        ("sd1", "lora"),
        ("sdxl", "full"),
        ("sd3", "lora"),
        ("flux", "full"),
        ("zimage", "lora"),
        ("zimage", "full"),
        ("qwenimage", "lora"),
        ("qwenimage", "full"),
        ("flux2klein", "lora"),
        ("flux2klein", "full"),
        ("flux2", "lora"),
    ],
)
def test_merged_folder_equals_the_tune(family, method, tunes, tmp_path):
    out = export(tunes[family, method], "merged", tmp_path / "merged").path
    ed = Editor(tunes[family, method], "cpu")
    assert np.abs(_sample(_pipe(family, str(out)), ed) - _ours(ed)).max() < 1e-4


@pytest.mark.parametrize(("family", "method"), [("sd1", "full"), ("sdxl", "lora")])
def test_merged_single_file_loads_with_from_single_file(
    family, method, tunes, tiny_models, tmp_path
):
    """The original (A1111) layout: diffusers' from_single_file (configs from the model's folder,
    as offline users pass them) reads every component back and samples what the tune does."""
    import diffusers

    out = export(tunes[family, method], "merged", tmp_path / "m.safetensors").path
    keys = set(load_file(str(out)))
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.decoder.up.") for k in keys)
    cls = getattr(diffusers, PIPES[family])
    extra = {"safety_checker": None, "requires_safety_checker": False} if family != "sdxl" else {}
    pipe = cls.from_single_file(str(out), config=tiny_models[family], **extra)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ed = Editor(tunes[family, method], "cpu")
    assert np.abs(_sample(pipe, ed) - _ours(ed)).max() < 1e-4


def test_lora_from_full_at_full_rank_is_the_full_tune(tunes, tiny_models, tmp_path):
    """At full rank every exported layer is its delta to float precision, and the LoRA samples
    exactly what the full tune with those weights' deltas (its bias and normalisation deltas
    left out) samples; their share is what the export's note reports."""
    from unitune.export.extract import extract_lora

    folder = tunes["sd1", "full"]
    delta, _ = Editor(folder, "cpu").folder.load_checkpoint(2)
    ex = extract_lora(delta, rank=10_000)
    assert ex.truncation_energy < 1e-6  # measured as ||W||^2 - ||S||^2: float32 rounding
    for key in ex.tensors:
        if key.endswith(".lora_A.weight"):
            m = key[: -len(".lora_A.weight")]
            a, b = ex.tensors[key], ex.tensors[m + ".lora_B.weight"]
            rebuilt = (b.flatten(1) @ a.flatten(1)).reshape(delta[m + ".weight"].shape)
            torch.testing.assert_close(rebuilt, delta[m + ".weight"].float(), atol=1e-6, rtol=1e-4)
    assert ex.dropped and all(delta[n].ndim == 1 for n in ex.dropped)
    path = export(folder, "lora-from-full", tmp_path / "f.safetensors", rank=10_000).path
    pipe = _pipe("sd1", tiny_models["sd1"])
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()  # every layer fuses: no LoRA bias, which bias-less projections refuse
    got = _sample(pipe, Editor(folder, "cpu"))
    ref = _pipe("sd1", tiny_models["sd1"])  # the pretrained model + the covered deltas by hand
    with torch.no_grad():
        for n, p in ref.unet.named_parameters():
            if n in delta and n not in ex.dropped:
                p.add_(delta[n].float())
    assert np.abs(got - _sample(ref, Editor(folder, "cpu"))).max() < 1e-4


def test_export_refuses_bad_input_in_one_line(tunes, tmp_path, capsys, photo, tiny_models):
    lora, full = tunes["sd1", "lora"], tunes["sd1", "full"]
    patch = tmp_path / "patch"
    tune(
        photo,
        patch,
        TuneConfig(steps=1, save_at=(1,), patches=True),
        model=tiny_models["sd1"],
        progress=False,
    )
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    capsys.readouterr()  # what loading the tiny models printed
    cases = [
        ([lora, "--format", "webui", "--out", tmp_path / "a.safetensors"], "--format"),
        (
            [
                lora,
                "--format",
                "diffusers-lora",
                "--checkpoint",
                7,
                "--out",
                tmp_path / "a.safetensors",
            ],
            "checkpoint 7",
        ),
        ([lora, "--format", "diffusers-lora", "--out", tmp_path / "taken.safetensors"], "exists"),
        ([full, "--format", "kohya-lora", "--out", tmp_path / "a.safetensors"], "--rank"),
        ([full, "--format", "lora-from-full", "--out", tmp_path / "a.safetensors"], "--rank"),
        (
            [lora, "--format", "lora-from-full", "--rank", 4, "--out", tmp_path / "a.safetensors"],
            "LoRA",
        ),
        ([lora, "--format", "kohya-lora", "--out", tmp_path / "a-folder"], ".safetensors"),
        ([lora, "--format", "merged", "--dtype", "fp8", "--out", tmp_path / "m2"], "--dtype"),
        (
            [lora, "--format", "diffusers-lora", "--push-to-hub", "a/b/c", "--out", tmp_path / "x"],
            "hub repo",
        ),
        ([lora, "--format", "diffusers-lora", "--sample", " ", "--out", tmp_path / "y"], "prompt"),
        ([patch, "--format", "merged", "--out", tmp_path / "m"], "patch tune"),
    ]
    for argv, word in cases:
        code = main(["export", *map(str, argv)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and word in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patch", "taken.safetensors"]


def test_sd2_single_file_is_refused_before_loading(tiny_models, photo, tmp_path, capsys):
    """SD 2.x (told by its OpenCLIP-style gelu text encoder) has no single file unitune writes;
    the refusal reads the config, not the weights."""
    import shutil

    model = tmp_path / "sd2"
    shutil.copytree(tiny_models["sd1"], model)
    cfg_path = model / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    tune(photo, tmp_path / "t", TuneConfig(steps=1, save_at=(1,)), model=str(model), progress=False)
    capsys.readouterr()
    code = main(
        [
            "export",
            str(tmp_path / "t"),
            "--format",
            "merged",
            "--out",
            str(tmp_path / "m.safetensors"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "SD 2.x" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.safetensors").exists()


# ComfyUI's LoRA key map for the transformer families, re-derived from its own tables
# (comfy/utils.py mmdit_to_diffusers / flux_to_diffusers / z_image_to_diffusers at
# Comfy-Org/ComfyUI 09708ea, comfy/lora.py model_lora_keys_unet at 17358c8): the diffusers
# module names a block's LoRA may sit on under ``transformer.``, each with the rows of ComfyUI's
# weight it patches (a slice of a fused weight, or None: the whole weight). Any other module is
# "lora key not loaded" there. FLUX.2 goes through FLUX's table (its model class is a Flux),
# whose single blocks also know FLUX.2's fused to_qkv_mlp_proj / to_out; Z-Image is ComfyUI's
# Lumina2, whose table slices diffusers' split to_q / to_k / to_v out of its fused qkv.
_QKV = ("to_q", "to_k", "to_v")
_SD3_FLUX_DOUBLE = (
    *(f"attn.{m}" for m in (*_QKV, "add_q_proj", "add_k_proj", "add_v_proj")),
    "attn.to_out.0",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
    "norm1.linear",
    "norm1_context.linear",
    "attn2.to_q",  # SD3.5's second attention (mmdit_to_diffusers)
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
)
_FLUX2_DOUBLE = ("ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out")
_FLUX_SINGLE = (*(f"attn.{m}" for m in _QKV), "proj_mlp", "proj_out", "norm.linear")
_FLUX2_SINGLE = ("attn.to_qkv_mlp_proj", "attn.to_out")
_ZIMAGE_BLOCK = (
    *(f"attention.{m}" for m in _QKV),
    "attention.to_out.0",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
    "adaLN_modulation.0",
)


def _comfy_block_modules(family: str) -> set[tuple[str, str]]:
    """{(block group, block module)} of the family's ComfyUI table."""
    if family == "zimage":
        groups = ("layers", "context_refiner", "noise_refiner")
        return {(g, m) for g in groups for m in _ZIMAGE_BLOCK}
    double = {("transformer_blocks", m) for m in (*_SD3_FLUX_DOUBLE, *_FLUX2_DOUBLE)}
    return double | {("single_transformer_blocks", m) for m in (*_FLUX_SINGLE, *_FLUX2_SINGLE)}


def _comfy_rows(family: str, module: str, config) -> int | None:
    """The rows of ComfyUI's fused weight that a LoRA on ``module`` patches: the width for each
    of a split q / k / v (ComfyUI slices at multiples of the width, so the heads must be
    full-width), None for a weight of its own."""
    if module.rsplit(".", 1)[-1] in (*_QKV, "add_q_proj", "add_k_proj", "add_v_proj"):
        if family == "zimage":
            return config.dim
        return config.num_attention_heads * config.attention_head_dim
    return None


# ComfyUI's LoRA suffixes (comfy/weight_adapter/lora.py): kohya's and PEFT's up / down, + alpha
COMFY_SUFFIXES = (
    ".lora_down.weight",
    ".lora_up.weight",
    ".alpha",
    ".lora_A.weight",
    ".lora_B.weight",
)


@pytest.mark.parametrize(
    ("family", "fmt"),
    [
        ("sd1", "diffusers-lora"),
        ("sdxl", "diffusers-lora"),
        ("sd1", "lora-from-full"),
        ("sd3", "diffusers-lora"),
        ("flux", "diffusers-lora"),
        ("qwenimage", "diffusers-lora"),
        ("flux2", "diffusers-lora"),
        ("flux2klein", "diffusers-lora"),
        ("zimage", "diffusers-lora"),
        ("flux2", "lora-conv"),
        ("zimage", "lora-conv"),
    ],
)
def test_lora_keys_are_ones_comfyui_maps(family, fmt, tunes, tiny_models, tmp_path):
    """Every key of the file has a place in ComfyUI's key map: SD / SDXL kohya's
    lora_unet_<diffusers module path> for a weight of the UNet (ComfyUI maps each through its
    diffusers -> LDM table); SD3 / FLUX.1 / FLUX.2 / Z-Image transformer.<group>.<i>.<module>
    with a module its table knows, and an up weight as tall as the slice of the fused weight it
    patches; Qwen-Image transformer.<module> (its QwenImage model has diffusers' module names,
    and its key map takes transformer.<name> as they are); alphas one-element. ``lora-conv`` is
    a LoRA tune with --lora-conv (the feed-forward too) exported as diffusers-lora."""
    import diffusers
    from safetensors.torch import load_file

    method = {"lora-from-full": "full", "lora-conv": "lora-conv"}.get(fmt, "lora")
    fmt = "diffusers-lora" if fmt == "lora-conv" else fmt
    out = export(tunes[family, method], fmt, tmp_path / "l", rank=4 if method == "full" else None)
    sd = load_file(str(out.path / LORA_FILE))
    net_name = "transformer" if family in FLOW else "unet"
    net = (
        getattr(diffusers, PIPES[family]).from_pretrained(tiny_models[family]).components[net_name]
    )
    weights = {k[: -len(".weight")] for k in net.state_dict() if k.endswith(".weight")}
    blocks = _comfy_block_modules(family) if family in FLOW else set()
    seen = set()
    for key, t in sd.items():
        suffix = next((s for s in COMFY_SUFFIXES if key.endswith(s)), None)
        assert suffix is not None, key
        base = key[: -len(suffix)]
        if suffix == ".alpha":
            assert t.numel() == 1, key
        if family not in FLOW:
            assert base in {"lora_unet_" + w.replace(".", "_") for w in weights}, key
            continue
        module = base.removeprefix("transformer.")
        assert base.startswith("transformer.") and module in weights, key
        if family == "qwenimage":
            continue
        m = re.fullmatch(r"([a-z_]+)\.(\d+)\.(.+)", module)
        assert m is not None and (m[1], m[3]) in blocks, key
        seen.add(m[3])
        rows = _comfy_rows(family, m[3], net.config)
        if rows is not None and suffix in (".lora_B.weight", ".lora_up.weight"):
            assert t.shape[0] == rows, key
    if method == "lora-conv":  # the feed-forward LoRAs are there, and have their places
        assert seen & set(_FLUX2_DOUBLE + _ZIMAGE_BLOCK[4:7]), sorted(seen)
