"""The write side: store a batch of events, its repeats and dead letters; record a status.

Writes are set-wise core statements, never an ORM object per event: one insert-or-ignore
for the batch's events, then one upsert per projection that folds exactly the events the
insert added, newest per key by (event time, stream sequence), and whose WHERE keeps a
stored row that is newer, so a late backfill, a redelivery or a second replica never
overwrites a newer status. The projections are computed by the database from the stored
rows, as ``replay`` computes them, never row by row in Python. How a batch travels is the
database's own: see :mod:`services.aggregator.storage`. The caller owns the transaction: it
commits, then acknowledges the messages.

Every function takes keyword arguments only and leaves committing to the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.storage import backend
from services.aggregator.storage.log import (
    CONFLICT,
    DEAD_LETTER,
    EVENT,
    NO_REFS,
    PROPOSAL_STATUS,
    NewEvent,
    execute,
)

__all__ = ["NO_REFS", "BatchOutcome", "NewEvent", "record_status_change", "store_batch"]


@dataclass
class BatchOutcome:
    """What one stored batch changed."""

    persisted: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    conflicts: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BatchOutcome) -> None:
        self.persisted += other.persisted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.dead_letters += other.dead_letters


async def store_batch(
    *,
    session: AsyncSession,
    events: Sequence[NewEvent],
    dead_letters: Sequence[dict[str, Any]] = (),
    recorded_at: datetime,
) -> BatchOutcome:
    """Store a batch: events once each, conflicts and dead letters aside, projections moved."""
    outcome = BatchOutcome()
    if dead_letters:
        outcome.dead_letters = await _insert_dead_letters(session, dead_letters)
    if not events:
        return outcome
    first = _first_of_each_key(events)
    connection = await session.connection()
    inserted = await backend(session).insert_and_project(connection, list(first.values()))
    outcome.persisted = Counter(first[key].row["type"] for key in inserted)
    repeats = [e for e in events if e.key not in inserted or first[e.key] is not e]
    if repeats:
        outcome.duplicates, outcome.conflicts = await _record_repeats(session, repeats, recorded_at)
    return outcome


def _first_of_each_key(events: Iterable[NewEvent]) -> dict[tuple[str, str], NewEvent]:
    first: dict[tuple[str, str], NewEvent] = {}
    for e in events:
        first.setdefault(e.key, e)
    return first


async def _record_repeats(
    session: AsyncSession, repeats: Sequence[NewEvent], recorded_at: datetime
) -> tuple[int, int]:
    """Split events already stored into duplicates and conflicts; record new conflicts."""
    keys = sorted({e.key for e in repeats})
    stored = {
        (row.source, row.event_id): row
        for row in await execute(
            session,
            sa.select(EVENT.c.source, EVENT.c.event_id, EVENT.c.digest, EVENT.c.stream_seq).where(
                sa.tuple_(EVENT.c.source, EVENT.c.event_id).in_(keys)
            ),
        )
    }
    conflicts = [
        _conflict_row(e, stored[e.key].stream_seq, recorded_at)
        for e in repeats
        if stored[e.key].digest != e.row["digest"]
    ]
    recorded = 0
    if conflicts:
        stmt = (
            backend(session)
            .insert(CONFLICT)
            .on_conflict_do_nothing(index_elements=["source", "event_id", "digest"])
            .returning(CONFLICT.c.id)
        )
        recorded = len((await execute(session, stmt, conflicts)).all())
    return len(repeats) - len(conflicts), recorded


def _conflict_row(event: NewEvent, first_stream_seq: int, recorded_at: datetime) -> dict[str, Any]:
    row = event.row
    return {
        "source": row["source"],
        "event_id": row["event_id"],
        "digest": row["digest"],
        "stream_seq": row["stream_seq"],
        "first_stream_seq": first_stream_seq,
        "type": row["type"],
        "event_time": row["event_time"],
        "data": row["data"],
        "received_at": row["received_at"],
        "recorded_at": recorded_at,
    }


async def _insert_dead_letters(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> Counter[str]:
    stmt = (
        backend(session)
        .insert(DEAD_LETTER)
        .on_conflict_do_nothing(index_elements=["stream_seq", "digest"])
        .returning(DEAD_LETTER.c.reason)
    )
    return Counter(reason for (reason,) in await execute(session, stmt, rows))


async def record_status_change(
    *,
    session: AsyncSession,
    proposal: str,
    column: str,
    rag: str,
    stalled: bool,
    reasons: list[dict[str, Any]],
    changed_at: datetime,
) -> int | None:
    """Make (rag, stalled) the proposal's status if it differs; the new version, else None.

    The row decides between replicas: only the transaction whose UPDATE matched publishes.
    """
    await execute(
        session,
        backend(session)
        .insert(PROPOSAL_STATUS)
        .values(proposal=proposal, column=column, reasons=[], changed_at=changed_at, version=0)
        .on_conflict_do_nothing(index_elements=["proposal"]),
    )
    table = PROPOSAL_STATUS
    result = await execute(
        session,
        sa.update(table)
        .where(
            table.c.proposal == proposal,
            sa.or_(table.c.rag.is_distinct_from(rag), table.c.stalled.is_distinct_from(stalled)),
        )
        .values(
            column=column,
            rag=rag,
            stalled=stalled,
            reasons=reasons,
            changed_at=changed_at,
            version=table.c.version + 1,
        )
        .returning(table.c.version),
    )
    return result.scalar_one_or_none()
