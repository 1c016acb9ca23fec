"""``cotn reporting`` and ``cotn review`` against a real aggregator: one nats-server, SQLite,
an office token and an authority's, the aggregator served by uvicorn on a free port.

One aggregator serves the whole module; each test reviews a return of its own (a period of
``rd-boost-gva`` from np11), so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from runstack import wait_until
from typer.testing import CliRunner, Result

from services.aggregator.app import create_app
from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE
from services.cli.main import app
from shared.natsserver import NatsServer, free_port
from shared.tokens import TokenStore
from tests.aggregator.harness import bus_at, kpi, settings_for

KPI = "rd-boost-gva"
PERIODS = ("2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4")
"""np11's returns: Q1 stays waiting, Q2 is approved, Q3 returned, Q4 refused."""


@dataclass
class Stack:
    url: str
    office: str
    np11: str


async def _publish_returns(nats_url: str) -> None:
    sent = datetime.now(UTC) - timedelta(minutes=1)  # every period has begun by then
    async with bus_at(nats_url) as bus:
        for i, period in enumerate(PERIODS):
            await bus.publish(kpi(f"r{i}", KPI, 1.5 + i / 10, period, sent))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("reporting-cli")
    nats = NatsServer(store_dir=root / "nats").start()
    tokens = TokenStore.in_dir(root)
    office, _ = tokens.create_office("alice")
    np11, _ = tokens.create("np11")
    aggregator = create_app(
        settings_for(nats.url, f"sqlite+aiosqlite:///{root / 'cotn.db'}", data_dir=root)
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(aggregator, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, "the aggregator to serve", timeout=30)
        wait_until(
            lambda: aggregator.state.aggregator.consuming.is_set(), "it to consume", timeout=30
        )
        asyncio.run(_publish_returns(nats.url))
        wait_until(
            lambda: httpx.get(f"{url}/v1/reviews").json()["counts"]["waiting"] == len(PERIODS),
            "the returns to wait for review",
            timeout=30,
        )
        yield Stack(url, office, np11)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        nats.stop()


@pytest.fixture(autouse=True)
def _no_token_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COTN_OFFICE_TOKEN", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def cotn(*args: str, token: str | None = None) -> Result:
    env = {"COLUMNS": "220"} | ({"COTN_OFFICE_TOKEN": token} if token else {})
    return CliRunner().invoke(app, list(args), env=env)


def review(stack: Stack, *args: str, token: str | None = None) -> Result:
    return cotn("review", *args, "--url", stack.url, token=token or stack.office)


def errors(result: Result) -> list[str]:
    """The error lines on stderr, each checked to be one: no traceback."""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("cotn: error: ") for line in lines), result.stderr
    return [line.removeprefix("cotn: error: ") for line in lines]


def target(period: str) -> str:
    return f"kpi.{KPI}.{period}.np11"


def api(stack: Stack, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(stack.url + path).json()
    return body


def without_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "generated_at"}


# -- the queue ------------------------------------------------------------------------------------


def test_list_shows_a_waiting_return(stack: Stack) -> None:
    result = cotn("review", "list", "--url", stack.url, "--authority", "np11", "--kind", "kpi")
    assert result.exit_code == 0, result.output
    assert "Waiting for review" in result.stdout
    # Each return on one row with the id of the event a review is of (its source is np11).
    row = next(line for line in result.stdout.splitlines() if target("2025-Q1") in line)
    assert re.search(r"\br0\b", row), row

    shown = cotn("review", "list", "--url", stack.url, "--json")
    assert shown.exit_code == 0, shown.output
    assert without_time(json.loads(shown.stdout)) == without_time(api(stack, "/v1/reviews"))


def test_list_with_an_unknown_column_names_it(stack: Stack) -> None:
    result = cotn("review", "list", "--url", stack.url, "--column", "nowhere")
    assert result.exit_code == EXIT_BAD_INPUT
    lines = errors(result)
    assert "answered 422" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["column"]


# -- reviews --------------------------------------------------------------------------------------


def test_approve_prints_approved_and_the_lock_and_again_is_already_so(stack: Stack) -> None:
    first = review(stack, "approve", KPI, "2025-Q2", "np11")
    assert first.exit_code == 0, first.output
    assert f"{target('2025-Q2')} is now approved (approve by office/alice" in first.stdout
    assert f"lock: {target('2025-Q2')} was approved by office/alice at " in first.stdout
    assert stack.office not in first.output

    # The same return by its target, as the queue shows it: already so, nothing new.
    again = review(stack, "approve", target("2025-Q2"))
    assert again.exit_code == 0, again.output
    assert f"{target('2025-Q2')} was already approved" in again.stdout
    assert "nothing new was sent" in again.stdout
    assert f"lock: {target('2025-Q2')} was approved" in again.stdout
    waiting = [r["target"] for r in api(stack, "/v1/reviews")["waiting"]]
    assert target("2025-Q2") not in waiting


def test_return_needs_a_reason_and_then_shows_it(stack: Stack) -> None:
    refused = review(stack, "return", "--kpi", KPI, "--period", "2025-Q3", "--reporter", "np11")
    assert refused.exit_code == EXIT_BAD_INPUT
    assert errors(refused) == ["--reason is required to return: the authority sees it"]

    reason = "Please send the value in GBP bn, not GBP m"
    returned = review(stack, "return", KPI, "2025-Q3", "np11", "--reason", reason)
    assert returned.exit_code == 0, returned.output
    assert f"{target('2025-Q3')} is now returned" in returned.stdout
    assert f"reason: {reason}" in returned.stdout
    assert "lock: none" in returned.stdout

    queue = cotn("review", "list", "--url", stack.url)
    assert queue.exit_code == 0, queue.output
    assert "Returned for correction" in queue.stdout and reason in queue.stdout

    mine = cotn("reporting", "--url", stack.url, "--authority", "np11")
    assert mine.exit_code == 0, mine.output
    assert reason in mine.stdout


def test_a_review_the_aggregator_refuses_is_one_line_per_field(stack: Stack) -> None:
    result = review(stack, "approve", KPI, "2030-Q1", "np11")
    assert result.exit_code == EXIT_BAD_INPUT
    lines = errors(result)
    assert lines[0].startswith(f"POST {stack.url}/v1/reviews answered 422 Unprocessable")
    assert lines[1:] == [f"period: no return of KPI {KPI} for 2030-Q1 from np11 was received"]


def test_an_approved_return_is_reopened_before_it_is_returned(stack: Stack) -> None:
    review(stack, "approve", KPI, "2025-Q4", "np11")
    conflict = review(stack, "return", KPI, "2025-Q4", "np11", "--reason", "typo")
    assert conflict.exit_code == EXIT_FAILED
    lines = errors(conflict)
    assert "409 Conflict" in lines[0] and "reopen it before returning it" in lines[0]
    assert lines[1].startswith("period: is approved by office/alice")

    reopened = review(stack, "reopen", target("2025-Q4"), "--reason", "np11 found an error")
    assert reopened.exit_code == 0, reopened.output
    assert f"{target('2025-Q4')} is now submitted" in reopened.stdout
    assert "lock: none" in reopened.stdout


def test_an_authority_token_is_refused(stack: Stack) -> None:
    result = review(stack, "approve", KPI, "2025-Q1", "np11", token=stack.np11)
    assert result.exit_code == EXIT_FAILED
    lines = errors(result)
    assert "answered 403 Forbidden: reviews are made by the programme office" in lines[0]
    assert lines[1].startswith("Authorization: token ") and "authority np11" in lines[1]
    assert stack.np11 not in result.output
    assert target("2025-Q1") in [r["target"] for r in api(stack, "/v1/reviews")["waiting"]]


def test_an_unknown_token_is_refused_with_where_to_get_one(stack: Stack) -> None:
    result = review(stack, "approve", KPI, "2025-Q1", "np11", token="cotn_not-a-token")
    assert result.exit_code == EXIT_FAILED
    (line,) = errors(result)
    assert "401 Unauthorized: the token is unknown or revoked" in line
    assert "--token or COTN_OFFICE_TOKEN" in line
    assert "cotn_not-a-token" not in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["approve", "1a", "joint-position"], "a completion is verified, not approved"),
        (["verify", KPI, "2025-Q1", "np11"], "a KPI return is approved, not verified"),
        (["approve", KPI, "2025-Q1"], "is verified, not approved"),
        (["approve", KPI, "--period", "2025-Q1"], "by arguments or by options, not both"),
        (["return", "--kpi", KPI, "--reason", "x"], "--period, --reporter missing"),
        (["return", "--kpi", KPI, "--proposal", "1a", "--reason", "x"], "not both"),
        (["reopen", "kpi.x", "--reason", "x"], "'kpi.x' is not a return"),
        (["approve"], "name the return"),
    ],
)
def test_a_review_badly_named_is_refused_before_anything_is_sent(
    args: list[str], said: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: nothing may be asked
    result = cotn("review", *args, "--url", url, token="t")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    (line,) = errors(result)
    assert said in line


def test_a_review_without_a_token_says_where_to_get_one() -> None:
    result = cotn("review", "approve", KPI, "2025-Q1", "np11", "--url", "http://127.0.0.1:9")
    assert result.exit_code == EXIT_BAD_INPUT
    assert errors(result) == [
        "an office token is needed: --token or COTN_OFFICE_TOKEN (cotn token create --office NAME)"
    ]


def test_without_an_aggregator_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["reporting"], ["review", "list"]):
        result = cotn(*args, "--url", url)
        assert result.exit_code == EXIT_UNAVAILABLE
        (line,) = errors(result)
        assert line.startswith(f"cannot reach {url}/v1/")


# -- reporting ------------------------------------------------------------------------------------


def test_reporting_json_is_the_api_document(stack: Stack) -> None:
    result = cotn("reporting", "--url", stack.url, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert without_time(shown) == without_time(api(stack, "/v1/reporting"))

    filtered = cotn(
        "reporting", "--url", stack.url, "--json", "--authority", "np11", "--period", "2025-Q1"
    )
    doc = json.loads(filtered.stdout)
    assert {(r["authority"], r["period"]) for r in doc["completeness"]} <= {("np11", "2025-Q1")}


def test_reporting_shows_completeness_and_silent_reporters(stack: Stack) -> None:
    doc = api(stack, "/v1/reporting")
    result = cotn("reporting", "--url", stack.url)
    assert result.exit_code == 0, result.output
    assert "Returns by authority and period" in result.stdout
    for header in ("owed", "time", "late", "missing", "pending", "extra", "rate", "timely"):
        assert header in result.stdout
    assert "rate: received of those due" in result.stdout
    assert "Silent reporters" in result.stdout
    for silent in doc["silent"][:3]:
        assert silent["authority"] in result.stdout and silent["obligation"] in result.stdout


def test_reporting_for_np11_shows_its_missing_returns(stack: Stack) -> None:
    doc = api(stack, "/v1/reporting/np11")
    assert doc["missing"], "np11 owes returns it has not sent"
    result = cotn("reporting", "--url", stack.url, "--authority", "np11")
    assert result.exit_code == 0, result.output
    assert "NP11" in result.stdout or doc["name"] in result.stdout
    assert "Missing: past due, nothing received" in result.stdout
    lines = result.stdout.splitlines()
    for owed in doc["missing"][:3]:
        assert any(owed["obligation"] in line and owed["period"] in line for line in lines)


def test_reporting_for_an_unknown_authority_is_one_line(stack: Stack) -> None:
    result = cotn("reporting", "--url", stack.url, "--authority", "atlantis")
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = errors(result)
    assert "answered 404 Not Found: no authority 'atlantis' in the catalogue" in line
