"""Alertmanager: the configuration is valid, routes by column, and inhibits as documented.

Routing is checked with ``amtool config routes test``; inhibition, which amtool cannot
show, against a real Alertmanager fed alerts through its API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.natsserver import free_port

from .support import ALERTMANAGER_CONFIG, run_tool, tool

ROUTES = [
    ({"alertname": "ProposalStalled", "column": "business", "proposal": "3a"}, "column-business"),
    (
        {"alertname": "MilestoneOverdue", "column": "collaboration", "proposal": "2a"},
        "column-collaboration",
    ),
    ({"alertname": "ProposalRed", "column": "devolution", "proposal": "1a"}, "column-devolution"),
    (
        {"alertname": "KpiOffTrajectory", "kpi": "exports", "column": "business"},
        "programme-office,column-business",
    ),
    (
        {"alertname": "ServiceDown", "service": "ingest", "column": "business"},
        "operations,column-business",
    ),
    ({"alertname": "ServiceDown", "service": "aggregator"}, "operations"),
    ({"alertname": "DeadLetters", "reason": "unknown_milestone"}, "operations"),
    (
        {"alertname": "AuthorityEventsRejected", "column": "devolution", "reason": "forbidden"},
        "operations,column-devolution",
    ),
    ({"alertname": "AggregatorBacklogGrowing", "instance": "aggregator:8000"}, "operations"),
    (
        {
            "alertname": "ReporterSilent",
            "column": "devolution",
            "authority": "greater-manchester",
            "obligation": "1a",
            "kind": "update",
        },
        "column-devolution",
    ),
    (
        {
            "alertname": "ReporterSilent",
            "column": "business",
            "authority": "np11",
            "obligation": "exports",
            "kind": "kpi",
        },
        "column-business",
    ),
]
TEAM = {
    "ProposalStalled": "programme",
    "MilestoneOverdue": "programme",
    "ProposalRed": "programme",
    "KpiOffTrajectory": "programme",
    "ReporterSilent": "programme",
}


def test_config_is_valid() -> None:
    result = run_tool(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"), ROUTES, ids=[r[1] + "-" + str(i) for i, r in enumerate(ROUTES)]
)
def test_alerts_are_routed_by_column(labels: dict[str, str], receivers: str) -> None:
    # The team label is what the rules set: programme alerts or operational ones.
    labels = {**labels, "team": TEAM.get(labels["alertname"], "operations")}
    result = run_tool(
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receivers}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, f"{labels} went to {result.stdout.strip()}, not {receivers}"


# -- inhibition, on a real Alertmanager -------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager of the test's own (alerts of one test would inhibit another's)
    with the shipped configuration, on a free loopback port."""
    binary = tool("alertmanager")
    work = tmp_path
    port = free_port()
    log = (work / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={work}",
            f"--web.listen-address=127.0.0.1:{port}",
            # No gossip port: this Alertmanager is alone.
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, work / "alertmanager.log")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"Alertmanager not ready: {log.read_text()}")


def alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": "test"}}


def post_and_read(url: str, alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Post ``alerts``; return each (by its ``case`` label) as Alertmanager reports it."""
    httpx.post(url + "/api/v2/alerts", json=alerts, timeout=5).raise_for_status()
    wanted = {a["labels"]["case"] for a in alerts}
    deadline = time.monotonic() + 10
    while True:
        listed = httpx.get(url + "/api/v2/alerts", timeout=5).raise_for_status().json()
        found = {a["labels"]["case"]: a for a in listed if a["labels"].get("case") in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def inhibited(reported: dict[str, Any]) -> bool:
    return bool(reported["status"]["inhibitedBy"])


def test_a_red_proposal_inhibits_its_own_amber_alerts(alertmanager: str) -> None:
    found = post_and_read(
        alertmanager,
        [
            alert(case="red", alertname="ProposalRed", rag="red", column="business", proposal="3a"),
            alert(
                case="own-overdue",
                alertname="MilestoneOverdue",
                rag="amber",
                column="business",
                proposal="3a",
                milestone="offer-defined",
            ),
            alert(
                case="other-overdue",
                alertname="MilestoneOverdue",
                rag="amber",
                column="business",
                proposal="3b",
                milestone="network-terms",
            ),
        ],
    )
    assert inhibited(found["own-overdue"])
    assert not inhibited(found["other-overdue"])
    assert not inhibited(found["red"])
    assert [r["name"] for r in found["red"]["receivers"]] == ["column-business"]


@pytest.mark.parametrize(
    "outage", ["ServiceDown", "AggregatorDatabaseDown", "AggregatorBusUnreachable"]
)
def test_the_aggregator_down_inhibits_what_it_computes(alertmanager: str, outage: str) -> None:
    found = post_and_read(
        alertmanager,
        [
            alert(case="agg-down", alertname=outage, service="aggregator", team="operations"),
            alert(case="dlq", alertname="DeadLetters", service="aggregator", reason="invalid_json"),
            alert(
                case="stall",
                alertname="ProposalStalled",
                service="aggregator",
                column="collaboration",
                proposal="2b",
            ),
            alert(
                case="refused",
                alertname="AuthorityEventsRejected",
                service="ingest",
                column="collaboration",
                reason="invalid",
            ),
        ],
    )
    assert not inhibited(found["agg-down"])
    assert inhibited(found["dlq"])
    assert inhibited(found["stall"])
    assert not inhibited(found["refused"])


def test_a_column_service_down_inhibits_its_columns_stalls_and_refusals(alertmanager: str) -> None:
    found = post_and_read(
        alertmanager,
        [
            alert(
                case="ingest-down",
                alertname="ServiceDown",
                service="ingest",
                column="devolution",
                team="operations",
            ),
            alert(
                case="own-stall",
                alertname="ProposalStalled",
                service="aggregator",
                column="devolution",
                proposal="1a",
            ),
            alert(
                case="own-refusals",
                alertname="AuthorityEventsRejected",
                service="ingest",
                column="devolution",
                reason="forbidden",
            ),
            alert(
                case="own-silent",
                alertname="ReporterSilent",
                service="aggregator",
                column="devolution",
                authority="greater-manchester",
                obligation="1a",
                kind="update",
            ),
            alert(
                case="other-stall",
                alertname="ProposalStalled",
                service="aggregator",
                column="business",
                proposal="3b",
            ),
            alert(
                case="other-silent",
                alertname="ReporterSilent",
                service="aggregator",
                column="business",
                authority="np11",
                obligation="exports",
                kind="kpi",
            ),
        ],
    )
    assert inhibited(found["own-stall"])
    assert inhibited(found["own-refusals"])
    assert inhibited(found["own-silent"])
    assert not inhibited(found["other-stall"])
    assert not inhibited(found["other-silent"])
    assert {r["name"] for r in found["ingest-down"]["receivers"]} == {
        "operations",
        "column-devolution",
    }


def test_a_columns_silent_reporters_are_grouped_by_authority(alertmanager: str) -> None:
    """One notification per authority to call, apart from the column's proposal alerts."""
    silent = {"alertname": "ReporterSilent", "team": "programme", "column": "devolution"}
    post_and_read(
        alertmanager,
        [
            alert(
                case="gm-update",
                **silent,
                authority="greater-manchester",
                obligation="1a",
                kind="update",
            ),
            alert(
                case="gm-kpi",
                **silent,
                authority="greater-manchester",
                obligation="rd-boost-gva",
                kind="kpi",
            ),
            alert(
                case="np11-kpi", **silent, authority="np11", obligation="rd-boost-gva", kind="kpi"
            ),
            alert(
                case="stall",
                alertname="ProposalStalled",
                team="programme",
                column="devolution",
                proposal="1a",
            ),
        ],
    )
    groups = httpx.get(alertmanager + "/api/v2/alerts/groups", timeout=5).raise_for_status()
    cases = {
        frozenset(a["labels"]["case"] for a in g["alerts"])
        for g in groups.json()
        if g["receiver"]["name"] == "column-devolution"
    }
    assert cases == {
        frozenset({"gm-update", "gm-kpi"}),
        frozenset({"np11-kpi"}),
        frozenset({"stall"}),
    }
