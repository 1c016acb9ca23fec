"""``cotn status``: the board rendered from /v1/programme, plain text kept plain, clear failures."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console
from runstack import wait_until
from typer.testing import CliRunner

from services.aggregator.board import programme_view
from services.cli.common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from services.cli.main import app
from services.cli.status import fit_board, render_board
from shared.catalogue import Catalogue
from shared.health import KpiObservation, MilestoneState, ProgrammeState, programme_health
from shared.natsserver import free_port

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MARKUP_NOTE = "[bold red]not markup[/bold red] [link=http://x]y[/link]"


def board_json(catalogue: Catalogue) -> dict[str, Any]:
    """A board as the aggregator serves it: one reported milestone with a tricky note."""
    state = ProgrammeState(
        milestones={
            ("2a", "adoption-priorities"): MilestoneState(
                "2a", "adoption-priorities", "blocked", NOW, "innovate-uk", "e1", MARKUP_NOTE
            )
        },
        kpi_observations={
            "early-stage-finance": [
                KpiObservation("early-stage-finance", "2026-Q3", 160.0, NOW, "northern-gritstone")
            ]
        },
    )
    health = programme_health(catalogue, state, NOW)
    return json.loads(programme_view(catalogue, health).model_dump_json())


def rendered(board: dict[str, Any], width: int = 200, compact: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_board(board, compact=compact))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_board_shows_columns_rag_stall_overdue_reasons_and_kpis(catalogue: Catalogue) -> None:
    text = rendered(board_json(catalogue))
    for column in catalogue.columns:
        assert f"({column.id})" in text
    assert "RED" in text and "STALLED" in text
    assert "milestone_blocked: Shared technology adoption priorities" in text
    assert "adoption-priorities" in text  # overdue since 2025-07-31
    assert "Early-stage finance raised through Northern vehicles" in text
    assert "160 GBP m (2026-Q3)" in text
    assert "OFF" in text
    assert "1 KPI off trajectory" in text


def test_text_from_events_is_never_markup(catalogue: Catalogue) -> None:
    text = rendered(board_json(catalogue), width=400)
    assert MARKUP_NOTE in text


def test_compact_board_keeps_rules_and_fits_a_small_terminal(catalogue: Catalogue) -> None:
    board = board_json(catalogue)
    compact = rendered(board, compact=True)
    assert "stalled" in compact and "milestone_blocked: adoption-priorities" in compact
    console = Console(file=io.StringIO(), width=160, height=60, color_system=None)
    assert len(console.render_lines(fit_board(console, board), pad=False)) < 60


class _BoardHandler(BaseHTTPRequestHandler):
    body: bytes = b""
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        status = 200 if self.path == "/v1/programme" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body if status == 200 else b"{}")

    def log_message(self, *args: object) -> None:
        return


@dataclass
class BoardServer:
    url: str
    requests: list[str]


@pytest.fixture
def board_server(catalogue: Catalogue) -> Iterator[BoardServer]:
    """A stand-in aggregator serving a fixed board, recording the paths asked for."""
    body = json.dumps(board_json(catalogue)).encode()
    requests: list[str] = []
    handler = type("Handler", (_BoardHandler,), {"body": body, "requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield BoardServer(f"http://127.0.0.1:{server.server_address[1]}", requests)
    server.shutdown()
    server.server_close()


def test_status_prints_the_board(board_server: BoardServer) -> None:
    result = CliRunner().invoke(app, ["status", "--url", board_server.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Diffusion of technology" in result.stdout
    assert MARKUP_NOTE in result.stdout.replace("\n", " ") or "not markup" in result.stdout


def test_status_help() -> None:
    result = CliRunner().invoke(app, ["status", "--help"])
    assert result.exit_code == 0
    assert "--watch" in result.stdout and "--url" in result.stdout


def test_status_without_an_aggregator_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["status", "--url", url])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"cotn: error: cannot reach {url}/v1/programme")


def test_status_watch_refreshes_until_interrupted(board_server: BoardServer) -> None:
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "status",
            "--watch",
            "--interval",
            "0.5",
            "--url",
            board_server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        wait_until(lambda: len(board_server.requests) >= 3, "two refreshes", timeout=20)
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    assert set(board_server.requests) == {"/v1/programme"}
    assert "Diffusion of technology" in out


def test_status_of_something_that_is_not_an_aggregator(board_server: BoardServer) -> None:
    result = CliRunner().invoke(app, ["status", "--url", board_server.url + "/nothing"])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "answered 404" in result.stderr


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1:1"])
def test_status_refuses_a_bad_url(url: str) -> None:
    result = CliRunner().invoke(app, ["status", "--url", url])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.startswith("cotn: error: invalid --url")


def test_status_refuses_a_bad_interval() -> None:
    result = CliRunner().invoke(app, ["status", "--watch", "--interval", "0"])
    assert result.exit_code == 2


@pytest.mark.parametrize("width", [80, 120])
def test_a_narrow_terminal_wraps_on_word_boundaries(catalogue: Catalogue, width: int) -> None:
    board = board_json(catalogue)
    console = Console(file=io.StringIO(), width=width, height=10_000, color_system=None)
    console.print(fit_board(console, board))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    words = set(text.split())
    proposals = [p for c in board["columns"] for p in c["proposals"]]
    # Ids, sources and rules are whole words: never "mileston" over "es", "(innovate-uk" over ",".
    for p in proposals:
        assert p["id"] in words
        for milestone in p["overdue"]:
            assert any(milestone in w for w in words), milestone
        for reason in p["reasons"]:
            assert any(w.startswith(reason["rule"] + ":") for w in words), reason["rule"]
    assert "(innovate-uk," in words
    assert "milestones:" in words
    assert MARKUP_NOTE in " ".join(text.split())
    for k in board["kpis"]:
        assert " ".join(k["title"].split()) in " ".join(text.split())
    assert all(len(line) <= width for line in text.splitlines())
    # The headline's counts stay on one line with what they count.
    rags = [p["rag"] for p in proposals]
    stalled = sum(p["stalled"] for p in proposals)
    counts = "  ".join(f"{rags.count(rag)} {rag}" for rag in ("red", "amber", "green"))
    assert f"{counts}  {stalled} stalled  1 KPI off trajectory" in text.splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_a_short_narrow_terminal_gets_one_line_each_and_cuts_nothing(
    catalogue: Catalogue, width: int
) -> None:
    """``cotn run``'s live board in a small terminal: compact, but no word cut short."""
    board = board_json(catalogue)
    console = Console(file=io.StringIO(), width=width, height=20, color_system=None)
    console.print(fit_board(console, board))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in text
    words = set(text.split())
    for p in (p for c in board["columns"] for p in c["proposals"]):
        assert p["id"] in words
        assert p["rag"].upper() in words
    flat = " ".join(text.split())
    for k in board["kpis"]:
        assert " ".join(k["title"].split()) in flat
    assert all(len(line) <= width for line in text.splitlines())
