"""The authorisation matrix of the column services, as a table.

Each row is (the token's authority, the event's source, what it reports, the column service
it is posted to) -> the status and the field the refusal names. Every kind of authority the
catalogue knows is in the table (combined authority, strategic authority, body), as the
author of accepted events and of each kind of refusal. The three column services run
in-process on the session's nats-server with one token file; an accepted event must land on
its own column's subject.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bus import MSG_ID_HEADER
from shared.catalogue import Catalogue
from shared.natsserver import NatsServer
from shared.tokens import TokenStore
from tests.ingest.support import CE_JSON, StreamProbe, probe_of, running, settings_for

COLUMNS = ("collaboration", "devolution", "business")
KIND = {
    "greater-manchester": "combined_authority",
    "liverpool-city-region": "combined_authority",
    "lancashire": "strategic_authority",
    "cumbria": "strategic_authority",
    "innovate-uk": "body",
    "nhsa": "body",
    "np11": "body",
    "northern-gritstone": "body",
}
REVOKED = "revoked"
UNKNOWN = "unknown"
NONE = "none"


@dataclass(frozen=True)
class Case:
    """One row: a token posts an event to a column service."""

    token: str
    """An authority id, or REVOKED, UNKNOWN or NONE."""
    source: str
    reports: str
    """``<proposal>/<milestone>`` or ``kpi:<id>``."""
    column: str
    status: int
    field: str | None = None
    """The field the refusal names (None for 202 and 401)."""
    names: str | None = None
    """Text the reason must contain (the right column for a 422)."""


def row(case_id: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=case_id)


MATRIX = [
    # -- own source, a partner (or reporter), its own column: accepted ------------------------
    row("combined-milestone", "greater-manchester", "greater-manchester", "1a/joint-position",
        "devolution", 202),
    row("combined-kpi", "liverpool-city-region", "liverpool-city-region", "kpi:exports",
        "business", 202),
    row("strategic-milestone", "lancashire", "lancashire", "2a/adoption-priorities",
        "collaboration", 202),
    row("strategic-gamechanger", "cumbria", "cumbria", "ai-cluster/entry-point",
        "collaboration", 202),
    row("body-milestone", "innovate-uk", "innovate-uk", "2a/innovate-uk-agreement",
        "collaboration", 202),
    row("body-gamechanger", "nhsa", "nhsa", "prevention/institute-business-case",
        "devolution", 202),
    row("body-kpi", "northern-gritstone", "northern-gritstone", "kpi:early-stage-finance",
        "collaboration", 202),
    row("body-kpi-two-proposals", "np11", "np11", "kpi:life-sciences-jobs", "devolution", 202),
    # -- a source other than the token's authority: 403 source --------------------------------
    row("combined-other-source", "greater-manchester", "liverpool-city-region",
        "1a/joint-position", "devolution", 403, "source"),
    row("strategic-other-source", "lancashire", "cumbria", "3a/offer-defined", "business", 403,
        "source"),
    row("body-other-source", "nhsa", "np11", "kpi:life-sciences-gva", "devolution", 403,
        "source"),
    # -- not a partner of the proposal: 403 data.proposal --------------------------------------
    row("body-not-partner", "northern-gritstone", "northern-gritstone", "1a/joint-position",
        "devolution", 403, "data.proposal"),
    row("body-not-partner-gamechanger", "nhsa", "nhsa", "ai-cluster/entry-point",
        "collaboration", 403, "data.proposal"),
    row("body-not-partner-business", "innovate-uk", "innovate-uk", "3b/network-terms",
        "business", 403, "data.proposal"),
    # -- not a reporter of the KPI: 403 data.kpi -------------------------------------------
    row("combined-not-reporter", "greater-manchester", "greater-manchester",
        "kpi:life-sciences-jobs", "devolution", 403, "data.kpi"),
    row("strategic-not-reporter", "lancashire", "lancashire", "kpi:early-stage-finance",
        "collaboration", 403, "data.kpi"),
    row("body-not-reporter", "innovate-uk", "innovate-uk", "kpi:exports", "business", 403,
        "data.kpi"),
    # -- another column's proposal or KPI: 422 naming the column -------------------------------
    row("combined-other-column", "greater-manchester", "greater-manchester",
        "1a/joint-position", "collaboration", 422, "data.proposal", "devolution column"),
    row("strategic-other-column", "cumbria", "cumbria", "3a/offer-defined", "devolution", 422,
        "data.proposal", "business column"),
    row("body-other-column", "innovate-uk", "innovate-uk", "2a/adoption-priorities",
        "business", 422, "data.proposal", "collaboration column"),
    row("body-kpi-other-column", "nhsa", "nhsa", "kpi:health-research-funding-per-person",
        "business", 422, "data.kpi", "devolution column"),
    # -- no, an unknown or a revoked token: 401, whatever the event ----------------------------
    row("no-token", NONE, "greater-manchester", "1a/joint-position", "devolution", 401),
    row("unknown-token", UNKNOWN, "greater-manchester", "1a/joint-position", "devolution", 401),
    row("revoked-combined", REVOKED, "greater-manchester", "1a/joint-position", "devolution",
        401),
]  # fmt: skip


def event_for(case: Case, event_id: str) -> dict[str, Any]:
    """The CloudEvent a row sends."""
    time = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    if case.reports.startswith("kpi:"):
        kind = "org.cotn.kpi.v1"
        data: dict[str, Any] = {"kpi": case.reports[4:], "value": 1.0, "period": "2025-Q3"}
    else:
        kind = "org.cotn.milestone.v1"
        proposal, milestone = case.reports.split("/")
        data = {"proposal": proposal, "milestone": milestone, "status": "in_progress"}
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": case.source,
        "type": kind,
        "time": time,
        "data": data,
    }


@dataclass
class Services:
    clients: dict[str, httpx.AsyncClient]
    tokens: dict[str, str]
    stream: StreamProbe
    """The events stream from the module's start."""


@pytest.fixture(scope="module")
async def services(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """The three column services sharing one token file: a token per authority of the table,
    a revoked one and one nobody issued."""
    data_dir: Path = tmp_path_factory.mktemp("authorisation")
    store = TokenStore.in_dir(data_dir)
    tokens = {authority: store.create(authority)[0] for authority in KIND}
    revoked, record = store.create("greater-manchester")
    store.revoke(record.token_id)
    tokens[REVOKED] = revoked
    tokens[UNKNOWN] = "cotn_" + "A" * 43
    config = {c: settings_for(nats_server.url, data_dir, column=c) for c in COLUMNS}
    async with (
        running(config["collaboration"], "") as collaboration,
        running(config["devolution"], "") as devolution,
        running(config["business"], "") as business,
    ):
        clients = {
            "collaboration": collaboration.client,
            "devolution": devolution.client,
            "business": business.client,
        }
        async with probe_of(nats_server.url) as stream:
            await stream.mark()
            yield Services(clients, tokens, stream)


def test_the_table_covers_every_kind_of_authority_and_outcome(catalogue: Catalogue) -> None:
    cases = [p.values[0] for p in MATRIX]
    kinds = {catalogue.authority_by_id[a].kind for a in KIND}
    assert kinds == {"combined_authority", "strategic_authority", "body"}
    assert all(catalogue.authority_by_id[a].kind == k for a, k in KIND.items())
    for kind in kinds:
        outcomes = {(c.status, c.field) for c in cases if KIND.get(c.token) == kind}
        assert {202, 403, 422} <= {status for status, _ in outcomes}, kind
    assert {(c.status, c.field) for c in cases} >= {
        (202, None),
        (403, "source"),
        (403, "data.proposal"),
        (403, "data.kpi"),
        (422, "data.proposal"),
        (422, "data.kpi"),
        (401, None),
    }


@pytest.mark.parametrize("case", MATRIX)
async def test_authorisation_matrix(services: Services, case: Case) -> None:
    event_id = f"authz-{uuid.uuid4().hex}"
    headers = {"content-type": CE_JSON}
    if case.token != NONE:
        headers["authorization"] = f"Bearer {services.tokens[case.token]}"
    client = services.clients[case.column]

    response = await client.post("/v1/events", json=event_for(case, event_id), headers=headers)

    assert response.status_code == case.status, response.text
    if case.status == 202:
        assert response.json() == {"accepted": [event_id], "duplicates": []}
        await assert_landed_on_its_column(services.stream, case, event_id)
        return
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    if case.status == 401:
        assert problem["errors"] == []
        assert response.headers["www-authenticate"].startswith("Bearer")
        return
    assert [e["field"] for e in problem["errors"]] == [case.field], problem
    assert problem["errors"][0]["id"] == event_id
    if case.names:
        assert case.names in problem["errors"][0]["reason"]


async def assert_landed_on_its_column(stream: StreamProbe, case: Case, event_id: str) -> None:
    [message] = await stream.landed([event_id], source=case.source)
    assert message.headers is not None
    assert message.headers[MSG_ID_HEADER] == f"{case.source}:{event_id}"
    assert message.subject.startswith(f"cotn.events.{case.column}.")
