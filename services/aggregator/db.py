"""Engines, sessions and migrations for SQLite (embedded) and PostgreSQL (deployed).

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives a power cut) and a
busy timeout; SQLAlchemy's aiosqlite recipe hands transaction control back to SQLAlchemy
so that a writer can start with ``BEGIN IMMEDIATE`` and wait for the lock instead of
failing to upgrade a read snapshot. PostgreSQL goes through asyncpg with pre-ping, so a
restarted server costs one failed batch, not a broken pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.settings import async_database_url

HERE = Path(__file__).parent
ALEMBIC_INI = HERE / "alembic.ini"
MIGRATIONS = HERE / "migrations"

SQLITE_BEGIN = "cotn_sqlite_begin"
"""Execution option naming the SQLite BEGIN mode of a connection (``IMMEDIATE`` for writers)."""
WRITER_OPTIONS = {SQLITE_BEGIN: "IMMEDIATE"}
MIGRATION_LOCK_KEY = 0x636F746E  # "cotn": one PostgreSQL advisory lock for migrations


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 5000) -> AsyncEngine:
    """An async engine for ``url`` (plain ``postgresql://`` or ``sqlite://`` URLs are accepted)."""
    parsed = make_url(async_database_url(url))
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            parsed,
            pool_pre_ping=True,
            # Fail a batch fast when the server is away: it is retried, not lost.
            connect_args={"timeout": 10, "command_timeout": 60},
        )
    engine = create_async_engine(parsed)
    _configure_sqlite(engine, parsed.database, sqlite_busy_timeout_ms)
    return engine


def _configure_sqlite(engine: AsyncEngine, database: str | None, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "do_connect")
    def _make_directory(*_args: Any) -> None:
        # On first use, not when the engine is made: building the app touches nothing.
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN would start writers as readers; SQLAlchemy begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            f"busy_timeout={busy_timeout_ms}",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def session_factory(
    engine: AsyncEngine, *, writer: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; ``writer`` sessions take SQLite's write lock when they begin."""
    bind = engine.execution_options(**WRITER_OPTIONS) if writer else engine
    return async_sessionmaker(bind, class_=AsyncSession, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    """The Alembic configuration of the aggregator's migrations for ``database_url``."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates %: a password with %-escapes must reach the engine intact.
    config.set_main_option("sqlalchemy.url", async_database_url(database_url).replace("%", "%%"))
    return config


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to ``revision``; safe when several replicas start at once."""
    config = alembic_config(database_url)
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            writer = await connection.execution_options(**WRITER_OPTIONS)
            await writer.run_sync(_upgrade, config, revision)
            await writer.commit()
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together migrate one after the other; released at commit.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
