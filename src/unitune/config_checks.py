"""The one-line checks of single values that the configs' ``validate`` methods (config.py) and
the work limits (config_limits.py) are written with: a value of the wrong type, out of range or
beyond a work limit raises a UserError naming the flag and a fix. Pure: no I/O, no model."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import UserError


def _bad(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise UserError(problem, fix)


def _is_int(x: Any) -> bool:
    """An integer (bool is not one here: True is no step count)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def plain_int(x: Any) -> bool:
    """A Python int that is not a bool (a value read from JSON or argparse; numpy ints not)."""
    return isinstance(x, int) and not isinstance(x, bool)


def int_list(v: Any, n: int | None = None) -> bool:
    """A JSON list of ``n`` (any number for None) plain ints."""
    return isinstance(v, list) and (n is None or len(v) == n) and all(plain_int(x) for x in v)


def number_list(v: Any, n: int) -> bool:
    """A JSON list of ``n`` numbers (ints or floats, not bools)."""
    ok = isinstance(v, list) and len(v) == n
    return ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _finite(x: Any) -> bool:
    """A finite real number (an integer of any size, or a float that is neither NaN nor inf)."""
    if _is_int(x):
        return True
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def show_value(v: Any, width: int = 60) -> str:
    """A value for a one-line message: its repr, shortened; huge integers and lists by size."""
    if _is_int(v) and abs(int(v)) >= 10**18:
        return f"a {int(v).bit_length()}-bit integer"
    if isinstance(v, (list, tuple, dict, set)) and len(v) > 16:
        return f"a {type(v).__name__} of {len(v)} items"
    try:
        text = repr(v)
    except Exception:  # noqa: BLE001 - e.g. a repr beyond Python's int-to-text limit
        text = f"a {type(v).__name__}"
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _int(v: Any, flag: str, lo: int, hi: int, fix: str, limit: str | None = None) -> None:
    """``v`` an integer in [lo, hi]; ``limit``: the WorkLimits field that sets ``hi``."""
    if _is_int(v) and lo <= v <= hi:
        return
    why = f" (work limit {limit})" if limit and _is_int(v) and v > hi else ""
    raise UserError(f"{flag} must be an integer in [{lo}, {hi}]{why}, got {show_value(v)}", fix)


def _opt_int(v: Any, flag: str, lo: int, hi: int, fix: str, limit: str | None = None) -> None:
    if v is not None:
        _int(v, flag, lo, hi, fix, limit)


def _ints(
    v: Any,
    flag: str,
    lo: int,
    hi: int,
    fix: str,
    most: int,
    limit: str | None = None,
    count_limit: str | None = None,
) -> None:
    """``v`` a non-empty list (tuple) of at most ``most`` integers, each in [lo, hi]."""
    _bad(
        isinstance(v, (tuple, list)) and len(v) >= 1,
        f"{flag} must list at least one integer, got {show_value(v)}",
        fix,
    )
    why = f" (work limit {count_limit})" if count_limit else ""
    _bad(len(v) <= most, f"{flag} lists {len(v)} values, at most {most}{why}", fix)
    for x in v:
        if not (_is_int(x) and lo <= x <= hi):
            why = f" (work limit {limit})" if limit and _is_int(x) and x > hi else ""
            raise UserError(
                f"{flag} values must be integers in [{lo}, {hi}]{why}, got {show_value(x)}", fix
            )


def _real(
    v: Any,
    flag: str,
    fix: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    none_ok: bool = False,
) -> None:
    """``v`` a finite number with the bounds given (``none_ok``: or None)."""
    if v is None and none_ok:
        return
    ok = (
        _finite(v)
        and (ge is None or v >= ge)
        and (gt is None or v > gt)
        and (le is None or v <= le)
    )
    if ok:
        return
    if ge is not None and le is not None:
        rng = f" in [{ge:g}, {le:g}]"
    elif gt is not None and le is not None:
        rng = f" in ({gt:g}, {le:g}]"
    else:
        rng = f" >= {ge:g}" if ge is not None else f" > {gt:g}" if gt is not None else ""
    raise UserError(f"{flag} must be a number{rng}, got {show_value(v)}", fix)


def _flag(v: Any, flag: str) -> None:
    _bad(
        isinstance(v, bool), f"{flag} must be true or false, got {show_value(v)}", "pass a boolean"
    )


def _choice(v: Any, flag: str, choices: tuple, none_ok: bool = False) -> None:
    ok = (v is None and none_ok) or (isinstance(v, str) and v in choices)
    _bad(ok, f"unknown {flag} {show_value(v)}", f"use one of {', '.join(choices)}")


def _text(v: Any, flag: str, most: int, *, none_ok: bool = False, required: bool = False) -> None:
    """``v`` a string of at most ``most`` characters without NUL (``required``: not blank)."""
    if v is None and none_ok:
        return
    _bad(isinstance(v, str), f"{flag} must be text, got {show_value(v)}", "pass a string")
    _bad(not required or bool(v.strip()), f"{flag} is empty", "pass some text")
    _bad(
        len(v) <= most,
        f"{flag} is {len(v)} characters, at most {most} (work limit max_prompt_chars)",
        "shorten it",
    )
    _bad("\x00" not in v, f"{flag} contains a NUL character", "remove it")
