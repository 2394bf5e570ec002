"""PNG metadata: the A1111 `parameters` text chunk plus a JSON sidecar with the typed params.

A1111 layout (what civitai, A1111 and ComfyUI readers parse):

    <prompt>
    Negative prompt: <negative>
    Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 0, Size: 512x512, Model: ..., t0: 0.9

A file that is shared says no paths (public.py): the PNG's chunks carry names, the sidecar (which
stays on the user's disk) the full parameters ``--params`` reproduces from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .config import EditConfig
from .errors import UserError
from .fileio import atomic_write, atomic_write_json, clean_leftovers

# What A1111's readers split a "k: v, k: v" line on: sd-parsers splits it at every "," and drops
# an item with more than one ":", so no value may hold either (nor a line break). The exact
# values travel in the `unitune` chunk and the sidecar; this line is the summary tools show.
_PLAIN = str.maketrans({",": ";", ":": ";", "\n": " ", "\r": " "})


def _plain(v: Any) -> str:
    return str(v).translate(_PLAIN)


def format_parameters(params: dict[str, Any]) -> str:
    """A1111 text from an ordered dict whose first keys are prompt and negative_prompt."""
    rest = {k: v for k, v in params.items() if k not in ("prompt", "negative_prompt")}
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_plain(v)}" for k, v in rest.items() if v is not None))
    return "\n".join(lines)


def _split_kv(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        j = line.find(": ", i)
        if j < 0:
            break
        key = line[i:j].strip()
        i = j + 2
        if i < n and line[i] == '"':  # quoted value: JSON string
            dec = json.JSONDecoder()
            val, end = dec.raw_decode(line, i)
            i = end
        else:
            end = line.find(", ", i)
            end = n if end < 0 else end
            val, i = line[i:end], end
        out[key] = val
        i = line.find(", ", i)
        i = n if i < 0 else i + 2
    return out


def parse_parameters(text: str) -> dict[str, str]:
    """Inverse of format_parameters (values come back as strings)."""
    lines = text.split("\n")
    kv_line = lines[-1] if len(lines) > 1 else ""
    body = lines[:-1] if len(lines) > 1 else lines
    neg = [ln for ln in body if ln.startswith("Negative prompt: ")]
    prompt = "\n".join(ln for ln in body if not ln.startswith("Negative prompt: "))
    out = {"prompt": prompt, "negative_prompt": neg[0][len("Negative prompt: ") :] if neg else ""}
    out.update(_split_kv(kv_line))
    return out


def sidecar_path(png: str | Path) -> Path:
    return Path(png).with_suffix(".json")


def save_png(
    img: Image.Image,
    path: str | Path,
    params: dict[str, Any],
    text_params: dict[str, Any] | None = None,
    shared: dict[str, Any] | None = None,
    metadata: bool = True,
) -> Path:
    """Write PNG (atomically) with a `parameters` chunk (``text_params``, A1111's text) and a
    `unitune` chunk (``shared``: the params as they may travel, default ``params``), then its JSON
    sidecar (``params``) next to it: a sidecar never exists without its PNG (a PNG whose sidecar
    a kill prevented still carries the params in its `unitune` chunk, which ``read_sidecar``
    reads). ``metadata`` False: the PNG carries no chunk at all; the sidecar is still written.
    The first write into a folder removes the temps a killed run left there."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text("parameters", format_parameters(text_params or params))
        info.add_text("unitune", json.dumps(params if shared is None else shared))
    _clean_once(path.parent)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", pnginfo=info))
    atomic_write_json(sidecar_path(path), params)
    return path


_cleaned: set[Path] = set()


def _clean_once(folder: Path) -> None:
    key = folder.absolute()
    if key not in _cleaned:
        clean_leftovers(folder)
        _cleaned.add(key)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Full typed params of an output: the sidecar JSON, else the PNG's own `unitune` chunk."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--params {path} does not exist", "pass a PNG written by unitune edit")
    side = path if path.suffix == ".json" else sidecar_path(path)
    try:
        if side.exists():
            return json.loads(side.read_text())
        with Image.open(path) as im:
            raw = im.text.get("unitune")
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read parameters from {path} ({e})", "pass a unitune PNG") from None
    if not raw:
        raise UserError(
            f"{path} carries no unitune parameters", "pass a PNG written by unitune edit"
        )
    return json.loads(raw)


def edit_config_from_params(params: dict[str, Any]) -> tuple[str, EditConfig, str | None]:
    """(edit prompt, EditConfig, mask) recorded in an output's sidecar JSON, to reproduce it: the
    config samples the output's whole batch (``cfg.seeds``); the output is the one of
    ``params["seed"]``."""
    try:
        ec = dict(params["edit_config"])
        ec["seeds"] = tuple(ec["seeds"])
        if ec.get("size") is not None:
            ec["size"] = tuple(ec["size"])
        ec["guides"] = tuple(ec.get("guides") or ())
        return params["edit_prompt"], EditConfig(**ec), params.get("mask")
    except (KeyError, TypeError) as e:
        raise UserError(
            f"--params: the sidecar has no usable edit settings ({type(e).__name__}: {e})",
            "pass a PNG written by this version of unitune edit",
        ) from None
