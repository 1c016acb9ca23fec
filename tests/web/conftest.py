"""A real stack (``cotn run``: NATS from the wheel, SQLite, the services and the office web
board) and Debian's Chromium driven by Playwright, nothing downloaded at test time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from runstack import RunningStack, cotn, start_stack, wait_until

CHROMIUM = os.environ.get("COTN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OFFICE_OFFSET = 4
"""The web board's port after the aggregator's: three columns, then the board."""


class Stack:
    """The running stack, a token per authority it needs, and a poster of events."""

    def __init__(self, running: RunningStack):
        self.running = running
        self.tokens: dict[str, str] = {}
        self.posted = 0

    @property
    def office(self) -> str:
        return f"http://127.0.0.1:{self.running.port + OFFICE_OFFSET}"

    def token(self, authority: str) -> str:
        if authority not in self.tokens:
            issued = cotn("token", "create", authority, "--data-dir", str(self.running.data_dir))
            assert issued.returncode == 0, issued.stderr
            self.tokens[authority] = issued.stdout.strip()
        return self.tokens[authority]

    def office_token(self, name: str = "web-reviewer") -> str:
        """An office identity's token (``office/<name>``): it reviews, it posts no events."""
        key = f"office/{name}"
        if key not in self.tokens:
            issued = cotn(
                "token", "create", "--office", name, "--data-dir", str(self.running.data_dir)
            )
            assert issued.returncode == 0, issued.stderr
            self.tokens[key] = issued.stdout.strip()
        return self.tokens[key]

    def review(self, **body: str) -> dict[str, Any]:
        """Make a review as the office does (``POST /v1/reviews``); its result once stored."""
        response = httpx.post(
            self.running.url + "/v1/reviews",
            json=body,
            headers={"Authorization": f"Bearer {self.office_token()}"},
            timeout=20,
        )
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        assert result["stored"], result
        return result

    def post(self, column: str, source: str, kind: str, data: dict[str, Any]) -> str:
        """Post one event to a column service and wait until the aggregator stored it."""
        self.posted += 1
        event_id = f"web-{self.posted}"
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": f"org.cotn.{kind}.v1",
            "time": datetime.now(UTC).isoformat(),
            "data": data,
        }
        response = httpx.post(
            self.running.columns[column] + "/v1/events",
            json=event,
            headers={"Authorization": f"Bearer {self.token(source)}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text

        def stored() -> bool:
            page = httpx.get(
                self.running.url + "/v1/events", params={"source": source, "limit": 1000}
            ).json()
            return any(e["id"] == event_id for e in page["events"])

        wait_until(stored, f"event {event_id} stored", timeout=20)
        return event_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("web-stack")) as running:
        yield Stack(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a test writes its screenshots: its own output folder."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
