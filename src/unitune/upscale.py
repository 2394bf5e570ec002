"""Stage III: an optional last pass of an edit through diffusers' x4 upscaler
(``StableDiffusionUpscalePipeline``; DeepFloyd IF's third stage is
``stabilityai/stable-diffusion-x4-upscaler``). Not tuned: UniTune tunes the cascade's first two
stages, and the upscaler only adds resolution. It gets the edit prompt without the rare token
(its text encoder never saw it) and the negative prompt; per sample, the edit's own generator
continues (the pipeline draws the noise added to its input, then its latents).
"""

from __future__ import annotations

import torch
from PIL import Image

from .backbones import ModelSpec, pipeline_class
from .errors import UserError

PIPELINE = "StableDiffusionUpscalePipeline"


def check_upscaler(ref: str) -> str:
    """``--upscaler``: a StableDiffusionUpscalePipeline folder or hub id (no weights read)."""
    ref, cls = pipeline_class(ref, "--upscaler")
    if cls != PIPELINE:
        raise UserError(
            f"--upscaler {ref!r} is a {cls}, not an x4 upscaler ({PIPELINE})",
            "pass e.g. stabilityai/stable-diffusion-x4-upscaler",
        )
    return ref


class X4Upscaler:
    """The x4 upscaler, loaded once (fp32 on the CPU, the backbone's dtype elsewhere)."""

    def __init__(self, ref: str, device: torch.device, dtype: torch.dtype) -> None:
        import diffusers

        from .backbones.sd import load_pipeline

        spec = ModelSpec(check_upscaler(ref), None)  # type: ignore[arg-type]
        self.pipe = load_pipeline(getattr(diffusers, PIPELINE), spec, dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def __call__(
        self,
        images: list[Image.Image],
        prompt: str,
        negative: str,
        gens: list[torch.Generator],
        steps: int,
        noise_level: int,
    ) -> torch.Tensor:
        """(B, 3, 4H, 4W) in [0, 1] from B images; the pipeline's guidance (9.0)."""
        n = len(images)
        out = self.pipe(
            prompt=[prompt] * n,
            image=images,
            negative_prompt=[negative] * n,
            num_inference_steps=steps,
            noise_level=noise_level,
            generator=gens,
            output_type="pt",
        )
        return out.images.float().cpu()


def __getattr__(name: str):
    if name == "Upscaler4x":  # the old name of X4Upscaler
        import warnings

        warnings.warn("upscale.Upscaler4x is upscale.X4Upscaler", DeprecationWarning, stacklevel=2)
        return X4Upscaler
    raise AttributeError(name)
