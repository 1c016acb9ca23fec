"""Text from events is never interpreted: markup in a note stays characters everywhere.

Notes carrying HTML, Rich markup and Markdown travel through real parts (column services,
nats-server, the aggregator on SQLite) and come back from the read API as the same JSON
strings; ``cotn status`` prints them as they are (``[bold red]x[/]`` stays those
characters). ANSI escapes never get that far: control characters are refused at the door.
The dashboards show metric labels only, and no metric label carries event text, so no
panel can render a note.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from dashboards.builders import generate
from services.aggregator.app import create_app
from services.aggregator.board import programme_view
from services.aggregator.metrics import programme_families
from services.cli import status as status_command
from services.cli.main import app as cotn
from services.ingest.metrics import UNKNOWN_AUTHORITY, IngestMetrics
from shared.catalogue import Catalogue
from shared.health import MilestoneState, ProgrammeState, programme_health
from shared.kinds.milestone import MILESTONE_STATUSES
from shared.natsserver import NatsServer
from shared.tokens import TokenStore
from tests.aggregator.harness import eventually, settings_for
from tests.ingest.support import CE_BATCH, assert_problem, milestone, running
from tests.ingest.support import settings_for as ingest_settings_for

AUTHORITY = "greater-manchester"
NOTES = {
    # proposal -> (milestone, note): one per proposal, as the board shows each one's newest.
    "1a": ("joint-position", '<script>alert("x")</script><img src=x onerror=alert(1)>'),
    "prevention": ("institute-business-case", "[bold red]x[/] and [link=https://evil.example]y[/link]"),
    "3a": ("offer-defined", "**bold** _it_ [click](https://evil.example) `code` # Heading"),
    "3b": ("network-terms", "{{ $labels.proposal }} ${column} %s %(x)s \\n {0}"),
}  # fmt: skip
COLUMN_OF = {"1a": "devolution", "prevention": "devolution", "3a": "business", "3b": "business"}


def noted(proposal: str, at: datetime) -> dict[str, Any]:
    milestone_id, note = NOTES[proposal]
    event = milestone(
        source=AUTHORITY, proposal=proposal, milestone=milestone_id, status="in_progress", at=at
    )
    event["data"]["note"] = note
    return event


async def test_notes_come_back_verbatim_and_cotn_status_prints_them_literally(
    fresh_nats: NatsServer, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = TokenStore.in_dir(tmp_path).create(AUTHORITY)[0]
    aggregator = create_app(settings_for(fresh_nats.url, sqlite_url), clock=lambda: _now())
    at = _now() - timedelta(hours=1)
    async with (
        aggregator.router.lifespan_context(aggregator),
        running(ingest_settings_for(fresh_nats.url, tmp_path, column="devolution"), token) as dev,
        running(ingest_settings_for(fresh_nats.url, tmp_path, column="business"), token) as biz,
    ):
        services = {"devolution": dev, "business": biz}
        for proposal, column in COLUMN_OF.items():
            response = await services[column].post(noted(proposal, at))
            assert response.status_code == 202, response.text
        # An ANSI escape is a control character: refused before it could reach a terminal.
        ansi = noted("1a", at)
        ansi["data"]["note"] = "\x1b[2J\x1b[31mred\x1b[0m"
        refused = await dev.post([ansi], content_type=CE_BATCH)
        assert_problem(refused, 422, "invalid")

        board = await _board_when_stored(aggregator)

    shown = {
        p["id"]: m["note"]
        for column in board["columns"]
        for p in column["proposals"]
        for m in p["milestones"]
        if m["note"]
    }
    assert shown == {proposal: note for proposal, (_, note) in NOTES.items()}

    monkeypatch.setattr(status_command, "fetch_board", lambda url, timeout: board)
    result = CliRunner().invoke(cotn, ["status"], env={"COLUMNS": "400"})

    assert result.exit_code == 0, result.output
    for _, note in NOTES.values():
        assert f'"{note}"' in result.stdout, note
    assert "\x1b" not in result.stdout


def test_a_colour_terminal_shows_markup_as_characters() -> None:
    board = _board_with_note("[bold red]x[/]")
    console = Console(width=300, force_terminal=True, color_system="truecolor", record=True)

    console.print(status_command.render_board(board))

    assert '"[bold red]x[/]"' in console.export_text()


def _now() -> datetime:
    return datetime.now(UTC)


async def _board_when_stored(aggregator: Any) -> dict[str, Any]:
    transport = httpx.ASGITransport(aggregator)
    async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as read:

        async def board() -> dict[str, Any] | None:
            answer = await read.get("/v1/programme")
            if answer.status_code == 503:  # the schema is still being migrated
                return None
            assert answer.headers["content-type"] == "application/json"
            found: dict[str, Any] = answer.json()
            notes = [m["note"] for c in found["columns"] for p in c["proposals"]
                     for m in p["milestones"] if m["note"]]  # fmt: skip
            return found if len(notes) == len(NOTES) else None

        return await eventually(board, "the noted events on /v1/programme")


def _board_with_note(note: str) -> dict[str, Any]:
    """A board as the read API returns it, from pure functions, with one note."""
    from shared.catalogue import load_catalogue

    catalogue = load_catalogue()
    now = _now()
    state = ProgrammeState(
        {("1a", "joint-position"): _state("1a", "joint-position", now, note)}, {}
    )
    view = programme_view(catalogue, programme_health(catalogue, state, now))
    return json.loads(view.model_dump_json())


def _state(proposal: str, milestone_id: str, now: datetime, note: str) -> MilestoneState:
    return MilestoneState(
        proposal, milestone_id, "in_progress", now - timedelta(days=1), AUTHORITY, "e1", note
    )


# -- the dashboards ----------------------------------------------------------------------------

PANEL_TYPES = {"row", "stat", "timeseries", "table", "gauge", "bargauge"}
"""Panels that show numbers and labels; text, HTML and news panels render markup."""
LEGEND = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


def test_no_dashboard_panel_can_render_markup() -> None:
    for name, text in generate().items():
        board = json.loads(text)
        for panel in board["panels"]:
            assert panel["type"] in PANEL_TYPES, f"{name}: {panel['title']} is a {panel['type']}"
            assert "content" not in panel.get("options", {}), f"{name}: {panel['title']}"


def test_dashboards_show_labels_that_come_from_the_catalogue(catalogue: Catalogue) -> None:
    """Every label a legend or table shows has values from the catalogue or the code."""
    shown = set()
    for text in generate().values():
        for panel in json.loads(text)["panels"]:
            for target in panel.get("targets", []):
                shown |= set(LEGEND.findall(target.get("legendFormat", "")))
    values = _label_values(catalogue)
    assert shown <= set(values) | {"__name__", "job", "instance"}, shown - set(values)


def _label_values(catalogue: Catalogue) -> dict[str, set[str]]:
    """Every value each metric label takes, from a programme whose notes are all markup."""
    now = _now()
    states = {
        (p.id, m.id): _state(p.id, m.id, now, "<b>[bold]x[/]</b>")
        for p in catalogue.proposals
        for m in p.milestones[:1]
    }
    health = programme_health(catalogue, ProgrammeState(states, {}), now)
    registry_families = list(programme_families(catalogue, health))
    metrics = IngestMetrics("business", authorities=catalogue.authority_by_id)
    registry_families += list(metrics.registry.collect())
    values: dict[str, set[str]] = {}
    for family in registry_families:
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    return values


def test_no_metric_label_carries_event_text(catalogue: Catalogue) -> None:
    values = _label_values(catalogue)
    allowed = {
        "column": set(catalogue.column_by_id),
        "proposal": set(catalogue.proposal_by_id),
        "milestone": {m.id for p in catalogue.proposals for m in p.milestones},
        "title": {p.title for p in catalogue.proposals},
        "kpi": set(catalogue.kpi_by_id),
        "authority": set(catalogue.authority_by_id) | {UNKNOWN_AUTHORITY},
        "status": set(MILESTONE_STATUSES),
    }
    for label, seen in values.items():
        assert not any("[bold]" in v or "<b>" in v for v in seen), label
        if label in allowed:
            assert seen <= allowed[label], (label, seen - allowed[label])
