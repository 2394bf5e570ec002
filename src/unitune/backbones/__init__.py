"""Model families: which one a ``--model`` reference is, found from its configs before any weight
loads, and the backbone that drives it (one module per family).

:func:`probe` is torch-free and cheap (it reads ``model_index.json``, or a single file's tensor
names), so the CLI refuses a wrong path, a pickle, or a family unitune does not drive, in one
line and well before anything heavy loads. :func:`load` then builds the family's backbone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import (
    DEFAULT_MODEL,
    FLUX2_DEFAULTS,
    FLUX2_KLEIN_DEFAULTS,
    FLUX_DEFAULTS,
    IF_DEFAULTS,
    IF_SR_DEFAULTS,
    QWENIMAGE_DEFAULTS,
    SD3_DEFAULTS,
    SD_DEFAULTS,
    ZIMAGE_DEFAULTS,
    Acceleration,
    Limits,
    ModelDefaults,
)
from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from .base import Backbone

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# the embedded models, shipped offline: the latent model, and the pixel cascade's two stages
SHORT_NAMES = {
    DEFAULT_MODEL: ASSETS / "world-model",
    "world-if": ASSETS / "world-if",
    "world-if-sr": ASSETS / "world-if-sr",
}
CASCADE_FILE = "unitune_cascade.json"  # in a base stage's folder: {"sr_model": its partner}


@dataclass(frozen=True)
class Family:
    """One model family: the diffusers pipeline classes that name it, and its backbone module."""

    name: str  # short id, recorded in tune manifests
    label: str  # what users call it
    pipelines: tuple[str, ...]  # model_index.json `_class_name`s of this family
    module: str | None  # backbone module under unitune.backbones; None = recognised, not driven
    kohya: str | None = None  # kohya's ss_base_model_version tag (None: no kohya LoRA layout)
    # the SAI model spec's modelspec.architecture of the family's first model (variants:
    # modelspec_architecture); "" for a model no tool ids
    modelspec: str = ""
    single_file: bool = False  # export writes its original (A1111) single-file layout
    defaults: ModelDefaults = SD_DEFAULTS  # tune and edit defaults (config_models.py)
    upscaler: bool = False  # a super-resolution stage: tuned and sampled as a cascade's --sr-model
    sr_family: str | None = None  # the family of this base stage's super-resolution models
    # the pipeline's argument that --cfg is; "true_cfg_scale" is on only with a negative prompt
    cfg_argument: str = "guidance_scale"


# (name, label, pipeline classes, backbone module); module None = recognised, refused in one line
_SD = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
_SDXL = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
_SD3 = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")
_FLUX = ("FluxPipeline", "FluxImg2ImgPipeline")
_ZIMAGE = ("ZImagePipeline", "ZImageImg2ImgPipeline")
_QWEN = ("QwenImagePipeline", "QwenImageImg2ImgPipeline")
_FLUX2, _FLUX2_KLEIN = ("Flux2Pipeline",), ("Flux2KleinPipeline",)
_IF = ("IFPipeline", "IFImg2ImgPipeline")
_IF_SR = ("IFSuperResolutionPipeline", "IFImg2ImgSuperResolutionPipeline")
# the families' tune and edit defaults: config_models.py (re-exported by config)
FAMILIES = (
    Family(
        "sd",
        "Stable Diffusion 1.x / 2.x",
        _SD,
        "sd",
        kohya="sd_v1",
        single_file=True,
        modelspec="stable-diffusion-v1",
    ),
    Family(
        "sdxl",
        "Stable Diffusion XL",
        _SDXL,
        "sdxl",
        kohya="sdxl_base_v1-0",
        single_file=True,
        modelspec="stable-diffusion-xl-v1-base",
    ),
    Family(
        "sd3",
        "Stable Diffusion 3 / 3.5",
        _SD3,
        "sd3",
        defaults=SD3_DEFAULTS,
        modelspec="stable-diffusion-3",
    ),
    Family("flux", "FLUX.1", _FLUX, "flux", defaults=FLUX_DEFAULTS, modelspec="flux-1-dev"),
    # modelspec: the ids musubi-tuner writes for FLUX.2 (its sai_model_spec.py; klein: 4b or 9b
    # by its text width, modelspec_architecture)
    Family(
        "flux2", "FLUX.2 [dev]", _FLUX2, "flux2", defaults=FLUX2_DEFAULTS, modelspec="Flux.2-dev"
    ),
    Family(
        "flux2klein",
        "FLUX.2 [klein]",
        _FLUX2_KLEIN,
        "flux2",
        defaults=FLUX2_KLEIN_DEFAULTS,
        modelspec="Flux.2-klein-4b",
    ),
    # modelspec: the id kohya's musubi-tuner writes for Z-Image (its sai_model_spec.py)
    Family("zimage", "Z-Image", _ZIMAGE, "zimage", defaults=ZIMAGE_DEFAULTS, modelspec="Z-Image"),
    # modelspec: the id musubi-tuner writes for Qwen-Image (its sai_model_spec.py)
    Family(
        "qwenimage",
        "Qwen-Image",
        _QWEN,
        "qwenimage",
        defaults=QWENIMAGE_DEFAULTS,
        modelspec="Qwen-Image",
        cfg_argument="true_cfg_scale",
    ),
    Family(
        "if",
        "DeepFloyd IF",
        _IF,
        "deepfloyd_if",
        defaults=IF_DEFAULTS,
        sr_family="if_sr",
        modelspec="deepfloyd-if",
    ),
    Family(
        "if_sr",
        "DeepFloyd IF super-resolution",
        _IF_SR,
        "deepfloyd_if",
        defaults=IF_SR_DEFAULTS,
        upscaler=True,
    ),
)
BY_NAME = {f.name: f for f in FAMILIES}


def family_of(recorded: str | None) -> Family:
    """The family a tune manifest records (tunes made before it was recorded are all SD 1.x/2.x)."""
    return BY_NAME[recorded or "sd"]


def supported() -> str:
    """The families unitune drives, with their pipeline classes, for error messages."""
    return "; ".join(f"{f.label} ({f.pipelines[0]})" for f in FAMILIES if f.module)


@dataclass(frozen=True)
class ModelSpec:
    """A model reference, resolved and recognised (no weights read)."""

    ref: str  # what load() opens: a folder, a .safetensors file or a hub id
    family: Family
    single_file: bool = False  # a single .safetensors checkpoint (configs from config_dir)
    config_dir: str | None = None  # --model-config: a diffusers folder with the configs


def resolve_model_ref(ref: str) -> str:
    """Short name -> packaged folder; refuse pickle-based weight files; keep anything else."""
    if ref in SHORT_NAMES:
        path = SHORT_NAMES[ref]
        if not (path / "model_index.json").exists():
            raise UserError(
                f"the embedded model {ref!r} is not installed at {path}",
                "reinstall unitune (pip install .) or pass --model with a diffusers model",
            )
        return str(path)
    suffix = Path(ref).suffix.lower()
    if suffix in Limits().refused_suffixes:
        raise UserError(
            f"refusing to load {ref!r}: {suffix} files are pickles that can run code when loaded",
            "convert it to .safetensors "
            "(or use a diffusers folder / hub id with safetensors weights)",
        )
    return ref


def _family_of_class(cls: str, where: str) -> Family:
    for f in FAMILIES:
        if cls in f.pipelines:
            return f
    raise UserError(
        f"{where} is a {cls}, a model family unitune does not drive",
        f"supported: {supported()}",
    )


def _index_class(folder: Path) -> str:
    try:
        return str(json.loads((folder / "model_index.json").read_text())["_class_name"])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"{folder}/model_index.json is unreadable ({type(e).__name__})",
            "pass a folder saved with diffusers' save_pretrained",
        ) from None


# tensor-name prefixes of the original (non-diffusers) single-file layouts, most specific first
_SINGLE_FILE_KEYS = (
    ("single_stream_modulation.", "flux2"),  # FLUX.2's (it has double_blocks. too)
    ("model.diffusion_model.single_stream_modulation.", "flux2"),
    ("double_blocks.", "flux"),
    ("context_refiner.", "zimage"),  # Z-Image's original transformer file (bare or ComfyUI's)
    ("model.diffusion_model.context_refiner.", "zimage"),
    ("txt_norm.", "qwenimage"),  # Qwen-Image's transformer file (diffusers' names, bare or
    ("model.diffusion_model.txt_norm.", "qwenimage"),  # under ComfyUI's prefix)
    ("model.diffusion_model.joint_blocks.", "sd3"),
    ("conditioner.embedders.1.", "sdxl"),
    ("cond_stage_model.", "sd"),
)


def _single_file_family(path: Path) -> Family:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - any failure is an unreadable file
        raise UserError(
            f"{path} is not a readable .safetensors file ({type(e).__name__})",
            "pass a model checkpoint saved as safetensors",
        ) from None
    for prefix, fam in _SINGLE_FILE_KEYS:
        if any(k.startswith(prefix) for k in keys):
            return BY_NAME[fam]
    raise UserError(
        f"{path} is not a text-to-image checkpoint unitune recognises",
        f"supported: {supported()}; or pass a diffusers folder",
    )


def _hub_class(ref: str) -> str:
    """The hub model's pipeline class from its model_index.json (cached, else one small file)."""
    from huggingface_hub import hf_hub_download

    try:
        return _index_class(Path(hf_hub_download(ref, "model_index.json")).parent)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, no access ...
        raise UserError(
            f"could not read model {ref!r} ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})",
            "check the hub id or path; offline, download the model first or use --model world",
        ) from None


def pipeline_class(ref: str, flag: str = "--model") -> tuple[str, str]:
    """(the resolved reference, its pipeline class) of a diffusers folder or hub id."""
    ref = resolve_model_ref(ref)
    path = Path(ref)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(
                f"{flag} {ref!r} is not a diffusers model folder (no model_index.json)",
                "pass a folder saved with save_pretrained, or a hub id",
            )
        return ref, _index_class(path)
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        return ref, _hub_class(ref)
    raise UserError(
        f"{flag} {ref!r} does not exist", "pass a diffusers folder or a hub id (owner/name)"
    )


def probe(ref: str, model_config: str | None = None) -> ModelSpec:
    """Resolve and recognise a ``--model`` reference from its configs; no weights are read."""
    ref = resolve_model_ref(ref)
    path = Path(ref)
    if model_config is not None and not (Path(model_config) / "model_index.json").is_file():
        raise UserError(
            f"--model-config {model_config!r} is not a diffusers model folder "
            "(no model_index.json)",
            "pass the folder of a diffusers model of the same architecture",
        )
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise UserError(
                f"model file {ref!r} does not exist", "check the path to the .safetensors"
            )
        fam = (
            _family_of_class(_index_class(Path(model_config)), f"--model-config {model_config}")
            if model_config
            else _single_file_family(path)
        )
        spec = ModelSpec(ref, fam, single_file=True, config_dir=model_config)
    elif path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(
                f"{ref!r} is not a diffusers model folder (no model_index.json)",
                "pass a folder saved with save_pretrained, a .safetensors file, or a hub id",
            )
        spec = ModelSpec(ref, _family_of_class(_index_class(path), ref))
    elif ref.count("/") == 1 and not ref.startswith((".", "/")):
        spec = ModelSpec(ref, _family_of_class(_hub_class(ref), ref))
    else:
        raise UserError(
            f"model {ref!r} does not exist",
            "pass a diffusers folder, a .safetensors file, a hub id (owner/name) or 'world'",
        )
    if spec.family.module is None:
        raise UserError(
            f"{ref!r} is a {spec.family.label} model ({spec.family.pipelines[0]}), "
            "which unitune does not drive yet",
            f"supported: {supported()}",
        )
    return spec


def sr_partner(spec: ModelSpec) -> str | None:
    """The super-resolution model a base stage's folder names (its CASCADE_FILE), or None."""
    f = Path(spec.ref) / CASCADE_FILE
    if spec.single_file or not f.is_file():
        return None
    try:
        return str(json.loads(f.read_text())["sr_model"])
    except (OSError, ValueError, KeyError):
        return None


def check_cascade(spec: ModelSpec, cascade: bool, sr_model: str | None) -> str | None:
    """The super-resolution model a tune of ``spec`` also tunes (None: none), checked before
    anything loads: an upscaler is never tuned alone, and --sr-model must be one for this family."""
    fam = spec.family
    if fam.upscaler:
        raise UserError(
            f"{spec.ref!r} is a super-resolution stage ({fam.label}): "
            "it is tuned with its cascade's base",
            f"tune the base stage and pass --sr-model {spec.ref}",
        )
    if fam.sr_family is None:
        if sr_model:
            raise UserError(
                f"--sr-model is for pixel cascades; {fam.label} has no super-resolution stage",
                "drop --sr-model",
            )
        return None
    if not cascade:
        return None
    sr_model = sr_model or sr_partner(spec)
    if sr_model is None:
        return None
    sr = probe(sr_model)
    if sr.family.name != fam.sr_family:
        raise UserError(
            f"--sr-model {sr_model!r} is a {sr.family.label} model, "
            f"not a {fam.label} super-resolution stage",
            f"pass a {BY_NAME[fam.sr_family].pipelines[0]} model",
        )
    return sr_model


def check_vae(path: str | None) -> None:
    """``--vae``: an AutoencoderKL folder (with config.json) or a .safetensors file."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() in Limits().refused_suffixes:
        raise UserError(
            f"refusing to load --vae {path!r}: a pickle",
            "pass a .safetensors file or a diffusers folder",
        )
    if (
        not (p.is_file() and p.suffix.lower() == ".safetensors")
        and not (p / "config.json").is_file()
    ):
        raise UserError(
            f"--vae {path!r} is not a VAE folder or .safetensors file",
            "pass e.g. a diffusers AutoencoderKL folder (config.json + weights)",
        )


def kohya_version(spec: ModelSpec) -> tuple[str, bool]:
    """kohya's (``ss_base_model_version``, ``ss_v2``) for a model, from its configs: SD 2.x is
    told from 1.x by its OpenCLIP text encoder (gelu activations, or OpenCLIP keys in a file)."""
    v2 = False
    if spec.family.name == "sd":
        if spec.single_file:
            from safetensors import safe_open

            with safe_open(spec.ref, framework="numpy") as f:
                v2 = any(k.startswith("cond_stage_model.model.") for k in f.keys())
        else:
            v2 = _text_encoder_act(spec.ref) == "gelu"
    return ("sd_v2" if v2 else spec.family.kohya or ""), v2


def modelspec_architecture(spec: ModelSpec) -> tuple[str, str | None]:
    """(``modelspec.architecture``, ``modelspec.prediction_type`` or None) of a model, the ids
    kohya's sd-scripts writes (library/sai_model_spec.py): SD 2.x as ``stable-diffusion-v2-512``
    or, v-prediction, ``-768-v``; FLUX.1 without a guidance embedding as ``flux-1-schnell``."""
    fam = spec.family
    arch, pred = fam.modelspec, None
    if fam.name in ("sd", "sdxl", "if"):
        v = config_value(spec, "scheduler/scheduler_config.json", "prediction_type")
        pred = "v" if v == "v_prediction" else "epsilon"
    if fam.name == "sd" and kohya_version(spec)[1]:
        arch = "stable-diffusion-v2-768-v" if pred == "v" else "stable-diffusion-v2-512"
    if (
        fam.name == "flux"
        and config_value(spec, "transformer/config.json", "guidance_embeds") is False
    ):
        arch = "flux-1-schnell"
    if fam.name == "flux2klein":  # Qwen3-8B's three stacked layers are 3 x 4096 wide (9B)
        width = config_value(spec, "transformer/config.json", "joint_attention_dim")
        arch = "Flux.2-klein-9b" if width == 3 * 4096 else fam.modelspec
    return arch, pred


def config_value(spec: ModelSpec, rel: str, key: str):
    """A value from one of the model's config files (``rel``, e.g. scheduler/scheduler_config.json)
    where it is on disk before anything loads (a folder, or --model-config), else None."""
    for root in (spec.config_dir, None if spec.single_file else spec.ref):
        path = Path(root) / rel if root else None
        if path is not None and path.is_file():
            try:
                return json.loads(path.read_text()).get(key)
            except (OSError, ValueError, AttributeError):  # unreadable, or not a JSON object
                return None
    return None


def single_file_refusal(spec: ModelSpec) -> str | None:
    """Why the model has no original single-file layout unitune writes, or None if it has one:
    families without one, and SD 2.x (its original file holds an OpenCLIP text encoder with a
    layer diffusers' weights do not have)."""
    if not spec.family.single_file:
        return f"no single-file layout for {spec.family.label}"
    if kohya_version(spec)[1]:
        return (
            "SD 2.x's original single file holds an OpenCLIP text encoder "
            "with a layer diffusers drops"
        )
    return None


def _text_encoder_act(ref: str) -> str | None:
    path = Path(ref) / "text_encoder" / "config.json"
    try:
        if not path.is_file():
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(ref, "text_encoder/config.json"))
        return json.loads(path.read_text()).get("hidden_act")
    except Exception:  # noqa: BLE001 - metadata only: unknown stays v1
        return None


def load(
    spec: ModelSpec,
    device="auto",
    dtype: torch.dtype | None = None,
    vae: str | None = None,
    offload: bool = False,
    accel: Acceleration | None = None,
) -> Backbone:
    """The family's backbone with its weights loaded (the heavy step). ``vae``: another VAE
    (folder or .safetensors); ``offload``: keep the text encoders and VAE on the CPU between
    uses (for GPUs with little memory); ``accel``: torch.compile / channels_last for the
    denoiser."""
    import importlib

    mod = importlib.import_module(f"{__name__}.{spec.family.module}")
    bb = mod.load(spec, device, dtype, vae=vae, offload=offload)
    bb.defaults = bb.model_defaults(spec.family.defaults)
    if accel is not None:
        bb.accelerate(accel)
    return bb


def load_model(
    ref: str = DEFAULT_MODEL,
    device="auto",
    dtype: torch.dtype | None = None,
    model_config: str | None = None,
    vae: str | None = None,
    offload: bool = False,
    accel: Acceleration | None = None,
) -> Backbone:
    """probe() then load(): a ``--model`` reference to a ready backbone."""
    return load(probe(ref, model_config), device, dtype, vae=vae, offload=offload, accel=accel)
