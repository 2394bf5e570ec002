"""`unitune export`'s options with their defaults (:class:`ExportConfig`), shared by the CLI and
the library (unitune.export.export). Re-exported by unitune.config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError

EXPORT_DTYPES = ("auto", "fp16", "bf16", "fp32")  # ExportConfig.dtype
# a hub repo id as huggingface_hub accepts it: [namespace/]name of letters, digits, - _ .
_REPO = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class ExportConfig:
    """How an export is written, beyond its format and place."""

    # merged: the floating dtype of the written weights; "auto" = the dtype the base model's own
    # weights are stored in (an fp16 model gives an fp16 file), fp32 when that is unknown
    dtype: str = "auto"
    # a model card (README.md, diffusers' save_model_card layout) beside a file export (also
    # with samples or push_to_hub: writes_card); folder exports always get one inside
    card: bool = False
    # edit prompts rendered at the exported checkpoint with the edit defaults for the card's
    # widget (none: the widget shows the tuned photo)
    samples: tuple[str, ...] = ()
    # a hub repo id (user/name) to upload the export and its card to; None = no upload
    push_to_hub: str | None = None
    private: bool = True  # a repo --push-to-hub creates is private (a tune shows a user's photo)

    @property
    def writes_card(self) -> bool:
        """Whether a file export gets its card: asked for, or implied (sample edits are the
        card's; a hub repo is the card's page)."""
        return self.card or bool(self.samples) or self.push_to_hub is not None

    def validate(self) -> None:
        if self.dtype not in EXPORT_DTYPES:
            raise UserError(
                f"unknown --dtype {self.dtype!r}", f"use one of {', '.join(EXPORT_DTYPES)}"
            )
        for s in self.samples:
            if not isinstance(s, str) or not s.strip():
                raise UserError("--sample needs an edit prompt", "e.g. --sample 'a cat in a hat'")
        if self.push_to_hub is not None and not _REPO.match(self.push_to_hub):
            raise UserError(
                f"--push-to-hub {self.push_to_hub!r} is not a hub repo id",
                "e.g. --push-to-hub your-name/cat-unitune",
            )
