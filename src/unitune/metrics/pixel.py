"""Pixel metrics on (B, C, H, W) tensors: per-image MSE (optionally masked) and PSNR.

Masked formula: with a mask ``M`` of shape (B, 1, H, W) (or (B, C, H, W)) in {0, 1}, broadcast
over channels, ``mse = sum(M * (x - y)^2) / (C_eff * sum_hw(M))``, i.e. the mean squared error
over the masked pixels and all channels. An empty mask gives NaN for that image.
``psnr = 10 * log10(peak^2 / mse)``; identical images (mse == 0) give ``inf``.
"""

from __future__ import annotations

import torch


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got shape {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")


def _mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if (
        mask.ndim != 4
        or mask.shape[0] not in (1, b)
        or mask.shape[1] not in (1, c)
        or tuple(mask.shape[-2:]) != (h, w)
    ):
        raise ValueError(
            f"mask must be (B, 1, {h}, {w}) or (B, {c}, {h}, {w}); got {tuple(mask.shape)}"
        )
    return mask.to(device=x.device, dtype=torch.float64).expand(b, c, h, w)


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) mean squared error per image, over the pixels where ``mask`` is 1 (all if None).
    Computed in float64."""
    _check(x, y)
    se = (x.double() - y.double()) ** 2
    if mask is None:
        return se.mean(dim=(1, 2, 3))
    m = _mask(mask, x)
    return (se * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))


def psnr(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, peak: float = 1.0
) -> torch.Tensor:
    """(B,) PSNR in dB (float64): ``10 log10(peak^2 / mse)``, ``inf`` where the (masked) images
    are identical. ``peak`` is the maximum pixel value (1.0 for [0, 1] images, 255 for uint8)."""
    mse = masked_mse(x, y, mask)
    return 10.0 * torch.log10(torch.as_tensor(float(peak) ** 2, dtype=mse.dtype) / mse)
