"""Cooperative cancellation: a long loop asks, between steps, whether its caller wants it to stop.

The web app's worker runs a job inside ``cancellable(should_stop)``; the sampling loops and the
tuning loop call :func:`checkpoint` once per step, which raises :class:`Cancelled` when
``should_stop()`` says so. Why a context variable rather than a parameter: the question travels
through every layer between the worker and the loops (editor, guidance, cascade stages) without
each of them passing it on, and it is scoped: each worker thread has its own context, so one
job's cancel never reaches another's loop. Outside any scope ``checkpoint`` costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Cancelled(Exception):
    """The running work was asked to stop (not an error: nothing it wrote is incomplete)."""


_should_stop: ContextVar[Callable[[], bool] | None] = ContextVar(
    "unitune_should_stop", default=None
)


@contextmanager
def cancellable(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Run the body so that every :func:`checkpoint` inside it asks ``should_stop()``."""
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


def checkpoint() -> None:
    """Raise :class:`Cancelled` if the enclosing :func:`cancellable` scope asks to stop."""
    ask = _should_stop.get()
    if ask is not None and ask():
        raise Cancelled("cancelled")
