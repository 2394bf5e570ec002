"""User-facing errors: one line naming the problem and the fix; the CLI prints it and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. ``str(err)`` is a single line: what is wrong, and how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class UnituneWarning(UserWarning):
    """A warning meant for the user (e.g. a prompt cut at the tokenizer's limit)."""


def reason(e: BaseException) -> str:
    """An OS or decoding error's reason, in a few words (for a one-line UserError)."""
    text = getattr(e, "strerror", None) or (str(e).splitlines() or [""])[0]
    return text[:80] if text else type(e).__name__
