"""Fixtures of the fault tests: the services as child processes, killed at teardown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from .checks import PG_ADMIN_URL
from .procs import Services


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Starts ``cotn serve`` processes for the test; any still running is killed afterwards."""
    started = Services(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def other_pg_url() -> AsyncIterator[str]:
    """A second PostgreSQL database of the test's own (``pg_url`` is the first)."""
    name = f"cotn_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
