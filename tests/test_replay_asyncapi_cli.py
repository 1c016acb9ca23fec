"""``cotn replay`` and ``cotn asyncapi``: what they print, and their failures in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.aggregator.db import upgrade
from services.cli.common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from services.cli.main import app
from shared.natsserver import free_port


@pytest.mark.parametrize("command", ["replay", "asyncapi"])
def test_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_replay_of_an_empty_log(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cotn.db'}"
    asyncio.run(upgrade(url))
    result = CliRunner().invoke(app, ["replay", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Replayed 0 events into the projections of {url} in ")


def test_replay_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    result = CliRunner().invoke(app, ["replay", "--database-url", f"sqlite:///{missing}"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr == f"cotn: error: no database at {missing}: check --database-url\n"
    assert not missing.exists()


def test_replay_without_a_database_server_is_one_line() -> None:
    url = f"postgresql://cotn:secret@127.0.0.1:{free_port()}/cotn"
    result = CliRunner().invoke(app, ["replay", "--database-url", url])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert result.stderr.startswith("cotn: error: cannot reach the database postgresql+asyncpg")
    assert "secret" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_asyncapi_documents_the_subjects(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = CliRunner().invoke(app, ["asyncapi", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(out.read_text())
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    assert {"cotn.events.>", "cotn.status.{column}.{proposal}", "cotn.dlq.{reason}"} <= addresses


def test_asyncapi_refuses_a_file_in_no_directory(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "asyncapi.yaml"
    result = CliRunner().invoke(app, ["asyncapi", "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr == f"cotn: error: cannot write {out}: no directory {out.parent}\n"
