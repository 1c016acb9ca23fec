"""Returns and reviews: each event's reporting period, reviewable target, and hold.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("event", sa.Column("period", sa.String(length=16), nullable=True))
    op.add_column("event", sa.Column("target", sa.String(length=200), nullable=True))
    op.add_column("event", sa.Column("held", sa.BigInteger(), nullable=True))
    # Events stored before: a KPI return's period and target are in its data.
    op.execute(
        "UPDATE event SET period = "
        + _json_text("period")
        + ", target = 'kpi.' || kpi || '.' || "
        + _json_text("period")
        + " || '.' || source WHERE type = 'org.cotn.kpi.v1'"
    )
    op.execute(
        "UPDATE event SET target = 'milestone.' || proposal || '.' || milestone "
        "WHERE type = 'org.cotn.milestone.v1'"
    )
    op.execute("UPDATE event SET period = " + _month() + " WHERE type = 'org.cotn.milestone.v1'")
    op.create_index("ix_event_target", "event", ["target", "stream_seq"])
    op.create_index("ix_event_return", "event", ["type", "source", "period", "received_at"])


def _json_text(key: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"(data ->> '{key}')"
    return f"json_extract(data, '$.{key}')"


def _month() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM')"
    return "substr(event_time, 1, 7)"


def downgrade() -> None:
    op.drop_index("ix_event_return", table_name="event")
    op.drop_index("ix_event_target", table_name="event")
    op.drop_column("event", "held")
    op.drop_column("event", "target")
    op.drop_column("event", "period")
