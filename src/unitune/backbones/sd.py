"""Stable Diffusion 1.x / 2.x (and the embedded ``world`` model): UNet2DConditionModel, one CLIP
text encoder, AutoencoderKL latents; epsilon- or v-prediction (SD 2.x 768-v), from the
scheduler config. Conditioning = the text encoder's last hidden states, as
``StableDiffusionPipeline.encode_prompt`` makes them (no clip skip)."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..images import Geometry
from . import ModelSpec
from .base import Backbone, Conditioning, resolve_device

SAMPLER_CLASSES = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}
# LoRA on the transformer blocks' attention and feed-forward projections (as diffusers' DreamBooth
# LoRA scripts target attention), and optionally on the ResNet convolutions
UNET_LORA = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
UNET_LORA_CONV = ("conv1", "conv2", "conv_shortcut")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def load_pipeline(cls, spec: ModelSpec, dtype: torch.dtype, **extra):
    """A diffusers pipeline of class ``cls`` from a folder, a hub id or a single file; load
    failures become one-line UserErrors."""
    common = dict(torch_dtype=dtype, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.single_file and not hasattr(cls, "from_single_file"):
            return _transformer_file_pipeline(cls, spec, common)
        if spec.single_file:
            try:
                kw = {"config": spec.config_dir} if spec.config_dir else {}
                return cls.from_single_file(spec.ref, **common, **kw)
            except Exception as e:  # noqa: BLE001 - any failure here is a user-facing load failure
                raise UserError(
                    f"could not load single-file checkpoint {spec.ref!r} "
                    f"({type(e).__name__}: {first_line(e)})",
                    "offline, pass --model-config with a diffusers folder of the same architecture",
                ) from e
        try:
            return cls.from_pretrained(spec.ref, use_safetensors=True, **common)
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"could not load model {spec.ref!r} ({type(e).__name__}: {first_line(e)})",
                "check the hub id or path; offline, download the model first or use --model world",
            ) from e


def _transformer_file_pipeline(cls, spec: ModelSpec, common: dict):
    """A family whose pipeline has no ``from_single_file`` (Qwen-Image): the file is its
    transformer alone, as the tools distribute it; loaded with the transformer class's own
    ``from_single_file`` against --model-config, the rest of the pipeline from that folder."""
    import diffusers

    if spec.config_dir is None:
        raise UserError(
            f"{spec.ref!r} holds a {spec.family.label} transformer only",
            f"pass --model-config with a {spec.family.label} diffusers folder "
            "(its text encoder, VAE and configs)",
        )
    index = json.loads((Path(spec.config_dir) / "model_index.json").read_text())
    tcls = getattr(diffusers, index["transformer"][1])
    try:
        net = tcls.from_single_file(
            spec.ref, config=spec.config_dir, subfolder="transformer", **common
        )
        return cls.from_pretrained(spec.config_dir, transformer=net, use_safetensors=True, **common)
    except Exception as e:  # noqa: BLE001 - any failure here is a user-facing load failure
        raise UserError(
            f"could not load the transformer file {spec.ref!r} "
            f"({type(e).__name__}: {first_line(e)})",
            f"pass a {tcls.__name__} .safetensors (diffusers' tensor names) "
            "and --model-config of the same architecture",
        ) from e


def load_vae(path: str, dtype: torch.dtype, cls_name: str = "AutoencoderKL"):
    """``--vae PATH``: a VAE folder (e.g. an fp16-fixed SDXL VAE) or .safetensors, of the
    diffusers class ``cls_name`` (the backbone's ``vae_class``)."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    try:
        if Path(path).suffix.lower() == ".safetensors":
            return cls.from_single_file(path, torch_dtype=dtype)
        return cls.from_pretrained(path, torch_dtype=dtype, use_safetensors=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"could not load --vae {path!r} ({type(e).__name__}: {first_line(e)})",
            f"pass a {cls_name} folder or .safetensors file",
        ) from e


def clip_warning(tokenizer, prompt: str) -> str | None:
    """Where a prompt longer than the tokenizer takes is cut, or None if it fits."""
    ids = tokenizer(prompt, truncation=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return None
    kept = tokenizer.decode(ids[1 : limit - 1])
    dropped = tokenizer.decode(ids[limit - 1 : -1])
    return (
        f"prompt is {len(ids)} tokens, the text encoder takes {limit}: cut after "
        f"{kept[-40:]!r}; dropped {dropped!r} — shorten the prompt"
    )


def clip_tokens(tokenizer, prompts: list[str], device) -> Tensor:
    tok = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return tok.input_ids.to(device), tok.attention_mask.to(device)


class SDBackbone(Backbone):
    """SD 1.x / 2.x. The pipeline's own pieces: unet, vae, text_encoder, tokenizer, scheduler."""

    family = "sd"
    pipeline_class = "StableDiffusionPipeline"
    lora_targets = UNET_LORA
    lora_conv_targets = UNET_LORA_CONV
    patch_site = "conv_in"
    samplers = tuple(SAMPLER_CLASSES)

    def __init__(
        self, pipe, spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> None:
        from diffusers import DDPMScheduler

        self._adopt(pipe, spec, device, dtype, offload, "unet")
        self.train_scheduler = DDPMScheduler.from_config(self.scheduler_config)

    def _take_text(self, pipe) -> None:
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer

    def components(self) -> dict[str, nn.Module]:
        # the names are part of the digest: tunes record it, so they never change
        out = {"unet": self.module, "vae": self.vae}
        if self.text_encoder is not None:
            out["text"] = self.text_encoder
        return out

    def to_pipeline(self, module: nn.Module):
        """The family's diffusers pipeline with ``module`` as its network (export: merged)."""
        import diffusers

        self._need_text()
        return getattr(diffusers, self.pipeline_class)(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=module,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def original_layout(self, module: nn.Module) -> dict[str, Tensor]:
        """The model with ``module`` as its UNet in the original single-file layout (SD 1.x)."""
        from .ldm_layout import clip_to_ldm

        self._need_text()
        if getattr(self.text_encoder.config, "hidden_act", "") == "gelu":
            raise UserError(
                "SD 2.x's original layout stores an OpenCLIP text encoder "
                "with a layer diffusers drops",
                "export it as a diffusers folder (--out without .safetensors)",
            )
        return self._ldm_unet_vae(module) | clip_to_ldm(
            self.text_encoder.state_dict(), "cond_stage_model.transformer."
        )

    def _ldm_unet_vae(self, module: nn.Module) -> dict[str, Tensor]:
        from .ldm_layout import unet_to_ldm, vae_to_ldm

        unet = unet_to_ldm(module.state_dict(), module.config)
        vae = vae_to_ldm(self.vae.state_dict(), self.vae.config)
        return {f"model.diffusion_model.{k}": v for k, v in unet.items()} | {
            f"first_stage_model.{k}": v for k, v in vae.items()
        }

    # --- image <-> model space ----------------------------------------------------------------
    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        size = self.module.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale

    @property
    def size_multiple(self) -> int:
        return self.vae_scale

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def latent_shape(self, hw: tuple[int, int]) -> tuple[int, int, int]:
        return (self.module.config.in_channels, hw[0] // self.vae_scale, hw[1] // self.vae_scale)

    def _vae_dtype(self) -> torch.dtype:
        return self.vae.dtype

    @torch.no_grad()
    def encode_image(self, pixels: Tensor) -> Tensor:
        with self._visiting(self.vae):
            dt = self._vae_dtype()
            posterior = self.vae.encode(pixels.to(self.device, dt)).latent_dist
            return (posterior.mean * self.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, x0: Tensor) -> Tensor:
        with self._visiting(self.vae):
            dt = self._vae_dtype()
            return self.vae.decode(x0.to(self.device, dt) / self.scaling_factor).sample.float()

    def _visiting(self, module: nn.Module):
        return _Visit(module, self.device) if self.offload else _NoVisit()

    # --- prompts ------------------------------------------------------------------------------
    def _need_text(self) -> None:
        if self.text_encoder is None:
            raise RuntimeError(
                "the text encoders were freed (free_text_encoders): reload the model"
            )

    @torch.no_grad()
    def encode(
        self, prompts: list[str], geometry: Geometry | None = None, guidance: float | None = None
    ) -> Conditioning:
        self._need_text()
        te = self.text_encoder
        with self._visiting(te):
            ids, attn = clip_tokens(self.tokenizer, prompts, self.device)
            if not getattr(te.config, "use_attention_mask", False):
                attn = None
            emb = te(ids, attention_mask=attn)[0]
        return Conditioning(emb.to(self.dtype))

    def prompt_warning(self, prompt: str) -> str | None:
        self._need_text()
        return clip_warning(self.tokenizer, prompt)

    def free_text_encoders(self) -> None:
        self.text_encoder = None
        _collect(self.device)

    # --- the denoiser -------------------------------------------------------------------------
    def denoise(self, module: nn.Module, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return module(x, t, encoder_hidden_states=cond.emb).sample

    # --- schedule -----------------------------------------------------------------------------
    def make_scheduler(self, sampler: str, hw: tuple[int, int] | None = None):
        import diffusers

        self.check_sampler(sampler)
        cls = getattr(diffusers, SAMPLER_CLASSES[sampler])
        extra: dict[str, Any] = {}
        if sampler == "dpm++":
            extra = {"algorithm_type": "dpmsolver++", "solver_order": 2}
        return cls.from_config(self.scheduler_config, **extra)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return self.train_scheduler.add_noise(x0, noise, t)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        if self.prediction_type == "v_prediction":
            return self.train_scheduler.get_velocity(x0, noise, t)
        if self.prediction_type != "epsilon":
            raise ValueError(f"prediction type {self.prediction_type!r} is not supported")
        return noise

    def sample_timesteps(
        self,
        n: int,
        gen: torch.Generator,
        density: str = "uniform",
        hw: tuple[int, int] | None = None,
    ) -> Tensor:
        if density == "uniform":
            return torch.randint(0, self.num_train_timesteps, (n,), generator=gen)
        u = torch.sigmoid(torch.randn(n, generator=gen))  # logit-normal in (0, 1)
        return (u * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)


class _Visit:
    """Move a module to the device for the duration of a block, then back to the CPU."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device

    def __enter__(self) -> None:
        self.module.to(self.device)

    def __exit__(self, *exc) -> None:
        self.module.to("cpu")
        _collect(self.device)


class _NoVisit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _collect(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def load_backbone(
    cls,
    spec: ModelSpec,
    device,
    dtype: torch.dtype | None,
    vae: str | None,
    offload: bool,
    **extra: Any,
) -> Backbone:
    """The pipeline of backbone class ``cls`` (its ``pipeline_class``) loaded and wrapped. dtype
    defaults to fp32 (fp16 weights are upcast on load: CPU kernels and fine-tuning both want
    fp32 masters); ``vae``: another VAE; ``extra``: more pipeline components."""
    import diffusers

    dev = resolve_device(device)
    dtype = dtype or torch.float32
    if vae is not None:
        extra["vae"] = load_vae(vae, dtype, cls.vae_class)
    pipe = load_pipeline(getattr(diffusers, cls.pipeline_class), spec, dtype, **extra)
    return cls(pipe, spec, dev, dtype, offload)


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
) -> Backbone:
    """Load an SD 1.x / 2.x model."""
    return load_backbone(
        SDBackbone,
        spec,
        device,
        dtype,
        vae,
        offload,
        safety_checker=None,
        requires_safety_checker=False,
    )
