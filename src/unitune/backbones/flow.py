"""What the rectified-flow families (SD3 / 3.5, FLUX.1) share: the flow-matching process, its
schedule and a transformer over VAE latents with a shift and a scale.

The forward process is a straight line between the image and noise, at noise level sigma in
[0, 1]:  x_sigma = (1 - sigma) x0 + sigma noise,  and the network predicts the velocity
v = noise - x0 (the one parameterization every guidance formula mixes: they are linear in it).
Timesteps are t = 1000 sigma, so SINE's K and the sampler's timesteps keep the 0..1000 scale of
the noise-prediction families: K / 1000 is the noise level below which SINE stops mixing.

Training draws sigma from the training scheduler's table as diffusers' DreamBooth scripts do
(u uniform or logit-normal -> index -> sigma, SD3's static shift already in the table); a model
whose scheduler shifts with the image size (FLUX, ``use_dynamic_shifting``) gets the same
size-dependent shift its sampler applies at the training resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import ModelSpec
from .base import Backbone
from .sd import _collect, _NoVisit, _Visit, clip_warning

# config.SAMPLERS -> diffusers; Heun's set_timesteps takes no size shift (mu): fixed-shift models
FLOW_SAMPLERS = {
    "euler": "FlowMatchEulerDiscreteScheduler",
    "heun": "FlowMatchHeunDiscreteScheduler",
}


def size_shift_mu(seq_len: int, config: dict[str, Any], max_shift: float) -> float:
    """The log-shift mu of a schedule at ``seq_len`` image tokens: linear in the token count
    between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), as diffusers'
    pipelines compute it (``max_shift``: the pipeline's default when the config has none)."""
    lo, hi = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    s_lo, s_hi = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    m = (s_hi - s_lo) / (hi - lo)
    return seq_len * m + (s_lo - m * lo)


class FlowSchedule:
    """A diffusers flow-matching scheduler as unitune's sampling loop drives it: ``set_timesteps``
    with the pipeline's own sigma grid and size shift, the identity input scaling and unit
    initial noise (flow schedulers have neither). Everything else is the scheduler's."""

    init_noise_sigma = 1.0

    def __init__(
        self, scheduler, linspace_sigmas: bool, mu: float | Callable[[int], float] | None
    ) -> None:
        self.scheduler = scheduler
        self._linspace, self._mu = linspace_sigmas, mu  # mu: FLUX.2's depends on the steps

    def set_timesteps(self, steps: int, device=None) -> None:
        mu = self._mu(steps) if callable(self._mu) else self._mu
        kw = {} if mu is None else {"mu": mu}
        if self._linspace:  # FluxPipeline passes sigmas 1 .. 1/steps itself
            kw["sigmas"] = np.linspace(1.0, 1 / steps, steps)
            self.scheduler.set_timesteps(device=device, **kw)
        else:
            self.scheduler.set_timesteps(steps, device=device, **kw)

    def scale_model_input(self, x: Tensor, t: Tensor) -> Tensor:
        return x

    def __getattr__(self, name: str):
        return getattr(self.__dict__["scheduler"], name)


class FlowInverse:
    """The flow-matching Euler sampler run backwards (there is no diffusers scheduler for it):
    from sigma 0 up the sampler's own sigma grid, x <- x + (sigma_to - sigma_from) v(x, t_to),
    the velocity taken at the target timestep as DDIM inversion takes its noise prediction."""

    init_noise_sigma = 1.0

    def __init__(self, schedule: FlowSchedule) -> None:
        self._s = schedule

    def set_timesteps(self, steps: int, device=None) -> None:
        self._s.set_timesteps(steps, device=device)
        self._ts = self._s.timesteps  # (S,) the sampler's, highest first
        self._sigmas = self._s.sigmas  # (S + 1,) highest first, ending at 0
        self.timesteps = self._ts.flip(0)

    def scale_model_input(self, x: Tensor, t: Tensor) -> Tensor:
        return x

    def step(self, model_output: Tensor, t: Tensor, sample: Tensor, return_dict: bool = False):
        i = int((self._ts == t).nonzero()[0])  # x moves from sigma[i + 1] up to sigma[i]
        ds = (self._sigmas[i] - self._sigmas[i + 1]).to(sample.device)
        return ((sample.float() + ds.float() * model_output.float()).to(sample.dtype),)


class FlowBackbone(Backbone):
    """A rectified-flow transformer: ``module`` is the pipeline's ``transformer``. Subclasses set
    the text encoders (``_take_text``, ``components``, ``encode``) and the denoiser call."""

    linspace_sigmas = False  # the pipeline passes its own sigma grid (FLUX)
    default_max_shift = 1.16  # the pipeline's max_shift when the scheduler config has none
    t5_max_length = 256  # the pipeline's max_sequence_length for the T5 prompt

    def __init__(
        self, pipe, spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> None:
        self._adopt(pipe, spec, device, dtype, offload, "transformer")

    # --- image <-> model space ----------------------------------------------------------------
    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def token_size(self) -> int:
        """Pixels per side of one image token (VAE factor x the transformer's patch)."""
        return self.vae_scale * 2

    @property
    def size_multiple(self) -> int:
        return self.token_size

    def _visiting(self, module: nn.Module):
        return _Visit(module, self.device) if self.offload else _NoVisit()

    @torch.no_grad()
    def encode_image(self, pixels: Tensor) -> Tensor:
        cfg = self.vae.config
        with self._visiting(self.vae):
            mean = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mean
        return ((mean - (cfg.shift_factor or 0.0)) * cfg.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, x0: Tensor) -> Tensor:
        cfg = self.vae.config
        z = x0.to(self.device, self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        with self._visiting(self.vae):
            return self.vae.decode(z).sample.float()

    # --- prompts ------------------------------------------------------------------------------
    def _need_text(self) -> None:
        if self.text_encoder is None:
            raise RuntimeError(
                "the text encoders were freed (free_text_encoders): reload the model"
            )

    def _t5(self, tokenizer, encoder, prompts: list[str], width: int) -> Tensor:
        """(B, t5_max_length, D) T5 states as the pipelines make them; zeros of the transformer's
        text width when the model was saved without T5 (SD3's ``text_encoder_3=None``)."""
        n = self.t5_max_length
        if encoder is None:
            return torch.zeros(len(prompts), n, width, device=self.device, dtype=self.dtype)
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=n,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        with self._visiting(encoder):
            return encoder(ids.to(self.device))[0].to(self.dtype)

    def _t5_warning(self, tokenizer, prompt: str) -> str | None:
        if tokenizer is None:
            return None
        ids = tokenizer(prompt, truncation=False).input_ids
        if len(ids) <= self.t5_max_length:
            return None
        return (
            f"prompt is {len(ids)} T5 tokens, the model takes {self.t5_max_length}: "
            f"dropped {tokenizer.decode(ids[self.t5_max_length - 1 : -1])!r} — shorten it"
        )

    def _clip_warnings(self, tokenizers, prompt: str) -> str | None:
        for tok in tokenizers:
            msg = clip_warning(tok, prompt)
            if msg:
                return msg + " (the T5 encoder still reads it)"
        return None

    # --- schedule -----------------------------------------------------------------------------
    def _mu(self, hw: tuple[int, int] | None) -> float:
        h, w = hw or (self.resolution, self.resolution)
        seq = (h // self.token_size) * (w // self.token_size)
        return size_shift_mu(seq, self.scheduler_config, self.default_max_shift)

    @property
    def samplers(self) -> tuple[str, ...]:  # type: ignore[override]
        dynamic = self.scheduler_config.get("use_dynamic_shifting", False) or self.linspace_sigmas
        return ("euler",) if dynamic else tuple(FLOW_SAMPLERS)

    def make_scheduler(self, sampler: str, hw: tuple[int, int] | None = None):
        import diffusers

        self.check_sampler(sampler)
        sched = getattr(diffusers, FLOW_SAMPLERS[sampler]).from_config(self.scheduler_config)
        dynamic = self.scheduler_config.get("use_dynamic_shifting", False)
        return FlowSchedule(sched, self.linspace_sigmas, self._schedule_mu(hw) if dynamic else None)

    def _schedule_mu(self, hw: tuple[int, int] | None) -> float | Callable[[int], float]:
        """The sampler's size shift at ``hw``; a function of the step count for a pipeline whose
        shift depends on it (FLUX.2)."""
        return self._mu(hw)

    def renoise(self, scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return scheduler.scale_noise(x0, t, noise)

    inversion_sampler = "euler"  # the ODE's Euler steps, run backwards (FlowInverse)

    def inverse_scheduler(self, scheduler):
        return FlowInverse(scheduler)

    def start_index(self, steps: int, t0: float) -> int:
        # the flow img2img pipelines keep the fractional step count, then truncate the start
        return int(max(steps - steps * t0, 0))

    def _sigma(self, t: Tensor, like: Tensor) -> Tensor:
        s = (t.float() / self.num_train_timesteps).to(like.device, like.dtype)
        return s.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        s = self._sigma(t, x0)
        return (1.0 - s) * x0 + s * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise - x0

    def train_sigmas(self, hw: tuple[int, int] | None = None) -> Tensor:
        """(N,) the training scheduler's sigma table, highest first (N = num_train_timesteps)."""
        n = self.num_train_timesteps
        s = torch.linspace(1, n, n, dtype=torch.float64).flip(0) / n
        if self.scheduler_config.get("use_dynamic_shifting", False):
            e = math.exp(self._mu(hw))  # the sampler's shift at this size
            return (e / (e + (1 / s - 1))).float()
        k = float(self.scheduler_config.get("shift", 1.0))
        return (k * s / (1 + (k - 1) * s)).float()

    def sample_timesteps(
        self,
        n: int,
        gen: torch.Generator,
        density: str = "uniform",
        hw: tuple[int, int] | None = None,
    ) -> Tensor:
        if density == "uniform":
            u = torch.rand(n, generator=gen)
        else:  # logit-normal (mean 0, std 1): most draws near sigma 0.5
            u = torch.sigmoid(torch.randn(n, generator=gen))
        table = self.train_sigmas(hw)
        idx = (u * len(table)).long().clamp(max=len(table) - 1)
        return table[idx] * self.num_train_timesteps

    def free_text_encoders(self) -> None:
        for name in self._text_names:
            setattr(self, name, None)
        _collect(self.device)

    _text_names: tuple[str, ...] = ()  # the attributes holding text encoders


class LMFlowBackbone(FlowBackbone):
    """A flow transformer whose one text encoder is a decoder language model, read through the
    pipeline's own ``encode_prompt`` (Z-Image, Qwen-Image, FLUX.2): the pipeline's
    ``text_encoder`` / ``tokenizer``, the pipeline rebuilt around a module for encoding and
    export, and the native size of ``default_sample_size`` latents per side."""

    default_sample_size = 128  # the pipelines' default_sample_size: latents per side (1024 px)
    max_sequence_length = 512  # the pipelines' max_sequence_length: prompt tokens the LM reads
    _text_names = ("text_encoder",)

    def _take_text(self, pipe) -> None:
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self._pipe_config = dict(pipe.config)  # the pipeline's own config (FLUX.2 klein's flag)

    def components(self) -> dict[str, nn.Module]:
        out = {"transformer": self.module, "vae": self.vae}
        if self.text_encoder is not None:
            out["text"] = self.text_encoder
        return out

    def _pipeline_kw(self) -> dict[str, Any]:
        """Pipeline arguments beyond the components (its registered config)."""
        return {}

    def to_pipeline(self, module: nn.Module):
        import diffusers

        self._need_text()
        return getattr(diffusers, self.pipeline_class)(
            transformer=module,
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            **self._pipeline_kw(),
        )

    @property
    def resolution(self) -> int:
        return self.default_sample_size * self.vae_scale

    # --- prompts: the pipeline's own encode_prompt, and its token count -----------------------
    def _encode_with_pipeline(self, prompts: list[str], **kw):
        """``encode_prompt`` of the pipeline rebuilt around the module, the encoder visiting the
        device (--offload); ``kw``: the family's extra arguments. Its output as it is."""
        self._need_text()
        pipe = self.to_pipeline(self.module)
        with self._visiting(self.text_encoder):
            return pipe.encode_prompt(
                list(prompts),  # a copy: Z-Image's writes the templated prompts into the list
                device=self.device,
                max_sequence_length=self.max_sequence_length,
                **kw,
            )

    def _padded(self, rows: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Variable-length prompt rows (n_i, D) -> (B, max_sequence_length, D) zero-padded on
        the right, as the tokenizers pad, and the (B, max_sequence_length) mask of real tokens:
        rows of every call stack, whatever the longest prompt of the call was."""
        n, d = self.max_sequence_length, rows[0].shape[-1]
        emb = torch.zeros(len(rows), n, d, device=self.device, dtype=self.dtype)
        mask = torch.zeros(len(rows), n, device=self.device, dtype=torch.bool)
        for i, r in enumerate(rows):
            emb[i, : len(r)], mask[i, : len(r)] = r.to(self.dtype), True
        return emb, mask

    def _prompt_ids(self, prompt: str) -> list[int]:
        """The token ids of ``prompt`` as the pipeline feeds them to its encoder, template in."""
        raise NotImplementedError

    def prompt_warning(self, prompt: str) -> str | None:
        self._need_text()
        ids, n = self._prompt_ids(prompt), self.max_sequence_length
        if len(ids) <= n:
            return None
        dropped = self.tokenizer.decode(ids[n:])
        return (
            f"prompt is {len(ids)} tokens with its template, the model takes {n}: "
            f"dropped {dropped[:80]!r} — shorten it"
        )
