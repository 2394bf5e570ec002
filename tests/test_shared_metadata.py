"""What an edit's PNG tells whoever it is shared with: names, never the machine's paths; fields
A1111's readers (sd-parsers, the reader civitai-style tools use) get back whole; --no-metadata
writes none; the sidecar, which stays local, keeps what --params reproduces from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cli_run import run
from unitune.editplan import a1111_params
from unitune.pngmeta import format_parameters, read_sidecar
from unitune.public import public_name, public_params


def test_public_name_keeps_hub_ids_and_strips_paths(tmp_path):
    (tmp_path / "models" / "sd15").mkdir(parents=True)
    assert public_name("stabilityai/stable-diffusion-xl-base-1.0").startswith("stabilityai/")
    assert public_name(str(tmp_path / "models" / "sd15")) == "sd15"
    assert public_name(str(tmp_path / "models" / "sd15") + "/") == "sd15"
    assert public_name("/home/me/ckpt/v1-5-pruned.safetensors") == "v1-5-pruned.safetensors"
    assert public_name("./tunes/cat") == "cat" and public_name("~/tunes/cat") == "cat"
    assert public_name("C:\\Users\\me\\models\\sd15") == "sd15"
    assert public_name("embedded") == "embedded" and public_name(None) is None


def test_public_params_names_every_path(tmp_path):
    guide = tmp_path / "style"
    guide.mkdir()
    p = {
        "model": str(tmp_path / "m"),
        "tune": str(tmp_path / "t"),
        "mask": str(tmp_path / "mask.png"),
        "edit_config": {"guides": [f"{guide}@4:a painting, oil: thick:2.5"], "upscaler": None},
    }
    out = public_params(p)
    assert str(tmp_path) not in json.dumps(out), out
    assert out["edit_config"]["guides"] == ["style@4:a painting, oil: thick:2.5"]
    assert p["tune"] == str(tmp_path / "t")  # the caller's dict is not changed


def test_a1111_values_hold_no_separator():
    text = format_parameters(
        {"prompt": "a, b", "Steps": 4, "Prompt guidance": "a cat, sitting: calm", "x": "1\n2"}
    )
    line = text.splitlines()[-1]
    assert line == "Steps: 4, Prompt guidance: a cat; sitting; calm, x: 1 2", line
    assert text.splitlines()[0] == "a, b"  # the prompt line is A1111's own: kept as written


def test_shared_png_says_no_path_and_sd_parsers_reads_every_field(tuned, tmp_path, capsys):
    from sd_parsers import ParserManager

    out, mask = tmp_path, tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(mask)
    code, printed, err = run(
        capsys,
        "edit",
        tuned,
        "a cat, wearing sunglasses",
        "--checkpoint",
        2,
        "--steps",
        2,
        "--mask",
        mask,
        "--prompt-guidance",
        "a photo, of a cat",
        "--out",
        out / "e",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err
    png = Path(printed.split()[0])
    chunks = Image.open(png).text
    private = [str(out), str(Path(tuned).resolve()), str(Path(tuned).parent)]
    sidecar = read_sidecar(png)
    model = sidecar["model"]
    for key, value in chunks.items():
        for p in private + [str(Path(model).parent)]:
            assert p not in value, (key, p)
    assert sidecar["tune"] == str(tuned) and sidecar["mask"] == str(mask)  # local: whole
    info = ParserManager().parse(png)
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    assert sampler.name == "DDIM" and sampler.model.name == Path(model).name
    assert sampler.prompts[0].value == "beikkpic a cat, wearing sunglasses"
    shared = public_params(sidecar)
    expected = {k: str(v) for k, v in a1111_params(shared).items() if v is not None}
    got = {**sampler.parameters, **info.metadata}
    renamed = {"cfg_scale": "CFG scale", "seed": "Seed", "steps": "Steps"}
    got = {renamed.get(k, k): str(v) for k, v in got.items()}
    for key in ("CFG scale", "Seed", "Steps", "Batch seeds", "Size", "Tune", "Checkpoint", "t0"):
        assert got[key] == expected[key], key
    # every field the line holds comes back whole (none cut at a comma or dropped at a colon)
    for key in ("Prompt guidance", "Mask", "Interpolate window", "Interpolate threshold"):
        assert got[key] == expected[key].replace(",", ";"), (key, got.get(key))
    assert got["Tune"] == Path(tuned).name and got["Mask"] == "mask.png"


def test_the_png_alone_reproduces_its_edit(tuned, tmp_path, capsys):
    """A shared PNG without its sidecar: its `unitune` chunk (names only) is enough for
    --params given the tune."""
    args = ["--checkpoint", 2, "--steps", 2, "--seeds", "0,1", "--device", "cpu", "--quiet"]
    code, printed, err = run(capsys, "edit", tuned, "a dog", *args, "--out", tmp_path / "a")
    assert code == 0, err
    png = Path(printed.split()[1])
    alone = tmp_path / "shared" / "alone.png"
    alone.parent.mkdir()
    alone.write_bytes(png.read_bytes())
    _assert_reproduces(capsys, tuned, alone, png, tmp_path / "b")


def test_no_metadata_writes_a_bare_png_and_keeps_the_sidecar(tuned, tmp_path, capsys):
    args = ["edit", tuned, "a dog", "--checkpoint", 2, "--steps", 2, "--device", "cpu"]
    code, printed, err = run(capsys, *args, "--out", tmp_path / "a", "--no-metadata", "--quiet")
    assert code == 0, err
    png = Path(printed.split()[0])
    assert Image.open(png).text == {}
    assert read_sidecar(png)["edit_prompt"] == "a dog"
    _assert_reproduces(capsys, tuned, png, png, tmp_path / "b")


def _assert_reproduces(capsys, tuned, params: Path, png: Path, out: Path) -> None:
    """``edit --params PARAMS`` gives ``png`` back bit for bit."""
    code, printed, err = run(
        capsys, "edit", tuned, "--params", params, "--out", out, "--device", "cpu", "--quiet"
    )
    assert code == 0, err
    again = Path(printed.split()[0])
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(again)))
