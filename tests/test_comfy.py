"""unitune's ComfyUI node pack, called the way ComfyUI's executor calls nodes (its code does not
install offline; this follows comfy's execution.py / nodes.py): the pack's NODE_CLASS_MAPPINGS
from the repository root's __init__.py; every widget checked against INPUT_TYPES (required
present, INT / FLOAT within min / max, a COMBO value in its list, link types equal); the class
instantiated and FUNCTION called with the inputs as keywords; the outputs a tuple as long as
RETURN_TYPES, IMAGE float32 (B, H, W, 3) in [0, 1], MASK float32 (B, H, W). The API-format
workflow in docs/comfyui_workflow.json runs end to end on a tiny model, LoadImage / SaveImage /
MaskToImage played by stand-ins with ComfyUI's own semantics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _pack():
    spec = importlib.util.spec_from_file_location("unitune_pack", ROOT / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class LoadImage:  # ComfyUI's: (1, H, W, 3) float in [0, 1] and the inverted alpha as MASK
    RETURN_TYPES, FUNCTION = ("IMAGE", "MASK"), "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("STRING", {})}}

    def load_image(self, image):
        arr = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr)[None], torch.zeros(1, *arr.shape[:2])


class MaskToImage:
    RETURN_TYPES, FUNCTION = ("IMAGE",), "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        return (mask.reshape(-1, 1, *mask.shape[-2:]).movedim(1, -1).expand(-1, -1, -1, 3),)


class SaveImage:
    RETURN_TYPES, FUNCTION, OUTPUT_NODE = (), "save_images", True
    saved: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}

    def save_images(self, images, filename_prefix):
        SaveImage.saved.append((filename_prefix, images))
        return {
            "ui": {
                "images": [{"filename": f"{filename_prefix}_{i}.png"} for i in range(len(images))]
            }
        }


def _check_output(kind: str, value) -> None:
    if kind == "IMAGE":
        assert value.dtype == torch.float32 and value.ndim == 4 and value.shape[-1] == 3
        assert 0.0 <= float(value.min()) and float(value.max()) <= 1.0
    elif kind == "MASK":
        assert value.dtype == torch.float32 and value.ndim == 3
        assert 0.0 <= float(value.min()) and float(value.max()) <= 1.0
    elif kind == "UNITUNE_TUNE":
        assert isinstance(value, str) and Path(value).is_dir()


def _validate(cls, inputs: dict, linked: dict[str, str]) -> dict:
    """ComfyUI's validate_inputs for one node: the kwargs its FUNCTION gets."""
    spec = cls.INPUT_TYPES()
    allowed = {**spec.get("required", {}), **spec.get("optional", {})}
    for name in spec.get("required", {}):
        assert name in inputs, f"{cls.__name__}: required input {name!r} missing"
    out = {}
    for name, value in inputs.items():
        assert name in allowed, f"{cls.__name__}: unknown input {name!r}"
        kind, opts = allowed[name][0], (allowed[name][1] if len(allowed[name]) > 1 else {})
        if name in linked:
            assert linked[name] == kind, (cls.__name__, name, linked[name], kind)
        elif isinstance(kind, list):
            assert value in kind, (cls.__name__, name, value)
        elif kind in ("INT", "FLOAT"):
            value = int(value) if kind == "INT" else float(value)
            assert opts.get("min", -np.inf) <= value <= opts.get("max", np.inf), (name, value)
        elif kind == "BOOLEAN":
            value = bool(value)
        elif kind == "STRING":
            value = str(value)
        out[name] = value
    return out


def run_prompt(prompt: dict, classes: dict) -> dict:
    """Execute an API-format prompt: links [node_id, output_index] resolved, nodes in dependency
    order, each output checked against RETURN_TYPES."""
    results: dict[str, tuple] = {}

    def run(nid: str):
        if nid in results:
            return results[nid]
        node = prompt[nid]
        cls = classes[node["class_type"]]
        values, linked = {}, {}
        for name, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                up = prompt[v[0]]["class_type"]
                linked[name] = classes[up].RETURN_TYPES[v[1]]
                values[name] = run(v[0])[v[1]]
            else:
                values[name] = v
        got = getattr(cls(), cls.FUNCTION)(**_validate(cls, values, linked))
        if isinstance(got, dict):
            assert set(got) <= {"ui", "result"} and all(
                isinstance(x, list) for x in got["ui"].values()
            )
            got = got.get("result", ())
        assert isinstance(got, tuple) and len(got) == len(cls.RETURN_TYPES), (nid, got)
        for kind, value in zip(cls.RETURN_TYPES, got):
            _check_output(kind, value)
        results[nid] = got
        return got

    outputs = [
        n
        for n, node in prompt.items()
        if getattr(classes[node["class_type"]], "OUTPUT_NODE", False)
    ]
    assert outputs, "ComfyUI refuses a prompt with no output node"
    for nid in outputs:
        run(nid)
    return results


def test_pack_declares_its_nodes_as_comfyui_reads_them():
    pack = _pack()
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}, name
        assert callable(getattr(cls, cls.FUNCTION)) and isinstance(cls.RETURN_TYPES, tuple)
        for inp in [*spec["required"].values(), *spec.get("optional", {}).values()]:
            assert isinstance(inp, tuple) and isinstance(inp[0], (str, list)), (name, inp)
    import tomllib

    comfy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_the_docs_workflow_runs_on_a_tiny_model(tiny_model, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pack = _pack()
    classes = {**pack.NODE_CLASS_MAPPINGS, "LoadImage": LoadImage, "SaveImage": SaveImage}
    classes["MaskToImage"] = MaskToImage
    prompt = json.loads((ROOT / "docs" / "comfyui_workflow.json").read_text())
    prompt["1"]["inputs"]["image"] = photo
    prompt["2"]["inputs"].update(model=tiny_model, steps=2, resolution=32, device="cpu")
    prompt["3"]["inputs"].update(
        steps=2, batch=2, device="cpu", auto_mask=True, auto_mask_rule="otsu"
    )
    prompt["7"]["inputs"].update(steps=2, checkpoints="0,2", t0s="0.9,1", device="cpu")
    SaveImage.saved.clear()
    results = run_prompt(prompt, classes)
    saved = dict(SaveImage.saved)
    edit, mask, grid = saved["unitune-edit"], saved["unitune-mask"], saved["unitune-grid"]
    assert edit.shape == (2, 32, 32, 3) and mask.shape == (2, 32, 32, 3) and grid.shape[0] == 1
    m = results["3"][1]
    assert 0.0 < float(m.mean()) < 1.0  # the automatic mask: part of the picture may change
    tune = Path(results["2"][0])
    assert (tune / "manifest.json").is_file()
    # a user MASK bounds the edit: outside it the edit is the photo's own pixels (interpolation
    # off so only the mask acts), and Load Tune gives the same tune back
    (loaded,) = classes["UnituneLoadTune"]().load(str(tune))
    assert Path(loaded) == tune
    half = torch.zeros(1, 32, 32)
    half[:, :, 16:] = 1.0
    img, used = classes["UnituneEdit"]().edit(
        loaded, "a dog", -1, 1.0, 7.5, 2, 0, "noise", False, False, mask=half, device="cpu"
    )
    assert torch.equal(used[0], half[0])
    base = np.asarray(Image.open(tune / "base.png").convert("RGB"), dtype=np.float32) / 255.0
    left = np.abs(img[0, :, :12].numpy() - base[:, :12]).max()
    right = np.abs(img[0, :, 20:].numpy() - base[:, 20:]).max()
    assert left < 0.02 < right, (left, right)
    # the global / local route through the node: the branch the map chose ran (a local edit
    # returns its automatic mask, a global one all ones)
    img, used = classes["UnituneEdit"]().edit(
        loaded, "a dog", -1, 1.0, 7.5, 2, 0, "noise", False, False, route="auto", device="cpu"
    )
    assert img.shape == (1, 32, 32, 3) and used.shape == (1, 32, 32)
