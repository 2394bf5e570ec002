"""A pixel cascade's second stage at edit time (UniTune §3.2: Imagen's 64 -> 256 model is tuned
too): the base stage's samples upscaled by the cascade tune's super-resolution checkpoint.

The SR stage is a tune folder of its own inside the base stage's (``tunefolder.SR_DIR``), tuned
in the same run on the same prompt (tune.py). Sampling follows IF's super-resolution pipelines:
the base stage's output (B, 3, h, w), upscaled bilinearly and noise-augmented to
``sr_noise_level``, is the SR model's extra input; plain CFG on the edit prompt against the
negative one, both encoded by the base stage's T5 (IF's stages share it); an SDEdit start
``sr_t0`` from the base image at the output size (IFImg2ImgSuperResolutionPipeline's
``strength``), 1 = pure noise (IFSuperResolutionPipeline); an in-painting mask at the output size.
Per sample, one generator draws the start noise, then the augmentation noise, then the step noise,
in the pipelines' order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from .backbones import load_model
from .backbones.base import Backbone
from .checks import tune_model_ref
from .config import Acceleration, EditConfig
from .editplan import SRPlan
from .guiders.cfg import cfg_guided
from .sampling import Start, sample
from .state import state_of
from .tunefolder import SR_DIR, TuneFolder


class SRStage:
    """A cascade tune's super-resolution stage II: its model (loaded once), tune folder and
    weight state. (Stage III, the untuned x4 upscaler, is upscale.X4Upscaler.)"""

    def __init__(
        self,
        tune_dir: str | Path,
        device: str = "auto",
        offload: bool = False,
        accel: Acceleration | None = None,
        backbone: Backbone | None = None,
    ) -> None:
        self.folder = TuneFolder.open(Path(tune_dir) / SR_DIR)
        self.backbone = backbone or load_model(
            tune_model_ref(self.folder), device, offload=offload, accel=accel
        )
        self.state = state_of(self.backbone)
        self.step: int | None = None  # the SR checkpoint applied now

    @property
    def resolution(self) -> tuple[int, int]:
        return self.folder.manifest.resolution

    def factor(self, base_res: tuple[int, int]) -> int:
        """How many times the SR stage enlarges (IF: 4)."""
        return self.resolution[0] // base_res[0]

    def resolve(self, cfg: EditConfig) -> EditConfig:
        """cfg with the SR model's guidance and steps where it leaves them open."""
        d = self.backbone.defaults
        return replace(
            cfg,
            sr_cfg=d.cfg if cfg.sr_cfg is None else cfg.sr_cfg,
            sr_steps=cfg.sr_steps or d.steps,
        )

    def use(self, cfg: EditConfig, base_step: int) -> int:
        """Apply cfg.sr_checkpoint, or for None the base stage's step if the SR stage saved it,
        else its last; 0 = the pretrained SR model."""
        step = cfg.sr_checkpoint
        if step is None:
            step = base_step if base_step in self.folder.checkpoints else None
        step = self.folder.resolve_checkpoint(step)
        self.state.use(self.folder, step)
        self.step = step
        return step

    @torch.no_grad()
    def run(
        self,
        plan: SRPlan,
        low: Tensor,
        cfg: EditConfig,
        gens: list[torch.Generator],
        progress: bool = True,
    ) -> Tensor:
        """low (B, 3, h, w) base-stage samples -> (B, 3, H, W) at the output size of the plan's
        base image (its checkpoint applied by :meth:`use`)."""
        bb, b = self.backbone, low.shape[0]
        hw = tuple(plan.base.shape[-2:])
        shape = (1, *bb.latent_shape(hw))
        dev, dt = bb.device, bb.dtype
        noise = torch.cat([randn_tensor(shape, generator=g, device=dev, dtype=dt) for g in gens])
        aug = torch.cat([randn_tensor(shape, generator=g, device=dev, dtype=dt) for g in gens])
        c = bb.condition(plan.cond.expand(b), low, cfg.sr_noise_level, aug)
        u = bb.condition(plan.negative.expand(b), low, cfg.sr_noise_level, aug)
        guided = cfg_guided(self.state.tuned(cfg.lora_scale), u, c, cfg.sr_cfg)
        x0 = bb.encode_image(plan.base) if (cfg.sr_t0 < 1 or plan.mask is not None) else None
        return sample(
            guided,
            bb.make_scheduler(bb.defaults.sampler, hw),
            noise,
            steps=cfg.sr_steps,
            start=Start(cfg.sr_t0, x0, plan.mask),
            process=bb,
            generator=gens,
            progress=progress,
        )


def __getattr__(name: str):
    if name == "Upscaler":  # the old name of SRStage
        import warnings

        warnings.warn("cascade.Upscaler is cascade.SRStage", DeprecationWarning, stacklevel=2)
        return SRStage
    raise AttributeError(name)
