"""``cotn status --as-at/--known-at``: the options reach the read API as its parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.cli.status import instant

BOARD: dict[str, Any] = {
    "name": "Test",
    "status": "draft",
    "generated_at": "2026-03-01T23:59:59.999999Z",
    "as_at": "2026-03-01T23:59:59.999999Z",
    "known_at": None,
    "columns": [],
    "kpis": [],
}


def test_as_at_and_known_at_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def get(url: str, **kwargs: Any) -> httpx.Response:
        seen.append({"url": url, **kwargs})
        return httpx.Response(200, json=BOARD, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)
    result = CliRunner().invoke(
        app, ["status", "--as-at", "2026-03-01", "--known-at", "2026-03-02T09:00:00Z"]
    )
    assert result.exit_code == 0, result.output
    assert seen[0]["params"] == {
        "as_at": "2026-03-01T23:59:59.999999Z",
        "known_at": "2026-03-02T09:00:00Z",
    }
    assert "as at 2026-03-01T23:59:59.999999Z" in result.output


def test_a_bad_date_is_refused() -> None:
    result = CliRunner().invoke(app, ["status", "--as-at", "last Tuesday"])
    assert result.exit_code != 0
    assert "--as-at" in result.output


def test_today_is_now_not_its_end() -> None:
    today = datetime.now(UTC).date().isoformat()
    assert datetime.fromisoformat(instant(today, "--as-at")) <= datetime.now(UTC)
