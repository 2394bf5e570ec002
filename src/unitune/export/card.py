"""The model card that goes with an export: README.md in huggingface_hub's ModelCard format, its
YAML block what the hub reads (base_model, instance_prompt, widget, tags, library), as diffusers'
DreamBooth-LoRA ``save_model_card`` writes it (ModelCard.from_template + populate_model_card),
with the text a user needs: what the tune is, the trigger, and how to load the file in diffusers,
ComfyUI and A1111. The widget shows sample edits rendered at the exported checkpoint with the
edit defaults (``--sample PROMPT``), else the tuned photo itself."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import EditConfig
from ..config_export import ExportConfig
from ..editplan import slug
from ..fileio import atomic_write, atomic_write_text

TEMPLATE = """---
{{ card_data }}
---

{{ model_description }}
"""

_LOAD = {
    "lora": """## Use it

Trigger: every prompt starts with `{rare}`, e.g. `{prompt} wearing sunglasses`.

**diffusers**

```python
import torch
from diffusers import AutoPipelineForText2Image

pipe = AutoPipelineForText2Image.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")
pipe.load_lora_weights("{here}"{weight_arg})
image = pipe("{prompt} wearing sunglasses").images[0]
```

**ComfyUI**: copy `{file}` into `models/loras/` and add a *Load LoRA* node after the checkpoint
loader ({base}); strength 1.

**A1111 / Forge**: copy `{file}` into `models/Lora/` as `{name}.safetensors` and add
`<lora:{name}:1>` to the prompt.
""",
    "merged": """## Use it

Trigger: every prompt starts with `{rare}`, e.g. `{prompt} wearing sunglasses`.

**diffusers**

```python
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{here}", torch_dtype=torch.float16).to("cuda")
image = pipe("{prompt} wearing sunglasses").images[0]
```
{single}""",
}
_SINGLE = """
**ComfyUI**: copy `{file}` into `models/checkpoints/` and pick it in *Load Checkpoint*.

**A1111 / Forge**: copy `{file}` into `models/Stable-diffusion/` and select it.
"""


def write_card(
    where: Path,
    plan,
    prov: dict[str, Any],
    fmt: str,
    weight_name: str | None,
    cfg: ExportConfig,
    device: str = "cpu",
) -> list[Path]:
    """Write README.md (and its widget's images under images/) into folder ``where``; returns
    the paths written. ``weight_name``: the exported file's name (None: a diffusers folder)."""
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    images = where / "images"
    images.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    widget = []
    for prompt, img in _widget_images(plan, prov, cfg, device):
        path = images / f"{slug(prompt)}.png"
        atomic_write(path, lambda tmp, im=img: im.save(tmp, format="PNG"))
        written.append(path)
        widget.append({"text": prompt, "output": {"url": f"images/{path.name}"}})
    lora = fmt != "merged"
    base = prov["base_model"]
    hub = _hub_id(base)
    here = "." if weight_name is None else "path/to/this/folder"
    text = _LOAD["lora" if lora else "merged"].format(
        rare=prov["rare_token"],
        prompt=prov["prompt"],
        base=base if hub else f"path/to/{base}",
        here=here,
        weight_arg=f', weight_name="{weight_name}"' if weight_name else "",
        file=weight_name or "",
        name=prov["name"],
        single=_SINGLE.format(file=weight_name) if weight_name else "",
    )
    kind = "LoRA" if lora else "merged model"
    link = f"[{base}](https://huggingface.co/{base})" if hub else f"`{base}`"
    description = (
        f"# {prov['tune']}: a unitune {kind}\n\n"
        f"A fine-tune of {link} on one photo by unitune (UniTune, Valevski et al. 2022): the "
        f"photo is bound to the rare token `{prov['rare_token']}`, so "
        f"`{prov['prompt']} <an edit>` samples the photo with the edit.\n\n"
        f"- tune: {prov['method']}, checkpoint {prov['checkpoint']} of {prov['steps']} steps, "
        f"learning rate {prov['learning_rate']:g}, {prov['resolution'][1]}x"
        f"{prov['resolution'][0]} px\n"
        f"- format: `{fmt}`"
        + (f" (`{weight_name}`)" if weight_name else "")
        + "\n"
        + (
            f"- compressed from a full tune at rank {prov['extracted_rank']}\n"
            if "extracted_rank" in prov
            else ""
        )
        + "\n"
        + text
        + "\nTo edit the photo itself (starting from it, keeping what the edit does not touch), "
        'use the tune folder with unitune: `unitune edit TUNE "<edit>"`.\n'
    )
    data = ModelCardData(
        license=None,
        library_name="diffusers",
        base_model=base if hub else None,  # the hub checks that it names a repo
        instance_prompt=prov["prompt"],
        widget=widget,
    )
    card = ModelCard.from_template(
        card_data=data, template_str=TEMPLATE, model_description=description
    )
    tags = ["text-to-image", "diffusers", "unitune", "template:sd-lora" if lora else "merged"]
    tags += ["lora"] if lora else []
    card = populate_model_card(card, tags=tags)
    readme = where / "README.md"
    atomic_write_text(readme, str(card))
    return [readme, *written]


def _hub_id(ref: str) -> bool:
    """Whether a (public) model name is a hub repo id: owner/name, not a local folder's name."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", ref))


def _widget_images(plan, prov: dict[str, Any], cfg: ExportConfig, device: str):
    """(caption, PIL image) of the widget: the sample edits, else the photo the tune learned."""
    from PIL import Image

    if not cfg.samples:
        with Image.open(plan.folder.path / "base.png") as im:
            yield prov["prompt"], im.convert("RGB")
        return
    from ..edit import Editor

    ed = Editor(plan.folder.path, device)
    ec = replace(EditConfig(), checkpoint=plan.step, seeds=(0,))
    for prompt in cfg.samples:
        res = ed.edit(prompt, ec, progress=False)
        yield ed.full_prompt(prompt, ec), res.images[0]
