"""The programme gauges' own renderer writes what prometheus_client would, byte for byte."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from services.aggregator.board import NO_LOCKS
from services.aggregator.gauges import Gauge, approval_gauge, programme_gauges, render_gauges
from services.aggregator.metrics import NO_QUEUE, OfficeGauges, office_gauges, programme_families
from shared.catalogue import Catalogue
from shared.health import (
    KpiObservation,
    MilestoneState,
    ProgrammeHealth,
    ProgrammeState,
    programme_health,
)
from shared.kinds.milestone import MILESTONE_STATUSES
from shared.reporting import extra_returns, obligations, statuses


class _Families(Collector):
    def __init__(self, gauges: list[Gauge]) -> None:
        self._gauges = gauges

    def collect(self):  # type: ignore[no-untyped-def]
        return [g.family() for g in self._gauges]


def test_render_gauges_matches_generate_latest() -> None:
    odd = Gauge("cotn_test_odd", "Help with a \\ backslash\nand a newline", ["zeta", "alpha"])
    odd.add_metric(['quote " here', "back\\slash"], 1)
    odd.add_metric(["new\nline", "plain"], 0.5)
    odd.add_metric(["big", "neg"], -1e21)
    odd.add_metric(["nan", "inf"], float("inf"))
    ints = Gauge("cotn_test_ints", "Small and large ints", ["kpi"])
    for n in (0, 1, 2, 255, 256, 10**9):
        ints.add_metric([f"k{n}"], n)
    bare = Gauge("cotn_test_bare", "No labels", [])
    bare.add_metric([], 3.25)
    gauges = [odd, ints, bare]
    assert render_gauges(gauges) == _exposition(gauges)


def _exposition(gauges: list[Gauge]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(gauges))
    return generate_latest(registry)


def test_a_second_render_reads_the_same_series_text() -> None:
    # The same label values under two families whose label names sort differently: each
    # family's series text is its own, however often it is rendered.
    one = Gauge("cotn_test_pair", "Two labels", ["b", "a"])
    two = Gauge("cotn_test_pair_other", "Two labels the other way", ["a", "b"])
    for gauge in (one, two):
        gauge.add_metric(["x", 'y"'], 1)
        gauge.add_metric(("x", "z"), 2.5)
    expected = _exposition([one, two])
    assert render_gauges([one, two]) == expected
    assert render_gauges([one, two]) == expected
    assert b'cotn_test_pair{a="y\\"",b="x"} 1.0' in expected


def test_programme_gauges_match_prometheus_client_for_a_whole_board(catalogue: Catalogue) -> None:
    # The /metrics text of a whole programme, against prometheus_client's own exposition of
    # the same gauges as families: byte for byte.
    now = datetime(2026, 2, 1, tzinfo=UTC)
    states = {
        (p.id, m.id): MilestoneState(
            p.id, m.id, MILESTONE_STATUSES[(i + j) % 5], now - timedelta(days=i + j), "x", f"e{i}"
        )
        for i, p in enumerate(catalogue.proposals)
        for j, m in enumerate(p.milestones)
        if (i + j) % 2
    }
    observations = {
        k.id: [KpiObservation(k.id, "2025", k.baseline.value * 0.5, now, "x")]
        for k in catalogue.kpis[:3]
    }
    health = programme_health(catalogue, ProgrammeState(states, observations), now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Programme(catalogue, health))
    assert render_gauges(
        [
            *programme_gauges(catalogue, health),
            approval_gauge(catalogue, health, NO_LOCKS),
            *office_gauges(catalogue, [], [], NO_QUEUE),
        ]
    ) == generate_latest(registry)


def test_office_gauges_match_prometheus_client(catalogue: Catalogue) -> None:
    today = date(2025, 8, 1)
    owed = obligations(catalogue, today)
    received = {o.key: datetime(2025, 4, 2, tzinfo=UTC) for o in owed[::3]}
    received[("update", "2b", "cumbria", "2025-Q2")] = datetime(2025, 5, 2, tzinfo=UTC)
    found = statuses(owed, received, today)
    gauges = office_gauges(catalogue, found, extra_returns(owed, received), NO_QUEUE)
    expected = _exposition(gauges)
    assert render_gauges(gauges) == expected
    text = expected.decode()
    extra = (
        'cotn_reporting_returns{authority="cumbria",column="collaboration",period="2025-Q2",'
        'state="extra"} 1.0'
    )
    assert extra in text
    assert "cotn_reporter_silent{" in text and "cotn_reporting_completeness_ratio{" in text


class _Programme(Collector):
    def __init__(self, catalogue: Catalogue, health: ProgrammeHealth) -> None:
        self._catalogue = catalogue
        self._health = health

    def collect(self):  # type: ignore[no-untyped-def]
        return programme_families(self._catalogue, self._health)


async def test_office_gauges_are_read_again_in_the_background_once_stale() -> None:
    reads: list[int] = []
    release = asyncio.Event()
    now = [0.0]

    async def read() -> bytes:
        reads.append(len(reads))
        if len(reads) > 1:
            await release.wait()
        if len(reads) == 3:
            raise OSError("the database is away")
        return f"read {len(reads)}\n".encode()

    office = OfficeGauges(read, every=30.0, monotonic=lambda: now[0])
    assert await office.text() == b"read 1\n"  # the first scrape waits: nothing to serve
    now[0] = 29.0
    assert await office.text() == b"read 1\n" and len(reads) == 1  # still fresh
    now[0] = 30.0
    assert await office.text() == b"read 1\n"  # stale: served, and read again meanwhile
    assert await office.text() == b"read 1\n"  # one read at a time
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await office.text() == b"read 2\n" and len(reads) == 2
    now[0] = 60.0
    assert await office.text() == b"read 2\n"
    for _ in range(3):
        await asyncio.sleep(0)
    assert await office.text() == b"read 2\n"  # a failed read keeps the last text
    assert len(reads) == 3
