"""Image metrics: LPIPS (published AlexNet/VGG weights, no torchvision), PSNR / masked MSE, and
CLIP score (only with locally available CLIP weights). See docs/METRICS.md."""

from .clip_score import clip_score
from .lpips import LPIPS, get_lpips, lpips_cache_dir
from .pixel import masked_mse, psnr

__all__ = ["LPIPS", "clip_score", "get_lpips", "lpips_cache_dir", "masked_mse", "psnr"]
