"""The office board's access rules, sessions and empty states, in process (no browser).

The aggregator here is a port nothing listens on: the pages must say "no data", never
show an empty board as if all were well.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from services.office.app import create_app
from services.office.client import AggregatorUnavailable
from services.office.live import BoardWatcher
from services.office.settings import OfficeSettings
from shared.natsserver import free_port
from shared.tokens import TokenStore

SECRET = "a-test-secret-key-of-some-length"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings(tmp_path: Path, environment: str, **extra: object) -> OfficeSettings:
    return OfficeSettings.model_validate(
        {
            "COTN_ENV": environment,
            "secret_key": SECRET,
            "aggregator_url": f"http://127.0.0.1:{free_port()}",
            "data_dir": tmp_path,
            "poll_interval_seconds": 0.2,
            **extra,
        }
    )


@asynccontextmanager
async def office(
    config: OfficeSettings, host: str = "127.0.0.1", base_url: str = "http://office.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, started (its lifespan), and a client calling it from ``host``."""
    app = create_app(config)
    transport = httpx.ASGITransport(app, client=(host, 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as client,
    ):
        yield client


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # https: the session cookie is Secure outside development.
    async with office(settings(tmp_path, "production"), base_url="https://office.test") as client:
        yield client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html
    return found.group(1)


def test_the_placeholder_secret_is_refused_outside_development(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        OfficeSettings.model_validate({"COTN_ENV": "production", "data_dir": tmp_path})
    assert OfficeSettings.model_validate({"COTN_ENV": "development"}).development


async def test_pages_need_a_login_outside_development(production: httpx.AsyncClient) -> None:
    for path in (
        "/",
        "/proposals/1a",
        "/kpis",
        "/kpis/exports",
        "/audit?proposal=1a",
        "/reporting?column=business",
        "/reporting/np11",
        "/reviews",
    ):
        response = await production.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=%2F"), path


@pytest.mark.parametrize(("host", "status"), [("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 303)])
async def test_development_opens_the_pages_to_loopback_only(
    tmp_path: Path, host: str, status: int
) -> None:
    async with office(settings(tmp_path, "development"), host) as client:
        assert (await client.get("/")).status_code == status


async def test_a_token_login_gives_a_strict_http_only_session(
    production: httpx.AsyncClient, tmp_path: Path
) -> None:
    token, _ = TokenStore.in_dir(tmp_path).create("greater-manchester")
    page = await production.get("/login?next=/kpis")
    assert page.status_code == 200
    csrf = csrf_of(page.text)

    refused = await production.post("/login", data={"token": token, "next": "/kpis"})
    assert refused.status_code == 403  # no CSRF token
    wrong = await production.post(
        "/login", data={"token": "cotn_nope", "csrf_token": csrf, "next": "/kpis"}
    )
    assert wrong.status_code == 401
    assert "not known or has been revoked" in wrong.text

    signed = await production.post(
        "/login", data={"token": token, "csrf_token": csrf, "next": "/kpis"}
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/kpis"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie

    board = await production.get("/")
    assert board.status_code == 200
    assert "Signed in as greater-manchester" in board.text
    # The aggregator does not answer: an explicit "no data", not an empty green board.
    assert "No data" in board.text and "Green" not in board.text

    new_csrf = csrf_of(board.text)
    assert new_csrf != csrf  # a new session at the login
    assert (await production.post("/logout", data={})).status_code == 403
    out = await production.post("/logout", data={"csrf_token": new_csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (await production.get("/")).status_code == 303


async def test_the_login_only_goes_back_to_this_site(
    production: httpx.AsyncClient, tmp_path: Path
) -> None:
    token, _ = TokenStore.in_dir(tmp_path).create("greater-manchester")
    csrf = csrf_of((await production.get("/login")).text)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        signed = await production.post(
            "/login", data={"token": token, "csrf_token": csrf, "next": target}
        )
        assert signed.headers["location"] == "/", target
        csrf = csrf_of((await production.get("/", follow_redirects=True)).text)


async def test_a_revoked_token_no_longer_signs_in(
    production: httpx.AsyncClient, tmp_path: Path
) -> None:
    store = TokenStore.in_dir(tmp_path)
    token, _ = store.create("greater-manchester")
    store.revoke(token)
    csrf = csrf_of((await production.get("/login")).text)
    assert (
        await production.post("/login", data={"token": token, "csrf_token": csrf})
    ).status_code == 401


async def test_unknown_query_parameters_are_refused(tmp_path: Path) -> None:
    async with office(settings(tmp_path, "development")) as client:
        response = await client.get("/?colour=green")
        assert response.status_code == 422
        assert "colour" in response.text
        assert (await client.get("/audit?proposal=1a&bogus=1")).status_code == 422
        assert (await client.get("/proposals/1a")).status_code == 503  # no aggregator: no data
        for path in ("/reporting?state=late", "/reviews?state=waiting", "/reporting/np11?x=1"):
            refused = await client.get(path)
            assert refused.status_code == 422, path
            assert path.split("?")[1].split("=")[0] in refused.text
        for path in ("/reporting?column=business", "/reporting/np11", "/reviews?kind=kpi"):
            unread = await client.get(path)
            assert unread.status_code == 503 and "No data" in unread.text, path
        headers = (await client.get("/")).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        metrics = (await client.get("/metrics")).text
        assert 'cotn_office_page_requests_total{page="programme",status="200"}' in metrics
        assert 'cotn_office_aggregator_reads_total{outcome="failed"}' in metrics


class Flaky:
    """An aggregator client whose board read succeeds, then fails; it answers 304 to the
    tag of its board, as the aggregator does, and records the tags it was sent."""

    TAG = '"board-1"'

    def __init__(self) -> None:
        self.up = True
        self.sent: list[str | None] = []

    async def live_programme(self, etag: str | None) -> tuple[dict[str, object] | None, str]:
        self.sent.append(etag)
        if not self.up:
            raise AggregatorUnavailable("cannot reach the aggregator")
        if etag == self.TAG:
            return None, etag
        return {"name": "p", "generated_at": "now", "columns": [], "kpis": []}, self.TAG


async def test_a_failed_read_keeps_the_board_and_marks_it_stale() -> None:
    client = Flaky()
    watcher = BoardWatcher(client, interval=1, stale_after=60)  # type: ignore[arg-type]
    first = await watcher.refresh()
    assert first.board is not None and not watcher.stale(first) and first.version == 1
    same = await watcher.refresh()
    assert same.version == 1  # nothing new: no push
    # The second read sent the board's tag and got a 304: the board kept, read again now.
    assert client.sent == [None, Flaky.TAG]
    assert same.board == first.board and same.read_at is not None and same.read_at >= first.read_at
    client.up = False
    failed = await watcher.refresh()
    assert failed.board == first.board and failed.error and watcher.stale(failed)
    assert failed.version == 2
    client.up = True
    back = await watcher.refresh()
    assert back.error is None and not watcher.stale(back) and back.version == 3
    assert client.sent[-1] is None  # after a failure the board is read whole


async def test_the_as_at_picker_takes_dates_and_says_why_not(tmp_path: Path) -> None:
    async with office(settings(tmp_path, "development")) as client:
        bad = await client.get("/?as_at=1+March")
        assert bad.status_code == 422 and "give a date (2026-03-01)" in bad.text
        assert (await client.get("/proposals/1a?known_at=tomorrow")).status_code == 422
        assert (await client.get("/kpis/jobs?as_at=bogus")).status_code == 422
        # Known fields, read straight from the aggregator (here down: no data, not a 422).
        for path in (
            "/?as_at=2026-03-01&known_at=2026-03-05",
            "/columns/devolution?as_at=2026-03-01",
            "/proposals/1a?as_at=2026-03-01",
            "/kpis?as_at=2026-03-01",
            "/kpis/jobs?as_at=2026-03-01",
        ):
            assert (await client.get(path)).status_code == 503, path
        # Empty fields (the form submitted blank) are the live board.
        live = await client.get("/?as_at=&known_at=")
        assert live.status_code == 200 and "As at" in live.text and "as now known" not in live.text
        audit = await client.get("/audit?kpi=jobs&milestone=m&id=e-1&until=2026-03-01T00:00:00Z")
        assert audit.status_code == 503  # the new filters are passed on, not refused
