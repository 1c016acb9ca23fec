"""Figure 7: reporting and review at scale: completeness, one authority's returns, the review
queue and ``/metrics``, beside ``/v1/programme`` in the same run.

A generated programme (``reporting_authorities`` authorities, each a reporter of every one of
``reporting_kpis`` monthly KPIs, due 15 days after the month, over ``reporting_years`` years
up to this month) owes authorities x KPIs x months returns. Its returns are stored straight
into ``event`` with set-wise SQL as figure 5 does: one in twenty missing, the last authority
silent for its last six months, a quarter of them received after their due day; one in ten
approved and one in thirty-seven returned for correction by the office. The aggregator then
answers over that store with the machine's clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import yaml

from bench.context import Context
from bench.harness import percentile
from bench.results import Spec
from bench.scale import _get, _settled
from bench.workload import Scale, authority_id, generated_catalogue
from services.aggregator.db import upgrade
from shared.catalogue import Catalogue, check_catalogue
from shared.kinds.kpi import TYPE as KPI
from shared.kinds.review import TYPE as REVIEW

PROGRAMME_P50 = Spec("reporting_programme_p50", "7 GET /v1/programme p50 (reporting)", "ms")
PROGRAMME_P99 = Spec("reporting_programme_p99", "7 GET /v1/programme p99 (reporting)", "ms")


def _specs(key: str, label: str) -> tuple[Spec, Spec]:
    return (
        Spec(f"{key}_p50", f"7 {label} p50", "ms", baseline="reporting_programme_p50"),
        Spec(f"{key}_p99", f"7 {label} p99", "ms", baseline="reporting_programme_p99"),
    )


REPORTING = _specs("reporting", "GET /v1/reporting (completeness)")
AUTHORITY = _specs("reporting_authority", "GET /v1/reporting/{authority}")
QUEUE = _specs("review_queue", "GET /v1/reviews (the queue)")
METRICS = _specs("reporting_metrics", "GET /metrics (reporting)")


def _start(today: date, years: int) -> date:
    return date(today.year - years, today.month, 1)


def reporting_catalogue(shape: Scale, start: date) -> dict[str, object]:
    """The generated programme with every authority reporting every KPI monthly."""
    raw = generated_catalogue(shape)
    raw["programme_start"] = start
    everyone = [authority_id(a) for a in range(shape.authorities)]
    for kpi in raw["kpis"]:  # type: ignore[attr-defined]
        kpi["reporters"] = everyone
        kpi["returns"] = {"frequency": "monthly", "due_days": 15}
    return raw


def _id(prefix: str, zero_based: str) -> str:
    """SQL for ``f"{prefix}{n + 1:02d}"`` (lpad would cut three digits to two)."""
    n = f"({zero_based} + 1)"
    return f"'{prefix}' || CASE WHEN {n} < 10 THEN '0' ELSE '' END || {n}::text"


def returns_sql(shape: Scale, start: date, months: int) -> list[str]:
    """Set-wise SQL storing the returns (kpi events) and the office's reviews of them."""
    authority, kpi = _id("a", "a"), _id("k", "k")
    proposal = _id("p", "k")  # KPI k evidences proposal k (as many proposals as KPIs)
    column = _id("c", f"k * {shape.columns} / {shape.proposals}")
    month = f"(date '{start.isoformat()}' + m * interval '1 month')"
    period = f"to_char({month}, 'YYYY-MM')"
    # Received 1..20 days after the month: on time up to day 16 (the due day is the 15th).
    received = (
        f"({month} + interval '1 month' + ((a + k + m) % 20) * interval '1 day' "
        "+ interval '10 hours')"
    )
    target = f"'kpi.' || {kpi} || '.' || {period} || '.' || {authority}"
    last = shape.authorities - 1
    returns = f"""
INSERT INTO event (source, event_id, stream_seq, type, "column", proposal, milestone, kpi,
                   period, target, event_time, received_at, data, digest)
SELECT {authority}, 'r-' || g, g, '{KPI}', {column}, {proposal}, NULL, {kpi}, {period},
       {target}, {received}, {received},
       jsonb_build_object('kpi', {kpi}, 'value', 100 + g % 97, 'period', {period}),
       md5(g::text) || md5((g + 3)::text)
FROM (
    SELECT row_number() OVER () AS g, a, k, m
    FROM generate_series(0, {shape.authorities - 1}) AS a,
         generate_series(0, {shape.kpis - 1}) AS k,
         generate_series(0, {months - 1}) AS m
    WHERE (a * 7 + k * 13 + m * 3) % 20 <> 0 AND NOT (a = {last} AND m >= {months - 6})
) AS returns
"""
    reviews = f"""
INSERT INTO event (source, event_id, stream_seq, type, "column", proposal, milestone, kpi,
                   period, target, event_time, received_at, data, digest)
SELECT 'office/bench', 'review-' || stream_seq, stream_seq + (SELECT max(stream_seq) FROM event),
       '{REVIEW}', "column", proposal, NULL, kpi, period, target,
       received_at + interval '2 days', received_at + interval '2 days',
       jsonb_build_object(
           'action', CASE WHEN stream_seq % 10 = 0 THEN 'approve' ELSE 'return' END,
           'kpi', kpi, 'period', period, 'reporter', source,
           'reason', CASE WHEN stream_seq % 10 = 0 THEN NULL ELSE 'Please check the figure' END,
           'reviewed', jsonb_build_object('source', source, 'id', event_id)),
       md5(event_id) || md5(event_id || 'r')
FROM event WHERE type = '{KPI}' AND (stream_seq % 10 = 0 OR stream_seq % 37 = 0)
"""
    return [returns, reviews]


PROJECTION_SQL = f"""
INSERT INTO kpi_observation (kpi, period, value, event_time, stream_seq, source, event_id)
SELECT DISTINCT ON (kpi, period) kpi, period, (data->>'value')::float8, event_time,
       stream_seq, source, event_id
FROM event WHERE type = '{KPI}'
ORDER BY kpi, period, event_time DESC, stream_seq DESC
"""


async def _fill(url: str, shape: Scale, start: date, months: int) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        for statement in [*returns_sql(shape, start, months), PROJECTION_SQL]:
            await connection.execute(statement)
        await connection.execute("VACUUM ANALYZE")
        await connection.execute("CHECKPOINT")
        counts = await connection.fetch("SELECT type, count(*) FROM event GROUP BY type")
        return {str(row[0]).split(".")[2] + "s": int(row[1]) for row in counts}
    finally:
        await connection.close()


async def reporting(ctx: Context) -> None:
    sizes = ctx.sizes
    shape = Scale(
        columns=10,
        proposals=sizes.reporting_kpis,
        milestones_per_proposal=4,
        authorities=sizes.reporting_authorities,
        kpis=sizes.reporting_kpis,
    )
    today = datetime.now(UTC).date()
    start = _start(today, sizes.reporting_years)
    months = (today.year - start.year) * 12 + today.month - start.month + 1
    path = ctx.workdir("reporting-catalogue") / "catalogue.yaml"
    path.write_text(
        yaml.safe_dump(reporting_catalogue(shape, start), sort_keys=False), encoding="utf-8"
    )
    catalogue, problems = check_catalogue(path)
    if not isinstance(catalogue, Catalogue):
        raise ValueError(f"generated catalogue is invalid: {problems[:3]}")
    requests = max(3, sizes.read_requests // 10)  # each answer reads every return owed
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        setup = await _fill(url, shape, start, months)
        owed = shape.authorities * shape.kpis * months
        ctx.results.detail("reporting", {"returns_owed": owed, "months": months, **setup})
        for _ in range(sizes.runs):
            async with ctx.bench.nats() as server:
                async with ctx.bench.aggregator(server.url, url, catalogue=path) as agg:
                    await _settled(url, len(catalogue.proposals))
                    measured = {
                        key: await _get(agg.url, route, requests)
                        for key, route in (
                            ("programme", "/v1/programme"),
                            ("reporting", "/v1/reporting"),
                            ("authority", f"/v1/reporting/{authority_id(0)}"),
                            ("queue", "/v1/reviews"),
                            ("metrics", "/metrics"),
                        )
                    }
            for (p50, p99), key in (
                ((PROGRAMME_P50, PROGRAMME_P99), "programme"),
                (REPORTING, "reporting"),
                (AUTHORITY, "authority"),
                (QUEUE, "queue"),
                (METRICS, "metrics"),
            ):
                ctx.results.add(p50, percentile(measured[key], 0.5) * 1000)
                ctx.results.add(p99, percentile(measured[key], 0.99) * 1000)
