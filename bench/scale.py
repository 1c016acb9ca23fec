"""Figure 5: the read side at scale (the JSON board and the web board's pages), and
``cotn replay``.

A generated programme (``scale_proposals`` proposals, ten milestones each) is written as
YAML and checked as ``cotn catalogue check`` would. ``scale_events`` events are stored
straight into the ``event`` table with set-wise SQL (``generate_series``): sending a
million events through HTTP, JetStream and the consumer would take longer than the rest of
the bench together, and the read side only sees the stored rows. The projections are then
built by hand-written SQL, which is also the floor ``cotn replay`` is compared with.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time

import asyncpg

from bench.context import Context
from bench.harness import Pool, cotn_argv, percentile, timer
from bench.results import Goal, Spec
from bench.workload import BARE_PROJECTIONS_SQL, Scale, bulk_events_sql, write_catalogue
from services.aggregator.db import upgrade

BARE_READ_P50 = Spec("bare_read_p50", "5 bare read of the projections p50", "ms")
BARE_READ_P99 = Spec("bare_read_p99", "5 bare read of the projections p99", "ms")
PROGRAMME_P50 = Spec(
    "programme_p50", "5 GET /v1/programme p50 at scale", "ms", baseline="bare_read_p50"
)
PROGRAMME_P99 = Spec(
    "programme_p99",
    "5 GET /v1/programme p99 at scale",
    "ms",
    baseline="bare_read_p99",
    goal=Goal("below", 200.0),
)
METRICS_P50 = Spec("metrics_p50", "5 GET /metrics p50 at scale", "ms", baseline="bare_read_p50")
METRICS_P99 = Spec(
    "metrics_p99",
    "5 GET /metrics p99 at scale",
    "ms",
    baseline="bare_read_p99",
    goal=Goal("below", 200.0),
)
PAGE_P50 = Spec(
    "programme_page_p50", "5 GET / (web board) p50 at scale", "ms", baseline="programme_p50"
)
PAGE_P99 = Spec(
    "programme_page_p99",
    "5 GET / (web board) p99 at scale",
    "ms",
    baseline="programme_p99",
    goal=Goal("ratio_at_most", 1.5),
)
PROPOSAL_PAGE_P50 = Spec(
    "proposal_page_p50", "5 GET /proposals/{id} (web) p50 at scale", "ms", baseline="programme_p50"
)
PROPOSAL_PAGE_P99 = Spec(
    "proposal_page_p99",
    "5 GET /proposals/{id} (web) p99 at scale",
    "ms",
    baseline="programme_p99",
    goal=Goal("ratio_at_most", 1.5),
)
BARE_REBUILD = Spec("bare_rebuild", "5 bare SQL rebuild of the projections", "events/s")
REPLAY = Spec(
    "replay",
    "5 cotn replay",
    "events/s",
    baseline="bare_rebuild",
    goal=Goal("at_least", 50_000),
)
REPLAYED = re.compile(r"Replayed ([\d,]+) events .* in ([\d.]+)s")
SETTLE_WITHIN = 300.0


async def scale(ctx: Context) -> None:
    sizes = ctx.sizes
    shape = Scale(
        proposals=sizes.scale_proposals,
        milestones_per_proposal=sizes.scale_milestones_per_proposal,
        columns=min(10, sizes.scale_proposals),
    )
    path, catalogue = write_catalogue(shape, ctx.workdir("catalogue"))
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        setup = await _fill(url, shape, sizes.scale_events)
        ctx.results.detail(
            "scale",
            {
                "proposals": len(catalogue.proposals),
                "milestones": sum(len(p.milestones) for p in catalogue.proposals),
                "kpis": len(catalogue.kpis),
                **setup,
            },
        )
        for _ in range(sizes.runs):
            async with ctx.bench.nats() as server:
                async with ctx.bench.aggregator(server.url, url, catalogue=path) as agg:
                    await _settled(url, len(catalogue.proposals))
                    bare = await _bare_reads(url, sizes.read_requests)
                    programme = await _get(agg.url, "/v1/programme", sizes.read_requests)
                    metrics = await _get(agg.url, "/metrics", sizes.read_requests)
                    async with ctx.bench.office(agg.url) as office:
                        page = await _get(office.url, "/", sizes.read_requests)
                        one = f"/proposals/{catalogue.proposals[-1].id}"
                        proposal_page = await _get(office.url, one, sizes.read_requests)
            for specs, values in (
                ((BARE_READ_P50, BARE_READ_P99), bare),
                ((PROGRAMME_P50, PROGRAMME_P99), programme),
                ((METRICS_P50, METRICS_P99), metrics),
                ((PAGE_P50, PAGE_P99), page),
                ((PROPOSAL_PAGE_P50, PROPOSAL_PAGE_P99), proposal_page),
            ):
                ctx.results.add(specs[0], percentile(values, 0.5) * 1000)
                ctx.results.add(specs[1], percentile(values, 0.99) * 1000)
            ctx.results.add(BARE_REBUILD, sizes.scale_events / await _bare_rebuild(url))
            replayed, seconds, wall = await _replay(url, str(path))
            ctx.results.add(REPLAY, replayed / seconds)
            ctx.results.detail("replay", {"events": replayed, "seconds": seconds, "wall": wall})


async def _fill(url: str, shape: Scale, events: int) -> dict[str, float]:
    connection = await asyncpg.connect(url)
    try:
        with timer() as insert:
            for statement in bulk_events_sql(shape, events):
                await connection.execute(statement)
        inserted = insert()
        with timer() as project:
            async with connection.transaction():
                for statement in BARE_PROJECTIONS_SQL:
                    await connection.execute(statement)
        await connection.execute("VACUUM ANALYZE")
        # Flush the fill's WAL now: its checkpoint would otherwise land in the measurements.
        await connection.execute("CHECKPOINT")
        stored = await connection.fetchval("SELECT count(*) FROM event")
        states = await connection.fetchval("SELECT count(*) FROM milestone_state")
        return {
            "events": int(stored),
            "milestone_states": int(states),
            "insert_seconds": round(inserted, 2),
            "projection_seconds": round(project(), 2),
        }
    finally:
        await connection.close()


async def _settled(url: str, proposals: int) -> None:
    """Wait until the aggregator's first status pass has recorded every proposal."""
    connection = await asyncpg.connect(url)
    deadline = time.monotonic() + SETTLE_WITHIN
    try:
        while time.monotonic() < deadline:
            if await connection.fetchval("SELECT count(*) FROM proposal_status") >= proposals:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the first status pass did not finish in {SETTLE_WITHIN}s")
    finally:
        await connection.close()


async def _bare_reads(url: str, count: int) -> list[float]:
    """Fetch every projection row with asyncpg: what loading the state costs at the least."""
    connection = await asyncpg.connect(url)
    out = []
    try:
        for _ in range(count + 2):
            with timer() as took:
                await connection.fetch("SELECT * FROM milestone_state")
                await connection.fetch("SELECT * FROM kpi_observation")
            out.append(took())
    finally:
        await connection.close()
    return out[2:]


async def _get(url: str, path: str, count: int) -> list[float]:
    """Sequential GETs (two to warm up first); the seconds each took."""
    pool = Pool(url)
    out = []
    try:
        for _ in range(count + 2):
            with timer() as took:
                status, body = await pool.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
            out.append(took())
    finally:
        await pool.close()
    return out[2:]


async def _bare_rebuild(url: str) -> float:
    connection = await asyncpg.connect(url)
    try:
        with timer() as took:
            async with connection.transaction():
                for statement in BARE_PROJECTIONS_SQL:
                    await connection.execute(statement)
        return took()
    finally:
        await connection.close()


async def _replay(url: str, catalogue: str) -> tuple[int, float, float]:
    """``cotn replay`` in a child process: (events, its own seconds, wall seconds)."""
    argv = cotn_argv("replay", "--database-url", url, "--catalogue", catalogue)
    with timer() as wall:
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, check=False, timeout=900
        )
    if done.returncode != 0:
        raise RuntimeError(f"cotn replay failed: {done.stdout}{done.stderr}")
    found = REPLAYED.search(done.stdout)
    if found is None:
        raise RuntimeError(f"cotn replay said: {done.stdout!r}")
    return int(found[1].replace(",", "")), float(found[2]), wall()
