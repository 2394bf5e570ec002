"""The limits of one request, with their defaults: :class:`WorkLimits` (how much work the CLI,
the library, `unitune batch` and the web app accept; ``SERVE_LIMITS``, the web app's tighter
ones) and :class:`Limits` (which inputs are refused outright). Re-exported by unitune.config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .config_checks import _bad, _text, show_value
from .errors import UserError


@dataclass(frozen=True)
class WorkLimits:
    """How much work one request may ask for: the CLI, the library, `unitune batch` and the web
    app refuse anything beyond these before any model loads (`unitune batch --limit KEY=VALUE`
    and `unitune serve --limit KEY=VALUE`, parsed by parse_limits, let an operator lower or
    raise them; the configs' ``validate(limits=...)`` and check_prompt apply them). The defaults
    leave every documented use in reach (the SINE patch preset's 10,000 steps, a 4K output); a
    server usually wants them tighter."""

    max_seeds: int = 64  # images of one edit (one batch: memory grows with it)
    max_seed: int = 2**32 - 1  # largest seed (A1111's and numpy's 32-bit range)
    max_grid_cells: int = 400  # checkpoints x t0s x seeds of one grid
    max_sample_steps: int = 1000  # sampling steps (a 1000-step training schedule has no more)
    max_tune_steps: int = 10_000  # fine-tuning steps (SINE's patch preset: 10,000)
    max_batch_size: int = 64  # copies of the latent per tuning step
    max_prompt_chars: int = 2000  # any prompt (the text encoders read 77-512 tokens of it)
    max_side: int = 4096  # largest output or tuning size in pixels, per side
    max_guides: int = 8  # multi-model guidance terms of one edit


def parse_limits(
    items: list[str] | tuple[str, ...] | None, base: WorkLimits | None = None
) -> WorkLimits:
    """``--limit KEY=VALUE`` items (repeatable; keys: WorkLimits' fields, dashes allowed; values:
    integers) -> the WorkLimits they set over ``base`` (default: WorkLimits()); a UserError (one
    line) otherwise."""
    names = [f.name for f in fields(WorkLimits)]
    over: dict[str, int] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        _bad(bool(sep), f"--limit {show_value(item)} is not KEY=VALUE", "e.g. --limit max_seeds=8")
        _bad(key in names, f"unknown --limit {show_value(key)}", f"use one of {', '.join(names)}")
        text = value.strip().replace("_", "")
        ok = text.isascii() and text.isdigit() and len(text) <= 30
        lo = 0 if key == "max_seed" else 1
        _bad(
            ok and int(text) >= lo,
            f"--limit {key} must be an integer >= {lo}, got {show_value(value)}",
            f"e.g. --limit {key}={getattr(WorkLimits(), key)}",
        )
        over[key] = int(text)
    return replace(base or WorkLimits(), **over)


# `unitune serve`'s work limits (ServeConfig.limits): tighter than the CLI's, as a server's users
# are not its operator; `unitune serve --limit KEY=VALUE` changes one
SERVE_LIMITS = WorkLimits(
    max_seeds=16,
    max_grid_cells=64,
    max_sample_steps=200,
    max_tune_steps=2000,
    max_batch_size=8,
    max_prompt_chars=500,
    max_side=1024,
    max_guides=0,
)


def check_prompt(
    prompt: Any,
    limits: WorkLimits = WorkLimits(),
    *,
    what: str = "the edit prompt",
    required: bool = True,
) -> str:
    """A prompt as the CLI, the library, batch and the server take it: text (not blank where
    ``required``; the library may sample the rare token alone from ""), at most
    ``limits.max_prompt_chars`` characters, no NUL; returned as is."""
    if required and (prompt is None or (isinstance(prompt, str) and not prompt.strip())):
        raise UserError(f"{what} is empty", 'describe the edit, e.g. "a cat wearing sunglasses"')
    _text(prompt, what, limits.max_prompt_chars)
    return prompt


@dataclass(frozen=True)
class Limits:
    """Input limits."""

    max_megapixels: float = 40.0  # refuse larger images (decompression bombs)
    refused_suffixes: tuple[str, ...] = field(
        default=(".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
    )  # pickle-based weight files are never loaded
