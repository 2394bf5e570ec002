"""Fidelity of edited images to the image they edit: LPIPS and PSNR over a keep mask (the
pixels the edit should not touch), on the saved 8-bit pixels. The benchmark and the demo score
with it."""

from __future__ import annotations

import numpy as np
import torch

from .pixel import psnr

PSNR_CAP = 99.0  # dB; identical pixels (infinite PSNR) are recorded as this


def image_tensor(img) -> torch.Tensor:
    """PIL image -> (3, H, W) float in [0, 1], exactly the saved 8-bit pixels."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(
        2, 0, 1
    )


def distances(images, base: torch.Tensor, lp, mask: torch.Tensor | None = None):
    """(LPIPS (N,), PSNR (N,)) of PIL images to the base (3, H, W) in [0, 1], over ``mask``
    (1, 1, H, W), 1 = measured, if given; ``lp`` is an LPIPS module (metrics.get_lpips)."""
    x = torch.stack([image_tensor(im) for im in images])
    y = base[None].expand_as(x)
    dev = next(lp.parameters()).device
    with torch.no_grad():
        lpips = lp(x.to(dev), y.to(dev), None if mask is None else mask.to(dev)).cpu()
    return lpips, psnr(x, y, mask) if mask is not None else psnr(x, y)
