"""The instant a person means by a date or a time: the one rule for "as at" views.

A date means the end of that day (UTC), or now for today (the read API refuses the
future); an RFC 3339 time is taken as given. ``cotn status --as-at`` and the office
board's as-at picker both use it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from datetime import time as dt_time


def instant_of(value: str, now: datetime | None = None) -> str:
    """``value`` as the read API takes it (RFC 3339); ValueError if it is neither a date
    (2026-03-01) nor an RFC 3339 time."""
    value = value.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # ValueError if not a time
        return value
    return end_of_day(day, now).isoformat().replace("+00:00", "Z")


def end_of_day(day: date, now: datetime | None = None) -> datetime:
    """The last instant of ``day`` (UTC), or ``now`` if that comes first."""
    return min(datetime.combine(day, dt_time.max, tzinfo=UTC), now or datetime.now(UTC))
