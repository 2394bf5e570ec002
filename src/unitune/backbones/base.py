"""The seam between unitune and a model family: :class:`Backbone` and :class:`Conditioning`.

A backbone owns everything that differs between families, and nothing outside ``backbones/``
asks which family it has:

- loading (``backbones.load``) and the weights digest;
- image <-> model space (``encode_image`` / ``decode``) at the family's native resolution and
  its size rule (``size_multiple``);
- prompt -> :class:`Conditioning` (one or several text encoders, pooled embeddings, extra ids),
  computed once per prompt and image geometry;
- the denoiser call and what it predicts: ``denoise(module, x, t, cond)`` returns the model's own
  prediction (epsilon, v, later flow velocity). Every guidance formula (CFG, prompt guidance,
  SINE's eq. 3, multi-model guidance) is linear in the prediction, so they are written once on
  whatever it is; the backbone's scheduler consumes that same prediction, and ``target`` says
  what it should equal (training, best-of scoring);
- the schedule: samplers, noise at a timestep (SDEdit start, in-painting), the training target
  and timestep sampling, and its deterministic sampler run backwards (``inverse_scheduler``,
  the inversion start);
- which modules LoRA targets, and where SINE's crop-box embedding is injected.

The trainable network (UNet or transformer) is ``backbone.module``; :class:`unitune.state.
ModelState` owns which weights it holds at any time.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Acceleration, ModelDefaults
from ..images import Geometry


@dataclass
class Conditioning:
    """What prompts turn into for the denoiser; every tensor is batch-first, one row per prompt,
    so guidance concatenates and splits conditionings along the batch and nothing else."""

    emb: Tensor  # (B, L, D) token embeddings the denoiser attends to
    pooled: Tensor | None = None  # (B, P) pooled text embedding (SDXL, SD3, FLUX)
    extra: dict[str, Tensor] = field(default_factory=dict)  # e.g. SDXL "time_ids" (B, 6)

    def __len__(self) -> int:
        return self.emb.shape[0]

    def _map(self, fn) -> Conditioning:
        return Conditioning(
            fn(self.emb),
            None if self.pooled is None else fn(self.pooled),
            {k: fn(v) for k, v in self.extra.items()},
        )

    def expand(self, b: int) -> Conditioning:
        """One row -> b rows (the same prompt for each of b samples)."""
        if len(self) == b:
            return self
        return self._map(lambda t: t.expand(b, *t.shape[1:]))

    def repeat(self, n: int) -> Conditioning:
        """[c0, c1] -> [c0 x n, c1 x n] (row i repeated n times, in place)."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def chunk(self, n: int) -> list[Conditioning]:
        embs = self.emb.chunk(n)
        pooled = self.pooled.chunk(n) if self.pooled is not None else [None] * n
        extra = {k: v.chunk(n) for k, v in self.extra.items()}
        return [
            Conditioning(e, p, {k: v[i] for k, v in extra.items()})
            for i, (e, p) in enumerate(zip(embs, pooled))
        ]

    @staticmethod
    def cat(conds: list[Conditioning]) -> Conditioning:
        pooled = None if conds[0].pooled is None else torch.cat([c.pooled for c in conds])
        extra = {k: torch.cat([c.extra[k] for c in conds]) for k in conds[0].extra}
        return Conditioning(torch.cat([c.emb for c in conds]), pooled, extra)

    def to(self, dtype: torch.dtype) -> Conditioning:
        return self._map(lambda t: t.to(dtype) if t.is_floating_point() else t)


def start_index(steps: int, t0: float) -> int:
    """The first timestep's index for an SDEdit start at t0, as diffusers' SD / SDXL img2img
    round ``strength`` (the number of steps run is truncated)."""
    init = min(int(steps * t0), steps)
    return max(steps - init, 0)


def cat_expand(conds: list[Conditioning], b: int) -> Conditioning:
    """[c0 x b ; c1 x b ; ...] for one batched pass over ``len(conds) * b`` samples."""
    return Conditioning.cat([c.expand(b) for c in conds])


class Backbone(ABC):
    """One loaded model of a family. Subclasses set the attributes and implement the methods."""

    family: str  # backbones.Family.name
    module: nn.Module  # the trainable denoiser (UNet / transformer)
    device: torch.device
    dtype: torch.dtype  # the dtype the weights were loaded in (fp32 on CPU)
    model_ref: str  # what was loaded (folder, file or hub id)
    digest: str  # weights_digest() of the weights as loaded
    scheduler_config: dict[str, Any]
    lora_targets: tuple[str, ...]  # module-name suffixes LoRA wraps (attention projections)
    lora_conv_targets: tuple[str, ...]  # ... and, with --lora-conv, the ResNet convs
    patch_site: str  # attribute of ``module`` whose output SINE's crop-box embedding is added to
    defaults: ModelDefaults  # this model's defaults (its family's; load() sets them)
    samplers: tuple[str, ...]  # the config.SAMPLERS this model offers
    # guidance.match_norm's patch: every guided mix rescaled to the conditional prediction's
    # norm per patch, as the family's pipeline does (Qwen-Image: 2); 0 = a plain mix
    cfg_renorm: int = 0
    vae_class = "AutoencoderKL"  # the diffusers class a --vae loads as

    def _adopt(
        self, pipe, spec, device: torch.device, dtype: torch.dtype, offload: bool, network: str
    ) -> None:
        """Take a loaded diffusers pipeline's pieces (``network``: its denoiser's attribute) and
        place them: with ``offload`` (on a GPU) everything but the denoiser waits on the CPU and
        visits the device only while it runs. Frozen, eval mode; the digest of them as loaded."""
        self.model_ref = spec.ref
        self.device, self.dtype = device, dtype
        self.module = getattr(pipe, network)
        self.vae = getattr(pipe, "vae", None)  # pixel-space families (IF) have none
        self._take_text(pipe)
        self.scheduler = pipe.scheduler  # the model's own scheduler (its class, for export)
        self.scheduler_config = dict(pipe.scheduler.config)
        self.offload = offload and device.type != "cpu"
        for m in self.components().values():
            m.requires_grad_(False).eval()
            m.to("cpu" if self.offload and m is not self.module else device)
        self.digest = weights_digest(self.components())

    def _take_text(self, pipe) -> None:
        """Keep the pipeline's tokenizers and text encoders."""
        raise NotImplementedError

    def model_defaults(self, family: ModelDefaults) -> ModelDefaults:
        """This model's defaults: its family's (a variant of a family may refine them)."""
        return family

    def accelerate(self, accel: Acceleration) -> None:
        """Apply ``accel`` to the denoiser in place (the same module object, so ModelState's
        adapters, deltas and positional module apply to it as before)."""
        if accel.tf32 and self.device.type == "cuda":  # process-wide, as torch only offers
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if accel.quantize:
            self._quantize(accel.quantize)
        if accel.channels_last:
            self.module.to(memory_format=torch.channels_last)
        if accel.compile:
            self.module.compile()  # nn.Module.compile: compiles the forward, keeps the object

    def _quantize(self, kind: str) -> None:
        """The denoiser's nn.Linear weights to int8 in place (torchao weight-only: activations
        stay in the compute dtype). PEFT trains LoRA adapters on top of such layers; full tunes
        cannot (their deltas need float weights), which tune and edit refuse before loading."""
        from ..errors import UserError

        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise UserError(
                "--quantize needs torchao", "pip install torchao (or 'unitune[quant]')"
            ) from None
        if kind != "int8":
            raise UserError(f"unknown --quantize {kind!r}", "use --quantize int8")
        quantize_(self.module, Int8WeightOnlyConfig())

    # --- image <-> model space ----------------------------------------------------------------
    @property
    @abstractmethod
    def resolution(self) -> int:
        """Native (square) resolution in pixels."""

    @property
    @abstractmethod
    def size_multiple(self) -> int:
        """Output height and width must be multiples of this."""

    @abstractmethod
    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        """(C, h, w) of the model space at pixel size hw."""

    @abstractmethod
    def encode_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> model-space x0 (deterministic: the posterior mean)."""

    @abstractmethod
    def decode(self, x0: Tensor) -> Tensor:
        """Model-space x0 -> (B, 3, H, W) in [-1, 1] (not clamped)."""

    # --- prompts ------------------------------------------------------------------------------
    @abstractmethod
    def encode(
        self, prompts: list[str], geometry: Geometry, guidance: float | None = None
    ) -> Conditioning:
        """One row per prompt, as the family's pipeline encodes a (positive) prompt. ``guidance``:
        a guidance-distilled model's embedded guidance scale (None: the one it is tuned with);
        other models ignore it."""

    def encode_negative(
        self, prompt: str, geometry: Geometry, guidance: float | None = None
    ) -> Conditioning:
        """The unconditional / negative prompt's conditioning (families may treat "" specially)."""
        return self.encode([prompt], geometry, guidance)

    def guidance_weights(self, cfg: float, true_cfg: float) -> tuple[float, float | None]:
        """(w of the CFG-style mix, the guidance scale embedded in the conditioning or None).
        A model trained with classifier-free guidance mixes two predictions with ``cfg``; a
        guidance-distilled one embeds ``cfg`` and mixes only with ``true_cfg``."""
        if true_cfg != 1.0:
            from ..errors import UserError

            raise UserError(
                "--true-cfg is for guidance-distilled models (FLUX.1-dev); "
                "this model's CFG is --cfg",
                "drop --true-cfg and set --cfg",
            )
        return cfg, None

    @abstractmethod
    def prompt_warning(self, prompt: str) -> str | None:
        """A message when the prompt is longer than a text encoder takes, saying where it was
        cut."""

    @abstractmethod
    def free_text_encoders(self) -> None:
        """Drop the text encoders (tuning encodes its one prompt first; frees GPU memory)."""

    # --- the denoiser -------------------------------------------------------------------------
    @abstractmethod
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The prediction of ``module`` (this family's network, in some weight state) at x_t."""

    def loss(self, pred: Tensor, target: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The training loss of ``pred`` = denoise(x_t) (B, C', h, w) against ``target`` (B, C, h,
        w): the MSE; models with learned variances add the bound's term for them."""
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def training_cond(
        self, cond: Conditioning, gen: torch.Generator, hw: tuple[int, int]
    ) -> Conditioning:
        """A training step's conditioning (B rows) from the tune's (expanded to B rows): the same
        for text-only models; a super-resolution stage draws its noise augmentation here."""
        return cond

    # --- schedule -----------------------------------------------------------------------------
    @abstractmethod
    def make_scheduler(self, sampler: str, hw: tuple[int, int] | None = None):
        """A fresh diffusers scheduler for sampling (the model's own schedule and prediction) at
        output size hw (flow models shift their schedule with the image size)."""

    def check_sampler(self, sampler: str) -> None:
        """Refuse a sampler this model does not offer, in one line naming those it does."""
        if sampler not in self.samplers:
            from ..errors import UserError

            raise UserError(
                f"--sampler {sampler} is not one this model offers",
                f"use one of {', '.join(self.samplers)}",
            )

    def start_index(self, steps: int, t0: float) -> int:
        """Index of the first of ``steps`` timesteps for an SDEdit start at t0, rounded as the
        family's img2img pipeline rounds its ``strength``."""
        return start_index(steps, t0)

    def renoise(self, scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x0 noised to the sampler's timesteps t (B,): the SDEdit start and in-painting's known
        region (the scheduler's own forward process)."""
        return scheduler.add_noise(x0, noise, t)

    # the deterministic sampler ``--start inversion`` runs backwards (DDIM for epsilon / v models)
    inversion_sampler: str = "ddim"

    def inverse_scheduler(self, scheduler):
        """A scheduler that runs ``scheduler`` (one of ``inversion_sampler``'s, from
        ``make_scheduler``) backwards: after ``set_timesteps(steps)`` its ``timesteps`` are the
        sampler's in reverse (lowest noise first) and ``step(out, t, x)`` moves x to timestep t,
        the model evaluated at t (diffusers' DDIMInverseScheduler convention)."""
        from diffusers import DDIMInverseScheduler

        return DDIMInverseScheduler.from_config(scheduler.config)

    @abstractmethod
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t for the training timesteps t (B,) (the forward process)."""

    @abstractmethod
    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What ``denoise`` should predict at x_t = add_noise(x0, noise, t)."""

    @abstractmethod
    def sample_timesteps(
        self,
        n: int,
        gen: torch.Generator,
        density: str = "uniform",
        hw: tuple[int, int] | None = None,
    ) -> Tensor:
        """(n,) training timesteps on the 0..1000 scale, drawn from ``density`` (config.DENSITIES)
        for training images of size hw."""

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    # --- export -------------------------------------------------------------------------------
    @abstractmethod
    def to_pipeline(self, module: nn.Module):
        """The family's diffusers pipeline built from this model with ``module`` as its network."""

    def original_layout(self, module: nn.Module) -> dict[str, Tensor]:
        """The whole model, ``module`` as its network, in the family's original single-file key
        layout (what A1111 / ComfyUI load); families without one raise."""
        raise NotImplementedError(f"{type(self).__name__} has no single-file layout")

    # --- memory -------------------------------------------------------------------------------
    def components(self) -> dict[str, nn.Module]:
        """Every network of the model by name (digest, device moves)."""
        return {"module": self.module}


@torch.no_grad()
def weights_digest(modules: dict[str, nn.Module], samples: int = 64) -> str:
    """A short id of a model's weights, so a tune (or a benchmark result) made on one model is
    never silently reused with another that has the same name (the embedded model changes between
    releases; a hub id can point at new weights). Hashes every tensor's name, shape and
    ``samples`` evenly spaced values: O(number of tensors), not a full checksum. Values are
    rounded to fp16 first: an fp16 checkpoint loaded in fp32 or fp16 gives one id. Taken once, on
    the weights as loaded: tunes, LoRA wrappers and patches change the modules later."""
    h = hashlib.sha256()
    for name, module in modules.items():
        for k, t in sorted(module.state_dict().items()):
            flat = t.detach().reshape(-1)
            n = min(samples, flat.numel())
            # integer spacing: a float linspace rounds past the end above 2^24 elements
            idx = torch.arange(n) * (flat.numel() - 1) // max(n - 1, 1)
            vals = flat[idx.to(flat.device)].to("cpu", torch.float16).numpy().tobytes()
            h.update(f"{name}.{k}:{tuple(t.shape)}:".encode() + vals)
    return h.hexdigest()[:16]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    from ..errors import UserError

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown device {device!r}", "use --device cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA GPU is visible", "use --device cpu"
        )
    return torch.device(device)


def warn_long_prompts(backbone: Backbone, prompts: list[str]) -> None:
    """A UnituneWarning per prompt a text encoder would cut, saying where."""
    import warnings

    from ..errors import UnituneWarning

    for p in prompts:
        msg = backbone.prompt_warning(p)
        if msg:
            warnings.warn(msg, UnituneWarning, stacklevel=3)
