"""Reporting periods: a year (``2025``), a quarter (``2025-Q3``) or a month (``2025-07``)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Literal

Frequency = Literal["monthly", "quarterly", "annual"]

PERIOD_PATTERN = r"^\d{4}(-Q[1-4]|-(0[1-9]|1[0-2]))?$"


def period_start(period: str) -> date:
    """The first day a period covers: ``2025`` -> 2025-01-01, ``2025-Q3`` -> 2025-07-01."""
    end = period_end(period)
    if len(period) == 4:
        return date(end.year, 1, 1)
    months = 3 if period[5] == "Q" else 1
    return date(end.year, end.month - months + 1, 1)


@lru_cache(maxsize=65536)
def period_end(period: str) -> date:
    """The last day a period covers: ``2025`` -> 2025-12-31, ``2025-Q3`` -> 2025-09-30.

    Cached: rating reads each KPI period once per rating and per report."""
    if not re.fullmatch(PERIOD_PATTERN, period):
        raise ValueError(f"{period!r} is not a year, quarter or month")
    year = int(period[:4])
    if len(period) == 4:
        return date(year, 12, 31)
    if period[5] == "Q":
        month = int(period[6]) * 3
    else:
        month = int(period[5:7])
    if month == 12:
        return date(year, 12, 31)
    return date.fromordinal(date(year, month + 1, 1).toordinal() - 1)


def frequency_of(period: str) -> Frequency:
    """``2025`` -> annual, ``2025-Q3`` -> quarterly, ``2025-07`` -> monthly."""
    if len(period) == 4:
        return "annual"
    return "quarterly" if period[5] == "Q" else "monthly"


_FINENESS = {"annual": 0, "quarterly": 1, "monthly": 2}


def coarser(period: str, frequency: Frequency) -> bool:
    """Whether ``period`` spans more than one period of ``frequency`` (a year, for quarters)."""
    return _FINENESS[frequency_of(period)] < _FINENESS[frequency]


def period_of(day: date, frequency: Frequency) -> str:
    """The period of ``frequency`` that ``day`` falls in."""
    if frequency == "annual":
        return f"{day.year:04d}"
    if frequency == "quarterly":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}-{day.month:02d}"


def month_of(instant: datetime) -> str:
    """The month (UTC) an instant falls in: the period a progress event is stored under."""
    return period_of(instant.astimezone(UTC).date(), "monthly")


def within(period: str, frequency: Frequency) -> str | None:
    """The period of ``frequency`` that ``period`` lies in (``2025-07`` -> ``2025-Q3``), or
    None when ``period`` is coarser than ``frequency``."""
    if coarser(period, frequency):
        return None
    return period_of(period_start(period), frequency)
