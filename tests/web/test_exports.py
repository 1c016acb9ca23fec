"""The office's exports page: both returns upwards downloaded from the web board.

In process, against a stand-in aggregator: the office hands on the aggregator's bytes and
content type as a file named for what it is, shows what the aggregator refuses on the page
(422), and refuses what it cannot pass on itself. In Debian's Chromium, against a real
stack: the forms, the quarters, the GMPP-style return as CSV and JSON and the IATI XML
downloaded, an as-at date before the programme's start refused on the page, axe-core,
keyboard reach; screenshots to the test's output folder.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from services.office.app import create_app
from services.office.client import AggregatorClient
from services.office.settings import OfficeSettings
from shared.catalogue import load_catalogue
from shared.exports.gmpp import COLUMNS
from tests.web.browsing import axe_serious, mark_focusable, tab_through
from tests.web.conftest import Stack
from tests.web.test_access import office, settings

START = load_catalogue().programme_start
"""The programme's start, as the stack's catalogue (the shipped one) has it."""
BEFORE_START = "2024-01-01"
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<iati-activities version="2.03"/>\n'
CSV = b"quarter,id\r\n2026-Q3,1a\r\n"


def quarters(start: date, today: date) -> list[str]:
    """Every calendar quarter from the one holding ``start`` to today's, newest first."""
    first, last = start.year * 4 + (start.month - 1) // 3, today.year * 4 + (today.month - 1) // 3
    return [f"{n // 4}-Q{n % 4 + 1}" for n in range(last, first - 1, -1)]


@asynccontextmanager
async def board_on(
    config: OfficeSettings, aggregator: Callable[[httpx.Request], httpx.Response]
) -> AsyncIterator[httpx.AsyncClient]:
    """The office, started, reading ``aggregator`` (a handler) for its exports, and a
    client calling it from loopback."""
    app = create_app(config)
    http = httpx.AsyncClient(transport=httpx.MockTransport(aggregator))
    app.state.office.aggregator = AggregatorClient(http, "http://aggregator.test")
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        http,
        httpx.AsyncClient(transport=transport, base_url="http://office.test") as client,
    ):
        yield client


def stand_in(request: httpx.Request) -> httpx.Response:
    """The aggregator's exports, as far as these tests need them."""
    refusal = {
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "invalid query parameter",
        "errors": [{"field": "quarter", "reason": "2020-Q1 ended before the programme's start"}],
    }
    if request.url.path == "/v1/exports/iati-activities.xml":
        return httpx.Response(200, content=XML, headers={"content-type": "application/xml"})
    if request.url.params.get("quarter") == "2020-Q1":
        return httpx.Response(
            422, json=refusal, headers={"content-type": "application/problem+json"}
        )
    if request.url.path == "/v1/exports/gmpp.csv":
        return httpx.Response(200, content=CSV, headers={"content-type": "text/csv; charset=utf-8"})
    if request.url.path == "/v1/exports/gmpp.json":
        return httpx.Response(200, json={"quarter": request.url.params["quarter"], "rows": []})
    return httpx.Response(404, json={"detail": "Not Found"})


async def test_the_exports_are_the_aggregators_bytes_as_files(tmp_path: Path) -> None:
    asked: list[httpx.Request] = []

    def aggregator(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return stand_in(request)

    async with board_on(settings(tmp_path, "development"), aggregator) as client:
        iati = await client.get("/exports/iati-activities.xml?as_at=2026-03-01")
        assert iati.status_code == 200 and iati.content == XML
        assert iati.headers["content-type"] == "application/xml"
        assert iati.headers["content-disposition"] == (
            'attachment; filename="cotn-iati-2026-03-01.xml"'
        )
        # A date is the end of that day (the as-at picker's rule); blank is now.
        assert asked[-1].url.params["as_at"] == "2026-03-01T23:59:59.999999Z"
        now = await client.get("/exports/iati-activities.xml?as_at=")
        assert 'filename="cotn-iati-now.xml"' in now.headers["content-disposition"]
        assert "as_at" not in asked[-1].url.params

        for path in ("/exports/gmpp.csv?quarter=2026-Q3", "/exports/gmpp?quarter=2026-Q3"):
            gmpp = await client.get(path)
            assert gmpp.status_code == 200 and gmpp.content == CSV, path
            assert gmpp.headers["content-type"] == "text/csv; charset=utf-8"
            assert 'filename="cotn-gmpp-2026-Q3.csv"' in gmpp.headers["content-disposition"]
        as_json = await client.get("/exports/gmpp?quarter=2026-Q3&format=json")
        assert as_json.json() == {"quarter": "2026-Q3", "rows": []}
        assert 'filename="cotn-gmpp-2026-Q3.json"' in as_json.headers["content-disposition"]

        # What the aggregator refuses is said beside its form, the quarter still chosen.
        refused = await client.get("/exports/gmpp?quarter=2020-Q1&format=json")
        assert refused.status_code == 422
        assert "quarter: 2020-Q1 ended before the programme&#39;s start" in refused.text
        assert 'id="gmpp-refused"' in refused.text
        assert '<option value="2020-Q1" selected>' in refused.text
        assert 'value="json" checked' in refused.text
        metrics = (await client.get("/metrics")).text
        assert 'cotn_office_page_requests_total{page="export-gmpp",status="200"}' in metrics

    # Without the exports (an aggregator from before them): no data, not a crash.
    def before_exports(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    async with board_on(settings(tmp_path, "development"), before_exports) as client:
        gone = await client.get("/exports/gmpp.json?quarter=2026-Q3")
        assert gone.status_code == 503 and "No data" in gone.text


async def test_the_office_refuses_what_it_cannot_pass_on(tmp_path: Path) -> None:
    async with office(settings(tmp_path, "development")) as client:
        page = await client.get("/exports")
        assert page.status_code == 200
        # The quarters from the programme's start to today's, newest first.
        today = datetime.now(UTC).date()
        listed = [q for q in quarters(START, today) if f'<option value="{q}"' in page.text]
        assert listed == quarters(START, today)
        for path, named in (
            ("/exports?quarter=2026-Q3", "quarter"),
            ("/exports/gmpp.csv?quarter=2026-Q3&colour=red", "colour"),
            ("/exports/iati-activities.xml?quarter=2026-Q3", "quarter"),
            ("/exports/gmpp?quarter=2026-Q3&format=xlsx", "format"),
            ("/exports/iati-activities.xml?as_at=1+March", "as_at"),
        ):
            refused = await client.get(path)
            assert refused.status_code == 422, path
            assert named in refused.text, path
        # The aggregator here is a port nothing listens on.
        down = await client.get("/exports/gmpp.csv?quarter=2026-Q3")
        assert down.status_code == 503 and "No data" in down.text
        assert 'id="gmpp-refused"' in down.text


async def test_the_exports_need_a_login_outside_development(tmp_path: Path) -> None:
    config = settings(tmp_path, "production")
    async with office(config, base_url="https://office.test") as client:
        for path in ("/exports", "/exports/gmpp.csv?quarter=2026-Q3", "/exports/gmpp"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next=%2Fexports"), path


def download(page: Any, button: str) -> tuple[str, bytes]:
    """Press ``button`` and wait for the file it downloads: its name and bytes."""
    with page.expect_download() as info:
        page.get_by_role("button", name=button, exact=True).click()
    saved = info.value
    return saved.suggested_filename, Path(saved.path()).read_bytes()


@pytest.mark.slow
def test_the_exports_page_downloads_both_returns(page: Any, stack: Stack, shots: Path) -> None:
    catalogue = load_catalogue()
    ids = [p.id for p in catalogue.proposals]
    today = datetime.now(UTC).date()
    listed = quarters(catalogue.programme_start, today)
    last_ended = listed[1] if len(listed) > 1 else listed[0]  # the current one has not ended
    page.goto(stack.office + "/")
    page.get_by_role("link", name="Exports", exact=True).click()
    expect(page.locator("h1")).to_have_text("Exports")
    expect(page.get_by_role("link", name="Exports", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    # Two plain GET forms: an as-at date, and a quarter with a format.
    as_at = page.locator("#iati-as-at")
    expect(as_at).to_have_attribute("type", "date")
    expect(as_at).to_have_attribute("max", today.isoformat())
    quarter = page.get_by_label("Quarter", exact=True)
    options = quarter.locator("option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == listed
    expect(quarter).to_have_value(last_ended)  # the return people file: the last ended
    expect(page.get_by_label("CSV (a spreadsheet)")).to_be_checked()
    page.screenshot(path=str(shots / "exports.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)

    # The GMPP-style return: the header, then one row per proposal and gamechanger.
    name, body = download(page, "Download")
    assert name == f"cotn-gmpp-{last_ended}.csv"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert body.decode("utf-8").split("\r\n")[0] == ",".join(COLUMNS)
    assert tuple(rows[0]) == COLUMNS
    assert [r[COLUMNS.index("id")] for r in rows[1:]] == ids
    assert {r[COLUMNS.index("quarter")] for r in rows[1:]} == {last_ended}
    quarter.select_option(listed[0])
    page.get_by_label("JSON", exact=True).check()
    name, body = download(page, "Download")
    assert name == f"cotn-gmpp-{listed[0]}.json"
    doc = json.loads(body)
    assert doc["quarter"] == listed[0] and [r["id"] for r in doc["rows"]] == ids

    # IATI 2.03 activities, as at now (blank) and as at a date.
    name, body = download(page, "Download IATI XML")
    assert name == "cotn-iati-now.xml"
    assert body.startswith(b"<?xml") and b'<iati-activities version="2.03"' in body
    as_at.fill(today.isoformat())
    name, body = download(page, "Download IATI XML")
    assert name == f"cotn-iati-{today.isoformat()}.xml"
    assert b'<iati-activities version="2.03"' in body

    # Before the programme's start: the aggregator refuses, and the page says why.
    as_at.fill(BEFORE_START)
    with page.expect_response(lambda r: "/exports/iati-activities.xml" in r.url) as answered:
        page.get_by_role("button", name="Download IATI XML").click()
    assert answered.value.status == 422
    refusal = page.locator("#iati-refused")
    expect(refusal).to_contain_text("as_at")
    expect(refusal).to_contain_text(f"before the programme's start ({catalogue.programme_start})")
    expect(page.locator("#iati-as-at")).to_have_value(BEFORE_START)
    page.screenshot(path=str(shots / "exports-refused.png"), full_page=True)
    assert not (bad := axe_serious(page)), "\n".join(bad)


@pytest.mark.slow
def test_the_keyboard_reaches_every_field_and_both_buttons(page: Any, stack: Stack) -> None:
    response = page.goto(stack.office + "/exports")
    assert response is not None and response.status == 200
    # Tab stops once in a group of radios, on the checked one (arrows move within it).
    wanted = mark_focusable(page, checked_radios_only=True)
    buttons = page.evaluate(
        """() => Array.from(document.querySelectorAll('main button'))
            .map(e => e.dataset.focusCheck)"""
    )
    assert len(buttons) == 2
    reached = tab_through(page, wanted)
    assert set(buttons) <= reached
    assert set(wanted) <= reached
