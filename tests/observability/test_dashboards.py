"""The dashboards as code: committed JSON equals the builders' output, the queries read
metrics the services export, and ``cotn dashboards build|publish`` work (publish against a
small fake Grafana on loopback that records what it is sent)."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from dashboards.builders import BUILDERS, JSON_DIR, generate
from dashboards.builders.common import DATASOURCE_UID, DATASOURCE_VARIABLE
from services.aggregator.metrics import programme_families
from services.aggregator.opmetrics import OperationalMetrics
from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE
from services.cli.main import app
from services.ingest.metrics import IngestMetrics
from shared.catalogue import Catalogue
from shared.health import ProgrammeState, programme_health
from shared.natsserver import free_port

from .support import REPO, alert_rules

METRIC = re.compile(r"\b(cotn_[a-z_]+|up)\b")
REPORTING_METRICS = {
    "cotn_reporting_returns",
    "cotn_reporting_completeness_ratio",
    "cotn_reporting_timeliness_ratio",
    "cotn_reporter_silent",
    "cotn_reviews_waiting",
    "cotn_reviews_returned",
    "cotn_events_kept_aside",
    "cotn_kpi_actual_approved",
    "cotn_kpi_returns",
}
"""What the aggregator exports about returns and reviews (services/aggregator/metrics.py)."""
BY_AUTHORITY = {
    "cotn_reporting_returns",
    "cotn_reporting_completeness_ratio",
    "cotn_reporting_timeliness_ratio",
    "cotn_reporter_silent",
}
"""Those of them labelled by authority (and column)."""


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in generate().items()}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and annotations."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    return exprs + [a["expr"] for a in board["annotations"]["list"]]


def exported_metric_names(catalogue: Catalogue) -> set[str]:
    """Every metric and sample name the column services and the aggregator export."""
    registry = CollectorRegistry()
    OperationalMetrics(registry)
    IngestMetrics("business", registry, authorities=catalogue.authority_by_id)
    names = {s.name for family in registry.collect() for s in family.samples}
    # A gauge absent until its source is read (cotn_consumer_backlog) is exported all the same.
    names |= {family.name for family in registry.collect() if family.type == "gauge"}
    health = programme_health(catalogue, ProgrammeState(), datetime.now(UTC))
    names |= {family.name for family in programme_families(catalogue, health)}
    return names | {"up"}


# -- generated, not hand-kept -----------------------------------------------------------------


def test_committed_json_is_what_the_builders_generate() -> None:
    generated = generate()
    committed = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.json")}
    assert sorted(committed) == sorted(generated), "run `cotn dashboards build`"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run `cotn dashboards build`"


def test_cotn_dashboards_build_writes_the_same_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generate())
    for path in tmp_path.iterdir():
        assert path.read_text(encoding="utf-8") == (JSON_DIR / path.name).read_text("utf-8")
    assert result.stdout.splitlines() == [str(tmp_path / name) for name in generate()]


# -- what every dashboard has -----------------------------------------------------------------


def test_the_dashboards_have_stable_uids_named_like_their_files() -> None:
    boards = dashboards()
    assert set(BUILDERS) == {
        "cotn-overview",
        "cotn-column",
        "cotn-kpis",
        "cotn-operations",
        "cotn-reporting",
    }
    for name, board in boards.items():
        assert name == f"{board['uid']}.json"


@pytest.mark.parametrize("name", sorted(generate()))
def test_every_panel_reads_the_datasource_variable(name: str) -> None:
    board = dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables[DATASOURCE_VARIABLE]["type"] == "datasource"
    assert variables[DATASOURCE_VARIABLE]["current"]["value"] == DATASOURCE_UID
    sources = [p["datasource"] for p in panels(board)]
    sources += [a["datasource"] for a in board["annotations"]["list"]]
    assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)


@pytest.mark.parametrize("name", sorted(generate()))
def test_panels_are_numbered_and_every_query_has_a_ref_id(name: str) -> None:
    board = dashboards()[name]
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in panels(board):
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and all(refs) and len(set(refs)) == len(refs), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("name", sorted(generate()))
def test_milestone_completions_are_annotated(name: str) -> None:
    [annotation] = dashboards()[name]["annotations"]["list"]
    assert annotation["enable"] is True
    assert "cotn_proposal_unfinished_milestones" in annotation["expr"]


def test_the_column_board_is_one_dashboard_with_a_column_variable() -> None:
    board = dashboards()["cotn-column.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["column"]["query"] == "label_values(cotn_proposal_info, column)"
    assert all('column="$column"' in expr for expr in expressions(board))


def test_the_reporting_board_filters_by_column_and_authority() -> None:
    """Each query filters by the variables its metric carries: the returns metrics by column
    and authority, the review queue by column; KPI approvals are per KPI only."""
    board = dashboards()["cotn-reporting.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["column"]["query"] == "label_values(cotn_reporting_returns, column)"
    assert variables["authority"]["query"] == (
        'label_values(cotn_reporting_returns{column=~"$column"}, authority)'
    )
    assert variables["column"]["multi"] and variables["authority"]["multi"]
    for expr in expressions(board):
        names = set(METRIC.findall(expr))
        if names <= {"cotn_kpi_actual_approved", "cotn_kpi_returns"}:
            continue  # per KPI: no column, no authority
        assert 'column=~"$column"' in expr, expr
        if names & BY_AUTHORITY:
            assert 'authority=~"$authority"' in expr, expr


def test_the_reporting_board_reads_every_reporting_metric() -> None:
    used = {n for e in expressions(dashboards()["cotn-reporting.json"]) for n in METRIC.findall(e)}
    assert REPORTING_METRICS <= used, REPORTING_METRICS - used


def test_queries_and_rules_read_only_metrics_the_services_export(catalogue: Catalogue) -> None:
    exported = exported_metric_names(catalogue)
    used = {
        (name, where)
        for where, board in dashboards().items()
        for expr in expressions(board)
        for name in METRIC.findall(expr)
    }
    used |= {(n, alert) for alert, r in alert_rules().items() for n in METRIC.findall(r["expr"])}
    missing = sorted((name, where) for name, where in used if name not in exported)
    assert not missing


# -- publish, against a fake Grafana ----------------------------------------------------------


@dataclass
class FakeGrafana:
    """Records every request; answers POST /api/dashboards/db like Grafana, or ``status``."""

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    port = free_port()
    fake = FakeGrafana(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            fake.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if fake.status != 200:
                self._answer(fake.status, {"message": "nope"})
                return
            uid = body["dashboard"]["uid"]
            self._answer(200, {"status": "success", "uid": uid, "url": f"/d/{uid}", "version": 1})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def publish(*args: str) -> Any:
    return CliRunner().invoke(app, ["dashboards", "publish", *args], env={"GRAFANA_TOKEN": None})


def test_publish_posts_every_dashboard_with_the_token(grafana: FakeGrafana) -> None:
    result = publish("--grafana-url", grafana.url, "--token", "glsa_test", "--folder-uid", "cotn")
    assert result.exit_code == 0, result.output
    assert [c["path"] for c in grafana.calls] == ["/api/dashboards/db"] * len(BUILDERS)
    assert [c["body"]["dashboard"]["uid"] for c in grafana.calls] == list(BUILDERS)
    for call in grafana.calls:
        assert call["headers"]["Authorization"] == "Bearer glsa_test"
        assert call["body"]["overwrite"] is True
        assert call["body"]["folderUid"] == "cotn"
        assert "id" not in call["body"]["dashboard"]
    assert grafana.calls[0]["body"]["dashboard"] == dashboards()["cotn-overview.json"]
    assert result.stdout.splitlines()[0] == "cotn-overview: success /d/cotn-overview"


def test_publish_with_user_and_password_uploads_the_files_of_a_folder(
    grafana: FakeGrafana, tmp_path: Path
) -> None:
    (tmp_path / "one.json").write_text(json.dumps({"uid": "one", "id": 7, "title": "One"}))
    result = publish(
        "--grafana-url", grafana.url, "--user", "admin", "--password", "pw", "--from", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    [call] = grafana.calls
    assert call["body"]["dashboard"] == {"uid": "one", "title": "One"}
    assert call["headers"]["Authorization"] == "Basic " + base64.b64encode(b"admin:pw").decode()


def test_publish_refused_by_grafana_exits_1(grafana: FakeGrafana) -> None:
    grafana.status = 401
    result = publish("--grafana-url", grafana.url, "--token", "wrong")
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.startswith("cotn: error: Grafana refused dashboard cotn-overview:")
    assert len(grafana.calls) == 1


def test_publish_to_nothing_exits_3() -> None:
    result = publish("--grafana-url", f"http://127.0.0.1:{free_port()}", "--token", "t")
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "did not answer" in result.stderr


def test_publish_needs_user_and_password_together() -> None:
    result = publish("--grafana-url", "http://127.0.0.1:1", "--user", "admin")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--user and --password go together" in result.stderr


def test_repo_json_dir_is_the_one_grafana_provisions() -> None:
    assert JSON_DIR == REPO / "dashboards" / "json"
