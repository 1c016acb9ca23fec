"""``python -m bench``: its pure parts and the shape of what a tiny run writes (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import FIGURES, parse, steps_for
from bench.harness import percentile
from bench.results import Goal, Results, Spec
from bench.workload import Scale, bulk_events_sql, column_events, mixed_events, write_catalogue
from shared.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parent.parent


def test_generated_catalogue_is_valid(tmp_path: Path) -> None:
    shape = Scale(columns=3, proposals=30, milestones_per_proposal=4, authorities=5, kpis=4)
    path, catalogue = write_catalogue(shape, tmp_path)
    assert path.read_text().startswith("programme:")
    assert len(catalogue.proposals) == 30
    assert sum(len(p.milestones) for p in catalogue.proposals) == 120
    assert sorted(catalogue.column_of.values()) == sorted(
        c.id for c in catalogue.columns for _ in c.proposals
    )
    assert all(k.evidences for k in catalogue.kpis)
    sql = " ".join(bulk_events_sql(shape, 1000))
    assert "generate_series(1, 900)" in sql and "generate_series(1, 100)" in sql


def test_events_are_ones_the_services_accept() -> None:
    catalogue = load_catalogue()
    mixed = mixed_events(catalogue, 50)
    assert len({m.msg_id for m in mixed}) == 50
    for m in column_events(catalogue, "collaboration", "greater-manchester", 50):
        assert m.subject.startswith("cotn.events.collaboration.")
        assert m.event["source"] == "greater-manchester"


def test_ratios_goals_and_percentiles() -> None:
    results = Results()
    base = Spec("base", "base", "events/s")
    figure = Spec("fig", "fig", "events/s", baseline="base", goal=Goal("ratio_at_least", 0.5))
    for value in (100.0, 300.0, 200.0):
        results.add(base, value)
    for value in (90.0, 110.0, 120.0):
        results.add(figure, value)
    row = next(r for r in results.rows() if r["key"] == "fig")
    assert (row["median"], row["min"], row["max"]) == (110.0, 90.0, 120.0)
    assert row["ratio"] == pytest.approx(0.55) and row["goal_met"] is True
    assert Goal("below", 25).met(30, None) is False
    assert Goal("ratio_at_most", 1.1).met(100, 1.05) is True
    assert percentile([1, 2, 3, 4], 0.5) == 2.5


def test_only_adds_the_baselines_a_figure_needs() -> None:
    assert steps_for(["aggregator"]) == ["bare_loop", "aggregator"]
    assert steps_for(["ingest"])[:2] == ["raw_publish", "raw_latency"]
    assert parse(["--quick", "--only", "ingest,scale"]).only == ["ingest", "scale"]
    assert set(FIGURES) == {
        *("bare", "ingest", "aggregator", "e2e", "scale", "history", "reporting"),
        *("exports", "design"),
    }


@pytest.mark.slow
def test_a_quick_run_writes_the_results_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ingest", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = tmp_path.glob("bench-*.json")
    document = json.loads(path.read_text())
    assert document["quick"] is True
    assert {"nproc", "memory_mib", "cpu_model"} <= set(document["machine"])
    versions = document["versions"]
    assert {"python", "nats_server", "postgresql", "faststream", "sqlalchemy"} <= set(versions)
    figures = {f["key"]: f for f in document["figures"]}
    assert {"raw_publish", "ingest_batch", "ingest_single_p99"} <= set(figures)
    batch = figures["ingest_batch"]
    assert batch["baseline"] == "raw_publish" and batch["ratio"] > 0
    assert batch["min"] <= batch["median"] <= batch["max"]
    assert batch["goal"] and batch["goal_met"] in (True, False)
