"""Storage: one module per database behind one small protocol.

:mod:`.log` holds the tables and the statements both databases share; :mod:`.sqlite` and
:mod:`.postgres` each implement :class:`Backend`, how a batch travels to that database and
how its timestamps are read. The write side (``services.aggregator.store``) and the read
side (``services.aggregator.queries``) ask :func:`backend` for the session's one;
``tests/aggregator/test_store.py`` runs the same suite against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.storage import postgres, sqlite
from services.aggregator.storage.log import Condition, NewEvent
from shared.kinds import Projection


class Backend(Protocol):
    """What differs between the databases."""

    NAME: str
    AS_AT_SETTINGS: tuple[str, ...]
    """Statements that tune the as-at read, for its transaction only."""

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ON CONFLICT (both spell it alike)."""

    def aware(self, column: sa.Column[datetime]) -> sa.ColumnElement[datetime]:
        """``column`` read in bulk as aware UTC datetimes."""

    def newest_as_at(self, projection: Projection, *where: Condition) -> sa.Select[Any]:
        """Per key of ``projection``, its newest ``event`` row among those matching
        ``where``: the state as at an instant (:func:`.log.newest_as_at`)."""

    async def serialize_returns(self, connection: AsyncConnection) -> None:
        """Make the rest of the transaction the only writer deciding which events a review
        holds (until it commits)."""

    async def insert_and_project(
        self, connection: AsyncConnection, events: Sequence[NewEvent], *, version: int
    ) -> set[tuple[str, str]]:
        """Insert-or-ignore ``events`` (one per key) and fold those inserted into every
        projection, the rows written carrying ``version``, in the caller's transaction; the
        keys of the events inserted."""


BACKENDS: dict[str, Backend] = {postgres.NAME: postgres, sqlite.NAME: sqlite}


def backend(session: AsyncSession) -> Backend:
    """The backend of the session's database."""
    return BACKENDS[session.get_bind().dialect.name]
