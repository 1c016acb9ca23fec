"""Alembic environment of the aggregator: targets ``SQLModel.metadata``.

Two ways in: :func:`services.aggregator.db.upgrade` passes an open connection (start-up,
tests, the CLI), or the ``alembic`` command makes its own engine from
``COTN_AGGREGATOR_DATABASE_URL`` (else ``sqlalchemy.url`` of alembic.ini).
"""

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import services.aggregator.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from services.aggregator.db import WRITER_OPTIONS, make_engine
from services.aggregator.settings import async_database_url, refuse_placeholder_database
from shared.natsauth import ENVIRONMENT_VARIABLE

config = context.config
target_metadata = SQLModel.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite alters a table by copying it: later revisions need batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_command_line() -> None:
    # The aggregator's own setting first, normalised to its async driver as the service does.
    url = os.environ.get("COTN_AGGREGATOR_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: set COTN_AGGREGATOR_DATABASE_URL")
    try:
        refuse_placeholder_database(url, os.environ.get(ENVIRONMENT_VARIABLE, "production"))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    engine = make_engine(async_database_url(url))
    try:
        async with engine.connect() as connection:
            writer = await connection.execution_options(**WRITER_OPTIONS)
            await writer.run_sync(run_migrations)
            await writer.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")

passed = config.attributes.get("connection")
if passed is not None:
    run_migrations(passed)
else:
    # Only the command line configures logging: the app's own logging must stay as it is.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(run_from_command_line())
