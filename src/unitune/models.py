"""Loading Stable-Diffusion-family models (hub id, diffusers folder, single .safetensors file, or
the embedded ``world`` model) and encoding prompts the way diffusers' pipelines do."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbones import ModelSpec, probe
from .config import DEFAULT_MODEL
from .errors import UnituneWarning, UserError

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown device {device!r}", "use --device cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA GPU is visible", "use --device cpu"
        )
    return torch.device(device)


@dataclass
class Components:
    """The parts of a Stable Diffusion model unitune drives directly."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    model_ref: str
    device: torch.device
    dtype: torch.dtype
    digest: str = ""  # weights_digest() of the weights as loaded, before any tune touches them

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def _load_pipeline(spec: ModelSpec, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    common = dict(safety_checker=None, requires_safety_checker=False, torch_dtype=dtype)
    ref, path = spec.ref, Path(spec.ref)
    if spec.single_file:
        try:
            kw = {"config": spec.config_dir} if spec.config_dir else {}
            return StableDiffusionPipeline.from_single_file(str(path), **common, **kw)
        except Exception as e:  # noqa: BLE001 - any failure here is a user-facing load failure
            raise UserError(
                f"could not load single-file checkpoint {ref!r} ({type(e).__name__}: {_first_line(e)})",
                "offline, pass --model-config with a diffusers folder of the same architecture",
            ) from e
    try:
        return StableDiffusionPipeline.from_pretrained(ref, use_safetensors=True, **common)
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"could not load model {ref!r} ({type(e).__name__}: {_first_line(e)})",
            "check the hub id or path; offline, download the model first or use --model world",
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def load_components(
    ref: str = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    model_config: str | None = None,
) -> Components:
    """Load a model for tuning/editing. dtype defaults to fp32 (fp16 weights are upcast on load:
    CPU kernels and fine-tuning both want fp32 masters)."""
    spec = probe(ref, model_config)  # refuses a bad path or family before any weight loads
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype or torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = _load_pipeline(spec, dtype)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.to(dev)
        m.requires_grad_(False)
        m.eval()
    return Components(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler_config=dict(pipe.scheduler.config),
        model_ref=spec.ref,
        device=dev,
        dtype=dtype,
        digest=weights_digest(pipe.unet, pipe.vae, pipe.text_encoder),
    )


@torch.no_grad()
def weights_digest(unet, vae, text_encoder, samples: int = 64) -> str:
    """A short id of the UNet, VAE and text encoder weights, so a tune (or a benchmark result)
    made on one model is never silently reused with another that has the same name (the embedded
    model changes between releases; a hub id can point at new weights). Hashes every tensor's
    name, shape and ``samples`` evenly spaced values, O(number of tensors), not a full checksum.
    Values are rounded to fp16 first: an fp16 checkpoint loaded in fp32 or fp16 gives one id.
    load_components() takes it once, on the weights as loaded (``Components.digest``): tunes, LoRA
    wrappers and patches change the modules later."""
    h = hashlib.sha256()
    for name, module in (("unet", unet), ("vae", vae), ("text", text_encoder)):
        for k, t in sorted(module.state_dict().items()):
            flat = t.detach().reshape(-1)
            n = min(samples, flat.numel())
            # integer spacing: a float linspace rounds past the end above 2^24 elements
            idx = torch.arange(n) * (flat.numel() - 1) // max(n - 1, 1)
            vals = flat[idx.to(flat.device)].to("cpu", torch.float16).numpy().tobytes()
            h.update(f"{name}.{k}:{tuple(t.shape)}:".encode() + vals)
    return h.hexdigest()[:16]


def check_prompt_length(tokenizer, prompt: str) -> str | None:
    """Return a warning message if the prompt is longer than the tokenizer takes, saying where it
    was cut; None if it fits."""
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


@torch.no_grad()
def encode_prompts(comp: Components, prompts: list[str], warn: bool = True) -> torch.Tensor:
    """(N, 77, D) text embeddings, exactly as StableDiffusionPipeline.encode_prompt (no clip skip)."""
    if warn:
        for p in prompts:
            msg = check_prompt_length(comp.tokenizer, p)
            if msg:
                warnings.warn(msg, UnituneWarning, stacklevel=2)
    tok = comp.tokenizer(
        prompts,
        padding="max_length",
        max_length=comp.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    attn = None
    if getattr(comp.text_encoder.config, "use_attention_mask", False):
        attn = tok.attention_mask.to(comp.device)
    emb = comp.text_encoder(tok.input_ids.to(comp.device), attention_mask=attn)[0]
    return emb.to(comp.dtype)


@torch.no_grad()
def encode_image(comp: Components, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), using the posterior MEAN so the
    base latent is deterministic (it is encoded once and reused by tuning and editing)."""
    posterior = comp.vae.encode(pixels.to(comp.device, comp.vae.dtype)).latent_dist
    return posterior.mean * comp.scaling_factor


@torch.no_grad()
def decode_latents(comp: Components, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> (B, 3, H, W) in [-1, 1] (not clamped)."""
    return comp.vae.decode(latents.to(comp.vae.dtype) / comp.scaling_factor).sample
