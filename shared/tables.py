"""Column types of the aggregator's tables, shared with the event kinds' projections.

Timestamps are timezone-aware: stored in UTC and read back with ``tzinfo=UTC`` on every
backend (SQLite keeps no zone, so :class:`UtcDateTime` restores it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC; a naive value is refused, not guessed."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite stores text; without the offset every value compares in one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = sa.JSON().with_variant(JSONB(), "postgresql")
Id = 64
"""Longest catalogue or authority id (catalogue ids are at most 63 characters)."""


def utc(**kwargs: Any) -> Any:
    """A SQLModel field of :class:`UtcDateTime`."""
    return Field(sa_type=UtcDateTime, **kwargs)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The core table of a SQLModel table class (statements are core, not ORM)."""
    return model.__table__  # type: ignore[attr-defined]
