"""The aggregator's tables: the append-only event log, its projections and its side records.

``event`` is the record: every accepted event once, unique on (source, event_id). The
projections (``milestone_state``, ``kpi_observation``) hold, per key, the newest event by
(event time, stream sequence) and can be rebuilt from ``event`` (see ``replay``).
``proposal_status`` is the last health the aggregator published per proposal.
``event_conflict`` and ``dead_letter`` keep what could not be stored as an event.
``store_version`` counts the commits that changed what the board reads.

The projections' tables are defined by their kinds (:mod:`shared.kinds`); column types,
timezone-aware timestamps among them, by :mod:`shared.tables`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

import shared.kinds  # noqa: F401  (the kinds' projection tables join SQLModel.metadata)
from shared.tables import Id, JsonDocument
from shared.tables import utc as _utc


class EventBase(SQLModel):
    """What every stored event shows, in the table and in the API."""

    source: str = Field(max_length=Id, description="The sending authority's id")
    type: str = Field(max_length=Id, description="CloudEvents type")
    column: str = Field(max_length=Id, description="Delivery column of the event's subject")
    proposal: str = Field(max_length=Id, description="Proposal the event is filed under")
    event_time: datetime = _utc(description="The event's own time (CloudEvents time)")
    received_at: datetime = _utc(description="When JetStream stored the event")
    stream_seq: int = Field(sa_type=sa.BigInteger, description="Sequence in the events stream")
    data: dict[str, Any] = Field(sa_type=JsonDocument, description="The event's data")
    extensions: dict[str, Any] | None = Field(
        default=None,
        sa_type=JsonDocument,
        description="The event's CloudEvents extension attributes, as sent; null for none",
    )


class Event(EventBase, table=True):
    """The append-only record of accepted events."""

    __tablename__ = "event"
    __table_args__ = (
        sa.Index("ix_event_stream_seq", "stream_seq"),
        sa.Index("ix_event_proposal_stream_seq", "proposal", "stream_seq"),
        # The state as at an instant: per key, the newest event up to it (queries.load_state).
        sa.Index("ix_event_milestone_time", "proposal", "milestone", "event_time", "stream_seq"),
        sa.Index("ix_event_kpi_time", "kpi", "event_time", "stream_seq"),
        # Reviews and locks: a return's events and reviews in stream order.
        sa.Index("ix_event_target", "target", "stream_seq"),
        # Completeness: per reporter and period, the first return received.
        sa.Index("ix_event_return", "type", "source", "period", "received_at"),
    )

    source: str = Field(primary_key=True, max_length=Id)
    event_id: str = Field(primary_key=True, max_length=256)
    milestone: str | None = Field(default=None, max_length=Id)
    kpi: str | None = Field(default=None, max_length=Id)
    period: str | None = Field(
        default=None, max_length=16, description="The reporting period a return is for"
    )
    target: str | None = Field(
        default=None, max_length=200, description="The reviewable return it is of (shared.reviews)"
    )
    held: int | None = Field(
        default=None,
        sa_type=sa.BigInteger,
        description="Kept aside: the stream sequence of the approval that locked its return",
    )
    digest: str = Field(max_length=64, description="SHA-256 of the canonical event")


class EventPublic(EventBase):
    """One event of the audit trail as the read API returns it."""

    id: str = Field(description="The event's id, unique per source")
    kept_aside: bool = Field(
        default=False,
        description="Kept aside by a lock: accepted before the approval or verification of "
        "its return reached the column service, stored, never applied (GET /v1/reviews "
        "names the lock)",
    )


class ProposalStatus(SQLModel, table=True):
    """The health last published for each proposal; ``version`` counts its changes."""

    __tablename__ = "proposal_status"

    proposal: str = Field(primary_key=True, max_length=Id)
    column: str = Field(max_length=Id)
    rag: str | None = Field(default=None, max_length=8)
    stalled: bool | None = None
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_type=JsonDocument)
    changed_at: datetime = _utc()
    version: int = 0


class StoreVersion(SQLModel, table=True):
    """One row counting the commits that changed what the board reads (the log, its
    projections, which events are held): the read side rebuilds its snapshot when it moves."""

    __tablename__ = "store_version"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = Field(default=0, sa_type=sa.BigInteger)
    rebuilt: int = Field(
        default=0,
        sa_type=sa.BigInteger,
        description="The last version whose commit may have taken rows out of a projection "
        "or changed a lock (a review stored, a replay): a reader that follows the "
        "projections by their rows' versions reads them whole again past it",
    )


class EventConflict(SQLModel, table=True):
    """An event whose (source, id) was already stored with a different payload."""

    __tablename__ = "event_conflict"
    __table_args__ = (
        sa.UniqueConstraint("source", "event_id", "digest", name="uq_event_conflict_payload"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=Id)
    event_id: str = Field(max_length=256)
    digest: str = Field(max_length=64)
    stream_seq: int = Field(sa_type=sa.BigInteger)
    first_stream_seq: int = Field(
        sa_type=sa.BigInteger, description="Stream sequence of the event that was kept"
    )
    type: str = Field(max_length=Id)
    event_time: datetime = _utc()
    data: dict[str, Any] = Field(sa_type=JsonDocument)
    received_at: datetime = _utc()
    recorded_at: datetime = _utc()


class DeadLetter(SQLModel, table=True):
    """A message that can never be stored as an event, kept as it arrived."""

    __tablename__ = "dead_letter"
    __table_args__ = (sa.UniqueConstraint("stream_seq", "digest", name="uq_dead_letter_message"),)

    id: int | None = Field(default=None, primary_key=True)
    reason: str = Field(max_length=32)
    detail: str = Field(sa_type=sa.Text)
    stream_seq: int = Field(sa_type=sa.BigInteger)
    subject: str = Field(sa_type=sa.Text)
    payload: bytes = Field(sa_type=sa.LargeBinary)
    headers: dict[str, str] = Field(default_factory=dict, sa_type=JsonDocument)
    digest: str = Field(max_length=64, description="SHA-256 of the raw payload")
    received_at: datetime = _utc(description="When JetStream stored the message")
    recorded_at: datetime = _utc()
