"""``--guide TUNE_DIR:PROMPT:WEIGHT``: the multi-model guidance terms as data (multi.py samples
with them). Torch-free, so the CLI checks every spec, its folder and checkpoint before a model
loads."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .manifest import Manifest
from .tunefolder import TuneFolder

PRETRAINED = "pretrained"  # the TUNE_DIR naming the shared base model (./pretrained: a folder)
FORM = (
    "expected TUNE_DIR:PROMPT:WEIGHT, e.g. --guide 'tunes/style:a painting in the beikkpic "
    "style:2.5' (TUNE_DIR may be 'pretrained' or end in @STEP)"
)
_STEP = re.compile(r"^(.+)@(\d+)$")


@dataclass(frozen=True)
class GuideSpec:
    """One multi-model guidance term."""

    tune: str | None  # tune folder; None = the pretrained base model
    prompt: str  # used verbatim (no rare token added)
    weight: float  # absolute weight w_i, in the units of --cfg
    step: int | None = None  # checkpoint of the tune: None = its last, 0 = its base model

    def __str__(self) -> str:
        return format_guide(self)


def format_guide(g: GuideSpec) -> str:
    """The spec string :func:`parse_guide` reads back."""
    where = PRETRAINED if g.tune is None else g.tune
    if g.tune is not None and g.step is not None:
        where = f"{where}@{g.step}"
    return f"{where}:{g.prompt}:{g.weight!r}"


def _tune_part(text: str) -> tuple[str, int | None] | None:
    """(folder, step) if ``text`` names an existing folder, optionally with @STEP; else None."""
    if Path(text).is_dir():
        return text, None
    m = _STEP.match(text)
    if m and Path(m[1]).is_dir():
        return m[1], int(m[2])
    return None


def parse_guide(spec: str) -> GuideSpec:
    """Parse ``TUNE_DIR:PROMPT:WEIGHT``.

    WEIGHT is the text after the LAST ':' and must be a finite number. In the rest, TUNE_DIR is
    the LONGEST prefix before a ':' that names an existing folder (optionally + ``@STEP``), so
    both folder names and prompts may contain ':'; the literal ``pretrained`` before the first
    ':' means the shared base model (write ``./pretrained`` for a folder of that name). The
    prompt is everything between, verbatim (it may be empty). Bad specs raise a UserError naming
    the spec and the expected form.
    """
    if not isinstance(spec, str) or spec.count(":") < 2:
        raise UserError(f"bad --guide {spec!r}: needs two ':'", FORM)
    rest, _, wtext = spec.rpartition(":")
    try:
        weight = float(wtext)
    except ValueError:
        raise UserError(f"bad --guide {spec!r}: weight {wtext!r} is not a number", FORM) from None
    if not math.isfinite(weight):
        raise UserError(f"bad --guide {spec!r}: weight must be finite", FORM)
    head, _, tail = rest.partition(":")
    if head == PRETRAINED:
        return GuideSpec(None, tail, weight)
    cuts = [i for i, ch in enumerate(rest) if ch == ":"]
    for i in reversed(cuts):  # the longest prefix naming a folder wins
        found = _tune_part(rest[:i])
        if found is not None:
            return GuideSpec(found[0], rest[i + 1 :], weight, found[1])
    raise UserError(
        f"bad --guide {spec!r}: no existing tune folder (or 'pretrained') before a ':'", FORM
    )


def guide_strings(guides) -> tuple[str, ...]:
    """EditConfig.guides entries (spec strings or GuideSpec) as spec strings."""
    return tuple(str(g) for g in guides)


def as_spec(g: str | GuideSpec) -> GuideSpec:
    return g if isinstance(g, GuideSpec) else parse_guide(g)


def same_base(a: Manifest, b: Manifest) -> bool:
    """Two tunes of the same base model (the same reference, or paths to the same place)."""
    ra, rb = a.base_ref, b.base_ref
    if ra == rb:
        return True
    pa, pb = Path(ra), Path(rb)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_same_base(primary: TuneFolder, folder: TuneFolder, spec: str) -> None:
    if not same_base(primary.manifest, folder.manifest):
        raise UserError(
            f"--guide {spec!r}: {folder.path} was tuned from {folder.manifest.base_ref!r} but "
            f"{primary.path} from {primary.manifest.base_ref!r}",
            "every guide must share the primary tune's base model (its manifest model_path)",
        )


def check_guides(primary: TuneFolder, guides) -> list[GuideSpec]:
    """Parse every spec and check its folder, checkpoint and base model against the primary."""
    out = []
    for g in guides:
        spec = as_spec(g)
        if spec.tune is not None:
            folder = TuneFolder.open(spec.tune)
            check_same_base(primary, folder, str(g))
            folder.resolve_checkpoint(spec.step)
        out.append(spec)
    return out
