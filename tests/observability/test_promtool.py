"""The Prometheus configuration and alert rules, checked and unit-tested with promtool."""

from __future__ import annotations

import re

import pytest

from .support import (
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES_FILE,
    RUNBOOK,
    alert_rules,
    heading_anchors,
    load_yaml,
    run_tool,
    tool,
)

EXPECTED_ALERTS = {
    "ProposalStalled",
    "MilestoneOverdue",
    "ProposalRed",
    "KpiOffTrajectory",
    "ReporterSilent",
    "AuthorityEventsRejected",
    "AggregatorBacklogGrowing",
    "DeadLetters",
    "AggregatorDatabaseDown",
    "AggregatorBusUnreachable",
    "ServiceDown",
}
PROPOSAL_ALERTS = {"ProposalStalled", "MilestoneOverdue", "ProposalRed"}


def test_prometheus_config_is_valid() -> None:
    result = run_tool(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob must reach the shipped rules, not an empty match.
    assert "1 rule files found" in result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = run_tool(tool("promtool"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = run_tool(tool("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_the_shipped_alerts_are_the_contracts() -> None:
    assert set(alert_rules()) == EXPECTED_ALERTS


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_every_alert_is_unit_tested_firing_and_quiet(alert: str) -> None:
    """Each alert has a unit test where it fires and one where it must not."""
    cases = [
        case
        for path in RULE_TESTS
        for group in load_yaml(path)["tests"]
        for case in group.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case.get("exp_alerts") for case in cases), f"{alert} never fires in a test"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert} is never quiet"


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_every_alert_has_severity_summary_and_a_runbook_section(alert: str) -> None:
    rule = alert_rules()[alert]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["team"] in {"programme", "operations"}
    assert rule["annotations"]["summary"]
    url = rule["annotations"]["runbook_url"]
    base, _, anchor = url.partition("#")
    # Absolute once rendered: the base is the external label prometheus.yml sets.
    assert base == "{{ $externalLabels.runbook_base }}"
    assert anchor in heading_anchors(RUNBOOK.read_text(encoding="utf-8")), url


@pytest.mark.parametrize("alert", sorted(PROPOSAL_ALERTS))
def test_proposal_alerts_name_the_proposal_by_title(alert: str) -> None:
    rule = alert_rules()[alert]
    assert "group_left (title)" in rule["expr"]
    assert "cotn_proposal_info" in rule["expr"]
    assert "{{ $labels.title }}" in rule["annotations"]["summary"]


def test_the_stall_rule_is_generic() -> None:
    """One rule for every proposal: thresholds come from the metric, not from the rule."""
    expr = alert_rules()["ProposalStalled"]["expr"]
    assert not re.search(r'proposal\s*=~?\s*"', expr)
    assert "cotn_proposal_stall_threshold_seconds" in expr
    assert "cotn_proposal_unfinished_milestones) > 0" in expr


def test_a_silent_reporter_is_one_alert_per_obligation_not_per_period() -> None:
    """Kept by authority and obligation (and column, for routing): a new period neither
    resolves it nor fires it again, and it is told apart from a stall or an overdue date."""
    rule = alert_rules()["ReporterSilent"]
    grouping = re.search(r"max by \(([^)]*)\) \(cotn_reporter_silent\)", rule["expr"])
    assert grouping, rule["expr"]
    assert {g.strip() for g in grouping.group(1).split(",")} == {
        "column",
        "authority",
        "obligation",
        "kind",
    }
    assert rule["labels"]["severity"] == "warning"
    assert "rag" not in rule["labels"]  # a silent reporter does not rate the proposal
    text = rule["annotations"]["summary"] + rule["annotations"]["description"]
    assert "stalled proposal" in text and "overdue milestone" in text
    for label in ("authority", "obligation", "column"):
        assert f"$labels.{label}" in text
