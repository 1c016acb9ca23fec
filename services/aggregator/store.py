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
    refold,
    review_of_event_row,
    review_of_row,
    reviews_of,
    set_version,
    take_version,
    tuples,
)
from shared.kinds.review import TYPE as REVIEW
from shared.reviews import Review, holding_review

__all__ = ["NO_REFS", "BatchOutcome", "NewEvent", "record_status_change", "store_batch"]


@dataclass
class BatchOutcome:
    """What one stored batch changed."""

    persisted: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    conflicts: int = 0
    held: int = 0
    """Events kept aside by a lock (stored, never folded)."""
    dead_letters: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BatchOutcome) -> None:
        self.persisted += other.persisted
        self.held += other.held
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
    """Store a batch: events once each, conflicts and dead letters aside, projections moved;
    the store's version moved on when anything the board reads changed (an event stored,
    which a review holding or releasing others always is)."""
    outcome = BatchOutcome()
    if dead_letters:
        outcome.dead_letters = await _insert_dead_letters(session, dead_letters)
    if not events:
        return outcome
    first = _first_of_each_key(events)
    connection = await session.connection()
    # First, so the projection rows this commit writes carry its version (see take_version:
    # on PostgreSQL, stores are one at a time from here to the caller's commit).
    version = (await execute(session, take_version(backend(session).insert))).scalar_one() + 1
    targets = {e.row["target"] for e in first.values() if e.row["target"] is not None}
    if targets:
        await backend(session).serialize_returns(connection)
        reviews = await _hold_locked(session, first.values(), targets)
    inserted = await backend(session).insert_and_project(
        connection, list(first.values()), version=version
    )
    outcome.persisted = Counter(first[key].row["type"] for key in inserted)
    outcome.held = sum(1 for key in inserted if first[key].row["held"] is not None)
    reviewed = {first[key].row["target"] for key in inserted if first[key].row["type"] == REVIEW}
    for target in sorted(reviewed):
        outcome.held += await _rehold(session, target, reviews[target], version)
    repeats = [e for e in events if e.key not in inserted or first[e.key] is not e]
    if repeats:
        outcome.duplicates, outcome.conflicts = await _record_repeats(session, repeats, recorded_at)
    if inserted:
        # A review changes a lock and may take rows out of a projection: readers that
        # follow the rows' versions read the projections whole again.
        await execute(session, set_version(version, rebuilt=bool(reviewed)))
    return outcome


async def _reviews_of(session: AsyncSession, targets: Iterable[str]) -> dict[str, list[Review]]:
    """The stored reviews of ``targets``, each target's in stream order."""
    found: dict[str, list[Review]] = {t: [] for t in targets}
    if not found:
        return found
    rows = await execute(session, reviews_of(EVENT.c.target.in_(sorted(found))))
    for row in rows:
        found[row.target].append(review_of_row(row))
    return found


async def _hold_locked(
    session: AsyncSession, events: Iterable[NewEvent], targets: set[str]
) -> dict[str, list[Review]]:
    """Mark each event of a locked return ``held`` (by the approval that locks it, by stream
    order); the targets' reviews, stored and of this batch, in stream order."""
    reviews = await _reviews_of(session, targets)
    events = sorted(events, key=lambda e: e.row["stream_seq"])
    stored = {(r.source, r.event_id) for rs in reviews.values() for r in rs}
    for e in events:
        row = e.row
        if row["type"] == REVIEW and e.key not in stored:
            reviews[row["target"]].append(review_of_event_row(row))
    for rs in reviews.values():
        rs.sort(key=lambda r: r.stream_seq)
    for e in events:
        row = e.row
        if row["target"] is not None and row["type"] != REVIEW:
            holder = holding_review(reviews[row["target"]], row["stream_seq"])
            row["held"] = None if holder is None else holder.stream_seq
    return reviews


async def _rehold(
    session: AsyncSession, target: str, reviews: Sequence[Review], version: int
) -> int:
    """After a review of ``target`` is stored: hold (or release) the target's stored events
    as its reviews in stream order say, and fold again what that changed. A review stored
    after events that came later in the stream (a redelivered batch, another replica) is
    applied as if it had come in order. How many events it newly holds."""
    rows = tuples(
        await execute(
            session,
            sa.select(EVENT.c.source, EVENT.c.event_id, EVENT.c.stream_seq, EVENT.c.held).where(
                EVENT.c.target == target, EVENT.c.type != REVIEW
            ),
        )
    )
    changed: list[dict[str, Any]] = []
    newly = 0
    for source, event_id, stream_seq, held in rows:
        holder = holding_review(reviews, stream_seq)
        now_held = None if holder is None else holder.stream_seq
        if now_held != held:
            newly += held is None
            changed.append({"s": source, "i": event_id, "h": now_held})
    if not changed:
        return 0
    await execute(
        session,
        sa.update(EVENT)
        .where(EVENT.c.source == sa.bindparam("s"), EVENT.c.event_id == sa.bindparam("i"))
        .values(held=sa.bindparam("h")),
        changed,
    )
    await refold(session, EVENT.c.target == target, version=version)
    return newly


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
