"""The defaults that depend on the model: one frozen :class:`ModelDefaults` per family and
variant (README "Models"). ``backbones.FAMILIES`` names each family's, a backbone may pick a
variant's (FLUX.1-schnell); a ``None`` in TuneConfig / EditConfig means "this model's" and
``for_model`` fills it in from these. Re-exported by unitune.config."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelDefaults:
    """The tune and edit defaults of one model family. The values here are Stable Diffusion's
    (1.x / 2.x / XL and the embedded model); the other families' are below."""

    tune_method: str = "full"  # UniTune §3.2 fine-tunes the whole denoiser
    lora_rank: int = 16  # LoRA rank when method is lora
    lr_full: float = 1e-4  # learning rate of a full tune (paper: Adafactor 1e-4)
    lr_lora: float = 3e-4  # learning rate of a LoRA tune
    timestep_density: str = "uniform"  # training timesteps: uniform, or logit-normal in sigma
    cfg: float = 7.5  # guidance weight (SD's usual default; paper: 32 on Imagen)
    steps: int = 50  # sampling steps
    sampler: str = "ddim"  # the model's own single-step sampler


# Stable Diffusion 1.x / 2.x / XL and the embedded model: the fields' defaults
SD_DEFAULTS = ModelDefaults()
# The rectified-flow transformers (2-12 B parameters) tune LoRA adapters by default. Rates: full
# 1e-4, the default of diffusers' train_dreambooth_sd3.py / _flux.py; LoRA 4e-4, the rate of the
# SD3 LoRA example in diffusers' README_sd3.md (its scripts default to 1e-4 over 500 steps; one
# UniTune run is 128). SD3 draws training sigmas logit-normally as train_dreambooth_lora_sd3.py
# does, FLUX uniformly as train_dreambooth_lora_flux.py; guidance and steps are the pipelines'
# defaults (StableDiffusion3Pipeline: CFG 7.0, 28 steps; FluxPipeline: distilled guidance 3.5,
# 28 steps) with the flow-matching Euler step.
_FLOW = ModelDefaults(tune_method="lora", lr_full=1e-4, lr_lora=4e-4, steps=28, sampler="euler")
SD3_DEFAULTS = replace(_FLOW, timestep_density="logit_normal", cfg=7.0)
FLUX_DEFAULTS = replace(_FLOW, timestep_density="uniform", cfg=3.5)
# FLUX.1-schnell (no guidance input): timestep-distilled for 4 steps, and --cfg has no effect
FLUX_SCHNELL_DEFAULTS = replace(FLUX_DEFAULTS, steps=4, cfg=0.0)
# Z-Image: LoRA on the attention at 1e-4 and uniform timesteps, train_dreambooth_lora_z_image.py's
# defaults (learning_rate 1e-4, weighting_scheme "none"; README_z_image.md's examples use 1e-4
# too); CFG 5.0 over 50 steps, ZImagePipeline's defaults (--cfg is its guidance_scale). Turbo is
# distilled: its pipeline docstring samples --cfg 0 --steps 8.
ZIMAGE_DEFAULTS = replace(_FLOW, lr_lora=1e-4, cfg=5.0, steps=50)
# Qwen-Image: LoRA on the image stream's attention at 1e-4 with uniform timesteps,
# train_dreambooth_lora_qwen_image.py's defaults (learning_rate 1e-4, weighting_scheme "none");
# CFG 4.0 over 50 steps, QwenImagePipeline's defaults (--cfg is its true_cfg_scale)
QWENIMAGE_DEFAULTS = replace(_FLOW, lr_lora=1e-4, cfg=4.0, steps=50)
# FLUX.2: LoRA at 1e-4 with uniform timesteps, train_dreambooth_lora_flux2.py / _flux2_klein.py's
# defaults (learning_rate 1e-4, weighting_scheme "none"); 50 steps at guidance 4.0, the
# pipelines' defaults ([dev]: Flux2Pipeline's embedded guidance_scale; [klein] base:
# Flux2KleinPipeline's CFG scale). The step-distilled [klein] models sample in 4 steps without
# CFG (their model cards; the pipeline skips CFG when is_distilled)
FLUX2_DEFAULTS = replace(_FLOW, lr_lora=1e-4, cfg=4.0, steps=50)
FLUX2_KLEIN_DEFAULTS = FLUX2_DEFAULTS
FLUX2_KLEIN_DISTILLED_DEFAULTS = replace(FLUX2_KLEIN_DEFAULTS, steps=4, cfg=1.0)
# DeepFloyd IF: UniTune's own recipe (full tune, Adafactor 1e-4; LoRA at SD's rate); sampling as
# the pipelines do by default: IFPipeline CFG 7.0 over 100 DDPM steps with learned variances;
# the super-resolution stage IFSuperResolutionPipeline's CFG 4.0 over 50 steps.
IF_DEFAULTS = ModelDefaults(cfg=7.0, steps=100, sampler="ddpm")
IF_SR_DEFAULTS = ModelDefaults(cfg=4.0, steps=50, sampler="ddpm")
