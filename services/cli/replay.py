"""``cotn replay``: rebuild the aggregator's projections from its stored event log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    CatalogueOption,
    fail,
    open_catalogue,
)
from shared.catalogue import DEFAULT_CATALOGUE

DATABASE_ENV = "COTN_AGGREGATOR_DATABASE_URL"


def register(parent: typer.Typer) -> None:
    """Add ``cotn replay`` to the ``cotn`` app."""
    parent.command("replay")(replay)


def _existing_database(url: str) -> str:
    """The URL with its async driver; refuse a SQLite file that is not there (no silent new one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from services.aggregator.settings import async_database_url

    try:
        parsed = make_url(async_database_url(url))
    except ArgumentError as exc:
        fail(f"invalid --database-url: {exc}", EXIT_BAD_INPUT)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            fail(f"no database at {parsed.database}: check --database-url", EXIT_BAD_INPUT)
    return parsed.render_as_string(hide_password=False)


def replay(
    database_url: Annotated[
        str,
        typer.Option(envvar=DATABASE_ENV, help="The aggregator's database (SQLAlchemy URL)."),
    ] = "sqlite+aiosqlite:///.cotn/cotn.db",
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
) -> None:
    """Rebuild milestone states and KPI observations from the stored events.

    Safe while the aggregator runs; the board ends as live consumption left it.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from services.aggregator.replay import replay as replay_events

    programme = open_catalogue(catalogue)
    url = _existing_database(database_url)
    shown = make_url(url).render_as_string(hide_password=True)
    started = time.perf_counter()
    try:
        count = asyncio.run(replay_events(database_url=url, catalogue=programme))
    except (OSError, TimeoutError) as exc:
        fail(f"cannot reach the database {shown}: {exc}", EXIT_UNAVAILABLE)
    except DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        fail(f"cannot replay {shown}: {reason}", EXIT_FAILED)
    took = time.perf_counter() - started
    typer.echo(f"Replayed {count:,} events into the projections of {shown} in {took:.2f}s.")
