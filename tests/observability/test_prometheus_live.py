"""The dashboards and the stall alert against a real pipeline and a real Prometheus.

``cotn run --no-board`` (nats-server from the wheel, the aggregator and the three column
services) runs with a test catalogue whose proposal 3a stalls after a few seconds; a real
Prometheus scrapes it every second with the project's own scrape jobs and rules (targets
rewritten to the test's ports, ProposalStalled's ``for`` set to 0s) and sends its alerts to
a real Alertmanager with the project's routing. Then:

- every query of every dashboard panel and annotation (variables substituted) returns data,
  but those reading only metrics absent until a return is due (none is: the programme
  starts today), which Prometheus must accept;
- ProposalStalled fires for 3a, agreeing with ``cotn_proposal_stalled``, and reaches the
  business column's receiver; it resolves once a milestone event is posted, and does not
  come back after the proposal's milestones are all completed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from runstack import RunningStack, start_stack

from dashboards.builders import generate
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue, load_catalogue
from shared.natsserver import free_port
from shared.tokens import TokenStore

from .support import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES_FILE, load_yaml, tool

pytestmark = pytest.mark.slow

T = TypeVar("T")
STALLING = "3a"
STALL_THRESHOLD = 10  # seconds: long enough to see the alert resolve before it returns
AUTHORITY = "greater-manchester"  # a partner of every proposal
KPI = "life-sciences-jobs"
KPI_REPORTER = "nhsa"
METRIC = re.compile(r"\b(cotn_[a-z_]+|up)\b")
DUE_ONLY = {
    "cotn_reporting_completeness_ratio",
    "cotn_reporting_timeliness_ratio",
    "cotn_reporter_silent",
}
"""Metrics exported only once a return is due: the test's programme starts today, so none is
(their rules and panels are proven by promtool's tests and the aggregator's own)."""
# $authority is a multi-value variable: ".+" is what its "All" matches.
SUBSTITUTIONS = {
    "$column": "business",
    "$kpi": KPI,
    "$authority": ".+",
    "$__rate_interval": "1m",
}


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    """Poll ``probe`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# -- the test's programme, Prometheus and Alertmanager -----------------------------------------


def write_catalogue(path: Path) -> Catalogue:
    """The shipped catalogue, starting today, with 3a stalling after a few seconds."""
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    raw["programme_start"] = datetime.now(UTC).date()
    for proposal in raw["proposals"]:
        if proposal["id"] == STALLING:
            proposal["stall_threshold"] = f"{STALL_THRESHOLD}s"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_catalogue(path)


def write_rules(path: Path) -> None:
    """The shipped rules with ProposalStalled's ``for`` at 0s (it ships with 10m)."""
    rules = load_yaml(RULES_FILE)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ProposalStalled":
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")


def write_prometheus_config(
    path: Path, stack: RunningStack, rules: Path, alertmanager_port: int
) -> None:
    """The project's Prometheus config with its targets moved to the test's ports."""
    config = load_yaml(PROMETHEUS_CONFIG)
    ports = {"aggregator": stack.port} | {
        f"ingest-{column}": int(url.rsplit(":", 1)[1]) for column, url in stack.columns.items()
    }
    config["global"] = {
        # The runbook_base label: alerts' runbook_url is absolute (see RUNBOOK_BASE).
        "external_labels": config["global"]["external_labels"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{alertmanager_port}"]}
    ]
    # Only the COTN jobs: Prometheus and Alertmanager themselves are not under test here.
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] in JOBS]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{ports[t.split(':')[0]]}" for t in static["targets"]]
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


JOBS = {"cotn-aggregator", "cotn-ingest"}
RUNBOOK_BASE = "https://docs.example.test/cotn/runbook.md"


@dataclass
class Process:
    """A child process with its log, stopped at the end of the test module."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(argv: list[str], log: Path, url: str, env: dict[str, str] | None = None) -> Process:
    """Start ``argv`` and wait until ``url``/-/ready answers (Prometheus and Alertmanager)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    child = Process(process, log, url)

    def ready() -> bool:
        assert process.poll() is None, f"{argv[0]} exited:\n{log.read_text()}"
        try:
            return httpx.get(url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, f"{argv[0]} to be ready", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child


@dataclass
class Live:
    stack: RunningStack
    catalogue: Catalogue
    prometheus: str
    alertmanager: str
    tokens: dict[str, str]

    def post(self, column: str, events: list[dict[str, Any]], authority: str = AUTHORITY) -> int:
        """POST a batch to a column service; return the status code."""
        response = httpx.post(
            self.stack.columns[column] + "/v1/events",
            content=json.dumps(events),
            headers={
                "Authorization": f"Bearer {self.tokens[authority]}",
                "Content-Type": "application/cloudevents-batch+json",
            },
            timeout=10,
        )
        return response.status_code

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (an empty list when it has no data)."""
        answer = httpx.get(self.prometheus + "/api/v1/query", params={"query": expr}, timeout=5)
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        body = httpx.get(self.prometheus + "/api/v1/alerts", timeout=5).json()
        return [a for a in body["data"]["alerts"] if a["state"] == state]

    def stall_alert(self) -> dict[str, Any] | None:
        """The firing ProposalStalled alert of the stalling proposal, if any."""
        return next(
            (
                a
                for a in self.alerts()
                if a["labels"]["alertname"] == "ProposalStalled"
                and a["labels"]["proposal"] == STALLING
            ),
            None,
        )

    def gauge(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prometheus_binary, alertmanager_binary = tool("prometheus"), tool("alertmanager")
    work = tmp_path_factory.mktemp("live")
    catalogue = write_catalogue(work / "catalogue.yaml")
    store = TokenStore.in_dir(work / "data")
    tokens = {a: store.create(a)[0] for a in (AUTHORITY, KPI_REPORTER)}
    with start_stack(work / "data", "--catalogue", str(work / "catalogue.yaml")) as stack:
        am_port, prom_port = free_port(), free_port()
        alertmanager = start(
            [
                alertmanager_binary,
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--storage.path={work / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            work / "alertmanager.log",
            f"http://127.0.0.1:{am_port}",
        )
        write_rules(work / "rules.yml")
        write_prometheus_config(work / "prometheus.yml", stack, work / "rules.yml", am_port)
        try:
            prometheus = start(
                [
                    prometheus_binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    # As docker-compose runs it: runbook_base comes from COTN_RUNBOOK_BASE.
                    "--enable-feature=expand-external-labels",
                ],
                work / "prometheus.log",
                f"http://127.0.0.1:{prom_port}",
                env={"COTN_RUNBOOK_BASE": RUNBOOK_BASE},
            )
        except BaseException:
            alertmanager.stop()
            raise
        try:
            yield Live(stack, catalogue, prometheus.url, alertmanager.url, tokens)
        finally:
            prometheus.stop()
            alertmanager.stop()


# -- events -----------------------------------------------------------------------------------


def event(kind: str, data: dict[str, Any], source: str = AUTHORITY) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"live-{uuid.uuid4().hex[:12]}",
        "source": source,
        "type": f"org.cotn.{kind}.v1",
        "time": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        "data": data,
    }


def milestone(proposal: str, milestone_id: str, status: str) -> dict[str, Any]:
    return event("milestone", {"proposal": proposal, "milestone": milestone_id, "status": status})


def first_milestone(catalogue: Catalogue, proposal: str) -> str:
    return catalogue.proposal_by_id[proposal].milestones[0].id


def post_programme_activity(live: Live) -> None:
    """A milestone event for every proposal but 3a, a KPI report, a resend and a refusal."""
    cat = live.catalogue
    for column in cat.columns:
        events = [
            milestone(p.id, first_milestone(cat, p.id), "completed")
            for p in cat.proposals_of(column.id)
            if p.id != STALLING
        ]
        events.append(milestone(cat.proposals_of(column.id)[-1].id, "no-such-milestone", "done"))
        assert live.post(column.id, events[:-1]) == 202
        assert live.post(column.id, events[:1]) == 202  # a resend: a duplicate
        assert live.post(column.id, events[-1:]) == 422  # a refusal
    # Far below the trajectory, so the KPI is off it.
    report = event("kpi", {"kpi": KPI, "value": 1000, "period": "2026-Q3"}, source=KPI_REPORTER)
    assert live.post("devolution", [report], authority=KPI_REPORTER) == 202


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel or annotation, expression) of every query of every dashboard."""
    found = []
    for name, text in generate().items():
        board = json.loads(text)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((name, panel["title"], substitute(target["expr"])))
        for annotation in board["annotations"]["list"]:
            found.append((name, annotation["name"], substitute(annotation["expr"])))
    return found


# -- the test ---------------------------------------------------------------------------------


def test_stall_alert_and_every_dashboard_query(live: Live) -> None:
    post_programme_activity(live)

    # 1. 3a has had no milestone event since the programme started: stalled, alert firing.
    firing = wait_for(live.stall_alert, "ProposalStalled to fire for 3a")
    assert firing["labels"]["column"] == "business"
    assert firing["labels"]["title"] == live.catalogue.proposal_by_id[STALLING].title
    # Absolute, so it can be followed from a notification.
    assert firing["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#proposalstalled"
    assert live.gauge(f'max(cotn_proposal_stalled{{proposal="{STALLING}"}})') == 1
    stalled = {
        a["labels"]["proposal"]
        for a in live.alerts()
        if a["labels"]["alertname"] == "ProposalStalled"
    }
    assert stalled == {STALLING}, "only the proposal with the short threshold stalls"

    # 2. Prometheus handed it to Alertmanager, which routes it to the business column.
    def routed() -> list[str] | None:
        listed = httpx.get(live.alertmanager + "/api/v2/alerts", timeout=5).json()
        hit = [a for a in listed if a["labels"].get("alertname") == "ProposalStalled"]
        return [r["name"] for r in hit[0]["receivers"]] if hit else None

    assert wait_for(routed, "the alert in Alertmanager") == ["column-business"]

    # 3. A milestone event moves the last-progress timestamp: the alert resolves.
    assert (
        live.post(
            "business",
            [milestone(STALLING, first_milestone(live.catalogue, STALLING), "in_progress")],
        )
        == 202
    )
    wait_for(
        lambda: live.stall_alert() is None,
        "ProposalStalled to resolve",
        timeout=STALL_THRESHOLD - 2,
    )
    assert live.gauge(f'max(cotn_proposal_stalled{{proposal="{STALLING}"}})') == 0

    # 4. Every milestone of 3a completed: however long it stays quiet, it never stalls.
    done = [
        milestone(STALLING, m.id, "completed")
        for m in live.catalogue.proposal_by_id[STALLING].milestones
    ]
    assert live.post("business", done) == 202
    completed_at = time.monotonic()
    wait_for(
        lambda: (
            live.gauge(f'max(cotn_proposal_unfinished_milestones{{proposal="{STALLING}"}})') == 0
        ),
        "3a's milestones to be completed",
    )

    # 5. Every panel and annotation query of every dashboard has data (those that read only
    # metrics absent until a return is due are run, and must be accepted, but may be empty).
    empty = []
    for name, title, expr in dashboard_queries():
        if set(METRIC.findall(expr)) <= DUE_ONLY:
            live.query(expr)
            continue
        try:
            wait_for(partial(live.query, expr), expr, timeout=10)
        except AssertionError:
            empty.append(f"{name} / {title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    columns = httpx.get(
        live.prometheus + "/api/v1/label/column/values",
        params={"match[]": "cotn_proposal_info"},
        timeout=5,
    ).json()["data"]
    assert sorted(columns) == sorted(live.catalogue.column_by_id)

    # 6. Past the threshold since the last event, the completed proposal is still quiet.
    quiet_until = completed_at + STALL_THRESHOLD + 3
    while time.monotonic() < quiet_until:
        assert live.stall_alert() is None, "ProposalStalled fired for a completed proposal"
        time.sleep(0.5)
