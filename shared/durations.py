"""Durations written as people write them in the catalogue: ``30d``, ``12h``, ``90s``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str) -> timedelta:
    """Parse ``"30d"``, ``"12h"``, ``"90s"`` or a combination such as ``"1d12h"``."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit of w, d, h, m or s")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(cleaned))
    return _positive(seconds, text)


def _positive(seconds: float, shown: object) -> timedelta:
    if not seconds > 0:
        raise ValueError(f"{shown!r} must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        # Pydantic reports only ValueError as a validation problem; anything else would crash.
        raise ValueError(f"{shown!r} is too long") from None


def format_duration(value: timedelta) -> str:
    """The shortest exact text for a duration, the inverse of :func:`parse_duration`."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        # A bare number is seconds; it must be positive like a written duration.
        return _positive(value, value)
    return value


Duration = Annotated[
    timedelta, BeforeValidator(_coerce), PlainSerializer(format_duration, return_type=str)
]
