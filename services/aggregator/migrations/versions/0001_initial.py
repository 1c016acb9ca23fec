"""The event log, its projections, proposal status, conflicts and dead letters.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _id(name: str, length: int = 64, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _newest_by() -> list[sa.Column]:
    """What orders the events of a projection key: event time, then stream sequence."""
    return [
        sa.Column("event_time", TIMESTAMP, nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        _id("source"),
        _id("event_id", 256),
    ]


def upgrade() -> None:
    op.create_table(
        "event",
        _id("source"),
        _id("event_id", 256),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        _id("type"),
        _id("column"),
        _id("proposal"),
        _id("milestone", nullable=True),
        _id("kpi", nullable=True),
        sa.Column("event_time", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("source", "event_id"),
    )
    op.create_index("ix_event_stream_seq", "event", ["stream_seq"])
    op.create_index("ix_event_proposal_stream_seq", "event", ["proposal", "stream_seq"])

    op.create_table(
        "milestone_state",
        _id("proposal"),
        _id("milestone"),
        sa.Column("status", sa.String(32), nullable=False),
        *_newest_by(),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("proposal", "milestone"),
    )
    op.create_table(
        "kpi_observation",
        _id("kpi"),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        *_newest_by(),
        sa.PrimaryKeyConstraint("kpi", "period"),
    )
    op.create_table(
        "proposal_status",
        _id("proposal"),
        _id("column"),
        sa.Column("rag", sa.String(8), nullable=True),
        sa.Column("stalled", sa.Boolean(), nullable=True),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("changed_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("proposal"),
    )
    op.create_table(
        "event_conflict",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _id("source"),
        _id("event_id", 256),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_stream_seq", sa.BigInteger(), nullable=False),
        _id("type"),
        sa.Column("event_time", TIMESTAMP, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "event_id", "digest", name="uq_event_conflict_payload"),
    )
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stream_seq", "digest", name="uq_dead_letter_message"),
    )


def downgrade() -> None:
    for table in (
        "dead_letter",
        "event_conflict",
        "proposal_status",
        "kpi_observation",
        "milestone_state",
        "event",
    ):
        op.drop_table(table)
