"""Indexes for the state as at an instant: each key's events in event-time order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_event_milestone_time", "event", ["proposal", "milestone", "event_time", "stream_seq"]
    )
    op.create_index("ix_event_kpi_time", "event", ["kpi", "event_time", "stream_seq"])


def downgrade() -> None:
    op.drop_index("ix_event_kpi_time", table_name="event")
    op.drop_index("ix_event_milestone_time", table_name="event")
