"""The exports over real NATS and a real database (SQLite and PostgreSQL): IATI 2.03
activities and the GMPP-style quarterly return agree with the board as at the same instant,
carry approved KPI values only, and refuse bad parameters naming them.

Returns reach the stream as a column service publishes them; the office approves one of
two KPI returns and verifies one completion through ``POST /v1/reviews``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from test_export_iati import iati_rule_violations, iati_schema

from shared.catalogue import load_catalogue
from shared.exports.gmpp import COLUMNS, ON_TRACK
from shared.exports.iati import activity_identifier
from shared.natsserver import NatsServer
from shared.periods import period_of, period_start

from .harness import Bus, Database, eventually, kpi, milestone
from .test_office import APPROVE, Office, office_at

CATALOGUE = load_catalogue()
IATI = {"i": "http://www.w3.org/XML/1998/namespace"}
QUARTER_OF_T0 = "2025-Q2"


@dataclass
class Exported:
    office: Office
    as_at: str

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.office.client.get(path, params=params)


@pytest.fixture
async def exported(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path, bus: Bus, db: Database
) -> AsyncIterator[Exported]:
    """A programme with two KPI returns of rd-boost-gva (2025-Q1 approved, 2025-Q2 not),
    1a's first milestone completed and verified, another in progress, 2a blocked."""
    async with office_at(fresh_nats.url, database_url, tmp_path) as office:
        t = datetime(2025, 7, 1, 9, tzinfo=UTC)
        await bus.publish_all(
            [
                kpi("q1", "rd-boost-gva", 1.5, "2025-Q1"),
                kpi("q2", "rd-boost-gva", 1.75, "2025-Q2", t),
                milestone("done", "1a", "joint-position", "completed"),
                milestone("going", "1a", "cluster-evidence", "in_progress", t),
                milestone("stuck", "2a", "adoption-priorities", "blocked", t),
            ]
        )
        await eventually(lambda: db.has_events(5), "the returns")
        approved = await office.review(**APPROVE)
        assert approved.status_code == 201, approved.text
        verified = await office.review(action="verify", proposal="1a", milestone="joint-position")
        assert verified.status_code == 201, verified.text
        await eventually(lambda: db.has_events(7), "the reviews stored")
        as_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        yield Exported(office, as_at)


async def test_iati_activities_validate_and_carry_approved_values_only(
    exported: Exported,
) -> None:
    answer = await exported.get("/v1/exports/iati-activities.xml", as_at=exported.as_at)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(answer.content)
    iati_schema().assertValid(root)
    assert iati_rule_violations(answer.content) == []
    assert root.get("version") == "2.03"
    acts = root.findall("iati-activity")
    assert len(acts) == len(CATALOGUE.proposals)
    # Every actual in the document is an approved value: only 2025-Q1's 1.5 is approved.
    actuals = {
        (
            a.findtext("iati-identifier"),
            p.findtext("period-start") or p.find("period-start").get("iso-date"),
            p.find("actual").get("value"),
        )
        for a in acts
        for r in a.iter("result")
        if r.get("type") != "1"
        for p in r.iter("period")
        if p.find("actual") is not None
    }
    assert {(start, float(value)) for _, start, value in actuals} == {("2025-01-01", 1.5)}
    assert b'value="1.75"' not in answer.content

    # The same answer through the board's own reading: the KPI's approved periods.
    series = (await exported.get("/v1/kpis/rd-boost-gva", as_at=exported.as_at)).json()
    assert [(p["period"], p["actual"]) for p in series["periods"] if p["approved"]] == [
        ("2025-Q1", 1.5)
    ]


async def test_the_iati_export_agrees_with_the_board_as_at_the_same_instant(
    exported: Exported,
) -> None:
    board = (await exported.get("/v1/programme", as_at=exported.as_at)).json()
    xml = (await exported.get("/v1/exports/iati-activities.xml", as_at=exported.as_at)).content
    found = {a.findtext("iati-identifier"): a for a in etree.fromstring(xml).iter("iati-activity")}
    approved: dict[str, set[tuple[str, float]]] = {}
    for k in CATALOGUE.kpis:
        series = (await exported.get(f"/v1/kpis/{k.id}", as_at=exported.as_at)).json()
        approved[k.id] = {
            (period_start(p["period"]).isoformat(), p["actual"])
            for p in series["periods"]
            if p["approved"]
        }
    for column in board["columns"]:
        for proposal in column["proposals"]:
            activity = found[activity_identifier(CATALOGUE, proposal["id"])]
            milestones = proposal["milestones"]
            # Status: not started, under way, or every milestone completed.
            done = [m for m in milestones if m["status"] == "completed"]
            started = [m for m in milestones if m["status"] != "not_started"]
            expected_status = "3" if len(done) == len(milestones) else "2" if started else "1"
            assert activity.find("activity-status").get("code") == expected_status
            assert (activity.find("activity-date[@type='4']") is not None) == (
                len(done) == len(milestones)
            )
            # Each milestone an output result, with an actual once the board says completed.
            outputs = [r for r in activity.iter("result") if r.get("type") == "1"]
            assert len(outputs) == len(milestones), proposal["id"]
            for result, m in zip(outputs, milestones, strict=True):
                actual = result.find("indicator/period/actual")
                assert (actual is not None) == (m["status"] == "completed"), m["id"]
            # Each KPI it evidences: the periods with an actual are the board's approved ones.
            kpis = [r for r in activity.iter("result") if r.get("type") != "1"]
            evidenced = [k for k in CATALOGUE.kpis if proposal["id"] in k.evidences]
            assert len(kpis) == len(evidenced)
            for result, k in zip(kpis, evidenced, strict=True):
                assert result.findtext("title/narrative") == k.title
                actuals = {
                    (
                        p.find("period-start").get("iso-date"),
                        float(p.find("actual").get("value")),
                    )
                    for p in result.iter("period")
                    if p.find("actual") is not None
                }
                assert actuals == approved[k.id], (proposal["id"], k.id)
    assert approved["rd-boost-gva"] == {("2025-01-01", 1.5)}


@pytest.mark.parametrize("which", ["past", "current"])
async def test_the_gmpp_return_agrees_with_the_board_field_by_field(
    exported: Exported, which: str
) -> None:
    """A past quarter is rated as at its last instant, the current one as at now: each row
    says what the board of that instant says."""
    now = datetime.now(UTC)
    quarter = "2025-Q3" if which == "past" else period_of(now.date(), "quarterly")
    answer = await exported.get("/v1/exports/gmpp.csv", quarter=quarter)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.count("\r\n") >= len(CATALOGUE.proposals) + 1
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert list(rows[0]) == list(COLUMNS)
    as_json = (await exported.get("/v1/exports/gmpp.json", quarter=quarter)).json()
    as_at = as_json["as_at"]
    if which == "past":
        assert as_at.startswith("2025-09-30T23:59:59")
    else:
        assert now <= datetime.fromisoformat(as_at) <= datetime.now(UTC)
    board = (await exported.get("/v1/programme", as_at=as_at)).json()
    proposals = {p["id"]: p for c in board["columns"] for p in c["proposals"]}
    assert [r["id"] for r in rows] == [p.id for p in CATALOGUE.proposals]
    for row, structured in zip(rows, as_json["rows"], strict=True):
        shown = proposals[row["id"]]
        assert row["dca"] == shown["rag"].capitalize(), row["id"]
        assert structured["dca"] == row["dca"]
        assert row["column"] == CATALOGUE.column_of[row["id"]]
        for reason in shown["reasons"]:
            if reason["rule"] == "kpi_off_trajectory":
                continue  # said without the value unless it is approved (below)
            sentence = reason["detail"][:1].upper() + reason["detail"][1:].rstrip(".")
            assert sentence in row["commentary"], (row["id"], reason)
        if not shown["reasons"]:
            assert row["commentary"] == ON_TRACK
        overdue = sorted(m["id"] for m in shown["milestones"] if m["overdue"])
        assert sorted(structured["milestones_overdue"]) == overdue, row["id"]
    # 2a's blocked milestone makes it red on the board and in the return.
    assert next(r for r in rows if r["id"] == "2a")["dca"] == "Red"
    # The only approved KPI value is rd-boost-gva's 2025-Q1, approved now: in the current
    # quarter's return, not in 2025-Q3's (as at its end nothing was approved yet). The Q2
    # value, never approved, is in neither.
    assert "1.75" not in answer.text
    shown_values = {
        (k["kpi"], k["period"], k["actual"])
        for r in as_json["rows"]
        for k in r["kpis"]
        if k["actual"] is not None
    }
    assert shown_values == (set() if which == "past" else {("rd-boost-gva", "2025-Q1", 1.5)})


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/v1/exports/iati-activities.xml", {"as_at": "2999-01-01T00:00:00Z"}, "as_at"),
        ("/v1/exports/iati-activities.xml", {"as_at": "2024-12-31T00:00:00Z"}, "as_at"),
        ("/v1/exports/iati-activities.xml", {"as_at": "yesterday"}, "as_at"),
        ("/v1/exports/iati-activities.xml", {"at": "2026-01-01T00:00:00Z"}, "at"),
        ("/v1/exports/gmpp.csv", {"quarter": "2026Q3"}, "quarter"),
        ("/v1/exports/gmpp.csv", {"quarter": "2026-Q5"}, "quarter"),
        ("/v1/exports/gmpp.csv", {"quarter": "2999-Q1"}, "quarter"),
        ("/v1/exports/gmpp.csv", {"quarter": "2024-Q4"}, "quarter"),
        ("/v1/exports/gmpp.csv", {}, "quarter"),
        ("/v1/exports/gmpp.json", {"quarter": "2025-Q3", "colour": "red"}, "colour"),
    ],
)
async def test_bad_export_parameters_are_refused_naming_them(
    exported: Exported, path: str, params: dict[str, Any], named: str
) -> None:
    answer = await exported.get(path, **params)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == [named]
