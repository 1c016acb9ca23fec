"""Each projection row's store version, and the last version a reader must read whole.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROJECTIONS = ("milestone_state", "kpi_observation")


def upgrade() -> None:
    for table in PROJECTIONS:
        op.add_column(
            table, sa.Column("version", sa.BigInteger(), nullable=False, server_default="0")
        )
        op.create_index(f"ix_{table}_version", table, ["version"])
    op.add_column(
        "store_version", sa.Column("rebuilt", sa.BigInteger(), nullable=False, server_default="0")
    )
    # Rows written before carry version 0: a reader's first snapshot reads them whole.
    op.execute("UPDATE store_version SET rebuilt = version")


def downgrade() -> None:
    op.drop_column("store_version", "rebuilt")
    for table in PROJECTIONS:
        op.drop_index(f"ix_{table}_version", table_name=table)
        op.drop_column(table, "version")
