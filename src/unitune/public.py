"""What a file meant to be shared may say: names, never the user's paths.

An edit's PNG and an export travel (civitai, a chat, a model hub); the machine's folders must not
go with them. So in everything shared a local model is its folder's (or file's) name, a hub id
stays a hub id, a tune or mask is its name. The JSON sidecar beside an edit stays on the user's
disk and keeps the full values, which is what ``--params`` reads to reproduce the edit.
"""

from __future__ import annotations

import copy
from pathlib import Path, PureWindowsPath
from typing import Any

from .errors import UserError
from .guidespec import PRETRAINED, GuideSpec, format_guide, parse_guide


def public_name(ref: str | None) -> str | None:
    """A model / tune / file reference as it may be shared: the last part of a local path, a hub
    id (``org/name``, not a local folder) or a built-in name unchanged."""
    if ref is None:
        return None
    text = str(ref)
    if "\\" in text or (len(text) > 1 and text[1] == ":"):  # a Windows path
        return PureWindowsPath(text).name or text
    path = Path(text).expanduser()
    local = (
        path.is_absolute()
        or text.startswith((".", "~"))
        or path.suffix.lower() in (".safetensors", ".ckpt", ".gguf", ".png", ".jpg", ".jpeg")
        or path.exists()
    )
    return (path.resolve().name or text) if local else text


def _public_guide(spec: str) -> str:
    """A ``TUNE_DIR[@STEP]:PROMPT:WEIGHT`` spec with the folder reduced to its name."""
    try:
        g = parse_guide(spec)
    except UserError:  # the folder is gone: everything before the prompt is the folder's path
        head, _, rest = spec.partition(":")
        return f"{public_name(head)}:{rest}" if rest else spec
    tune = None if g.tune is None else public_name(g.tune)
    return format_guide(GuideSpec(tune if tune != PRETRAINED else None, g.prompt, g.weight, g.step))


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """An edit's parameters (editplan.edit_params) as its PNG carries them: the same keys, the
    model, tune, mask, guide folders and upscaler reduced to names."""
    out = copy.deepcopy(params)
    for key in ("model", "tune", "mask"):
        if out.get(key) is not None:
            out[key] = public_name(out[key])
    ec = out.get("edit_config")
    if isinstance(ec, dict):
        if ec.get("guides"):
            ec["guides"] = [_public_guide(str(g)) for g in ec["guides"]]
        if ec.get("upscaler"):
            ec["upscaler"] = public_name(ec["upscaler"])
    return out
