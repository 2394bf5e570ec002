"""Image input, placement/paste-back, masks, interpolation math and PNG metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unitune.errors import UserError
from unitune.images import fit_image, load_image, load_mask, paste_back, pil_to_tensor
from unitune.interpolate import agreement_map, interpolate
from unitune.pngmeta import format_parameters, parse_parameters, read_sidecar, save_png


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_alpha_flattens_onto_white_and_modes_convert(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)
    i16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert i16.mode.startswith("I;16")
    i16.save(tmp_path / "i16.png")
    assert load_image(tmp_path / "i16.png").getpixel((0, 0)) == (255, 255, 255)
    for mode in ("P", "L", "CMYK"):
        Image.new("RGB", (8, 8), "blue").convert(mode).save(tmp_path / f"{mode}.tif")
        im = load_image(tmp_path / f"{mode}.tif")
        assert im.mode == "RGB" and im.size == (8, 8)


def test_decompression_bomb_refused(tmp_path):
    Image.new("L", (7000, 6000)).save(tmp_path / "big.png")  # 42 MP, tiny file
    with pytest.raises(UserError, match="megapixels"):
        load_image(tmp_path / "big.png")


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_fit_and_paste_back_round_trip(mode):
    rng = np.random.default_rng(0)
    orig = Image.fromarray(rng.integers(0, 255, (60, 100, 3), np.uint8))
    fitted, p = fit_image(orig, (32, 32), mode)
    assert fitted.size == (32, 32)
    if mode == "crop":
        assert p.box == (20, 0, 80, 60)
    else:
        assert p.box == (0, -20, 100, 80)
    back = paste_back(fitted, p, orig)
    assert back.size == orig.size
    # outside the crop box the original is untouched
    if mode == "crop":
        a, b = np.asarray(orig), np.asarray(back)
        assert np.array_equal(a[:, :20], b[:, :20]) and np.array_equal(a[:, 80:], b[:, 80:])


def test_mask_on_original_or_model_size(tmp_path):
    orig = Image.new("RGB", (100, 60))
    _, p = fit_image(orig, (32, 32), "crop")
    m = Image.new("L", (100, 60), 0)
    m.paste(255, (50, 0, 100, 60))  # right half may change
    m.save(tmp_path / "m.png")
    t = load_mask(tmp_path / "m.png", (32, 32), p)
    assert t.shape == (1, 32, 32)
    assert t[0, :, :14].max() == 0 and t[0, :, 18:].min() == 1
    Image.new("L", (33, 32)).save(tmp_path / "bad.png")
    with pytest.raises(UserError, match="33x32"):
        load_mask(tmp_path / "bad.png", (32, 32), p)


def test_tensor_conversion_range():
    t = pil_to_tensor(Image.new("RGB", (4, 2), (255, 0, 255)))
    assert t.shape == (1, 3, 2, 4) and t.max() == 1 and t.min() == -1


def test_interpolation_formula_on_hand_built_tensors():
    orig = torch.zeros(1, 3, 9, 9)
    out = torch.zeros(1, 3, 9, 9)
    out[..., :, 6:] = 1.0  # edited stripe on the right
    out[..., 0, 0] = 0.05  # tiny noise far from the edit
    alpha = agreement_map(out, orig, window=3, threshold=0.1)
    assert alpha.shape == (1, 1, 9, 9)
    assert alpha[0, 0, 4, 0] == 1.0  # agreeing neighbourhood -> original
    assert alpha[0, 0, 4, 8] == 0.0  # the edit survives
    res = interpolate(out, orig, window=3, threshold=0.1)
    assert torch.equal(res[..., :, 8], out[..., :, 8])
    assert res[0, 0, 4, 1] == 0.0
    # the noisy corner: d = 0.05/9 per window -> alpha = 1 - d/0.1, pulled most of the way back
    d = (0.05 * 4) / 9
    assert torch.isclose(res[0, 0, 0, 0], torch.tensor(0.05 * (d / 0.1)), atol=1e-6)


def test_a1111_parameters_round_trip(tmp_path):
    params = {
        "prompt": "beikkpic a cat, wearing sunglasses",
        "negative_prompt": "blurry",
        "Steps": 50,
        "Sampler": "ddim",
        "CFG scale": 7.5,
        "Seed": 3,
        "Tune": "tunes/a: b",
    }
    text = format_parameters(params)
    assert text.splitlines()[1] == "Negative prompt: blurry"
    back = parse_parameters(text)
    assert (
        back["prompt"] == params["prompt"] and back["Tune"] == "tunes/a; b"
    )  # no colon: readers split there
    assert back["CFG scale"] == "7.5" and back["Seed"] == "3"
    path = save_png(
        Image.new("RGB", (4, 4)),
        tmp_path / "x.png",
        {"edit_prompt": "a", "k": [1]},
        text_params=params,
    )
    assert Image.open(path).text["parameters"] == text
    assert read_sidecar(path) == {"edit_prompt": "a", "k": [1]}
    assert not list(tmp_path.glob(".*tmp"))
