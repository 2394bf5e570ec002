"""The SAI model spec (github.com/Stability-AI/ModelSpec, 1.0.1) keys every LoRA and single-file
export carries in its safetensors header, the ones model browsers and loaders show: what the file
is (architecture, which key layout), its title, resolution, trigger phrase, prediction type, date.

Ids as kohya's sd-scripts writes them (library/sai_model_spec.py): the architecture of the base
model (backbones.modelspec_architecture) + ``/lora`` for a LoRA; the implementation names the
key layout: unitune's LoRAs use diffusers' module names ("diffusers"), a merged single file the
original checkpoint layout (Stability AI's generative-models; FLUX: Black Forest Labs').
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import __version__

SPEC_VERSION = "1.0.1"
IMPL_DIFFUSERS = "diffusers"
IMPL_STABILITY = "https://github.com/Stability-AI/generative-models"


def modelspec(
    spec, prov: dict[str, Any], lora: bool, date: dt.date | None = None
) -> dict[str, str]:
    """The ``modelspec.*`` keys (strings) of an export of model ``spec`` (backbones.ModelSpec)
    from tune provenance ``prov`` (export.provenance)."""
    from ..backbones import modelspec_architecture

    arch, pred = modelspec_architecture(spec)
    h, w = prov["resolution"]
    out = {
        "modelspec.sai_model_spec": SPEC_VERSION,
        "modelspec.architecture": arch + ("/lora" if lora else ""),
        "modelspec.implementation": IMPL_DIFFUSERS if lora else IMPL_STABILITY,
        "modelspec.implementation_version": f"unitune/{__version__}",
        "modelspec.title": f"{prov['tune']} (unitune, checkpoint {prov['checkpoint']})",
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.description": (
            f"A UniTune fine-tune of {prov['base_model']} on one photo ({prov['method']}, "
            f"{prov['checkpoint']} of {prov['steps']} steps): the photo is bound to "
            f"{prov['rare_token']!r}."
        ),
        "modelspec.date": (date or dt.date.today()).isoformat(),
        "modelspec.trigger_phrase": prov["rare_token"],
        "modelspec.usage_hint": f"prompt '{prov['prompt']} <your edit>', e.g. "
        f"'{prov['prompt']} wearing sunglasses'",
        "modelspec.tags": "unitune,single-image-editing,dreambooth",
    }
    if not lora:
        out["modelspec.merged_from"] = prov["base_model"]
    if pred:
        out["modelspec.prediction_type"] = pred
    if not lora and "dtype" in prov:
        out["modelspec.unet_dtype"] = prov["dtype"]
    return out
