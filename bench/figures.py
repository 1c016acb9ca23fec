"""Figures 1-4: bare limits, ingestion, the aggregator (and its memory), end to end.

Each step runs ``sizes.runs`` times and adds one sample per run to each of its figures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg

from bench import bare
from bench.context import Context, Sizes
from bench.drain import DrainWatch, delete_consumer, watch_drain
from bench.harness import Pool, free_port, percentile, token_for
from bench.results import Goal, Spec
from bench.workload import Message, batch_body, column_events, mixed_events
from services.aggregator.db import upgrade

SOURCE = "greater-manchester"
"""A partner of every proposal: it may post to every column."""
LATENCY_SOURCE = "np11"
BATCH = 500
BATCH_TYPE = "application/cloudevents-batch+json"
SINGLE_TYPE = "application/cloudevents+json"

RAW_PUBLISH = Spec("raw_publish", "1 raw JetStream publish, acks pending", "events/s")
RAW_P50 = Spec("raw_single_p50", "1 raw single publish p50 @ rate", "ms")
RAW_P99 = Spec("raw_single_p99", "1 raw single publish p99 @ rate", "ms")
CLAIMED_P50 = Spec(
    "raw_claimed_p50", "1 raw claim, then event, p50 @ rate", "ms", baseline="raw_single_p50"
)
CLAIMED_P99 = Spec(
    "raw_claimed_p99", "1 raw claim, then event, p99 @ rate", "ms", baseline="raw_single_p99"
)
ATOMIC_P50 = Spec(
    "raw_atomic_p50",
    "1 raw claim + event, one atomic batch, p50 @ rate",
    "ms",
    baseline="raw_single_p50",
)
ATOMIC_P99 = Spec(
    "raw_atomic_p99",
    "1 raw claim + event, one atomic batch, p99 @ rate",
    "ms",
    baseline="raw_single_p99",
)
BARE_LOOP = Spec("bare_loop", "1 bare pull→decode→insert→commit→ack (PG)", "events/s")
BARE_SQLITE = Spec("bare_loop_sqlite", "1 bare pull→decode→insert→commit→ack (SQLite)", "events/s")
INGEST_BATCH = Spec(
    "ingest_batch",
    "2 HTTP batches of 500 → JetStream-acked",
    "events/s",
    baseline="raw_publish",
    goal=Goal("ratio_at_least", 0.5),
)
INGEST_P50 = Spec(
    "ingest_single_p50", "2 single-event POST p50 @ rate", "ms", baseline="raw_single_p50"
)
INGEST_P99 = Spec(
    "ingest_single_p99",
    "2 single-event POST p99 @ rate",
    "ms",
    baseline="raw_single_p99",
    goal=Goal("below", 25.0),
)
PEER_P50 = Spec("peer_single_p50", "2 bare peer route POST p50 @ rate", "ms")
PEER_P99 = Spec("peer_single_p99", "2 bare peer route POST p99 @ rate", "ms")
INGEST_P99_VS_PEER = Spec(
    "ingest_single_p99_vs_peer",
    "2 single-event POST p99 against the bare peer",
    "ms",
    baseline="peer_single_p99",
    goal=Goal("ratio_at_most", 1.5),
)
INGEST_FAILED = Spec(
    "ingest_single_failed",
    "2 single-event POSTs not answered 202",
    "requests",
    goal=Goal("at_most", 0),
)
AGG_PG = Spec(
    "aggregator_postgres",
    "3 aggregator → PostgreSQL (projections, health)",
    "events/s",
    baseline="bare_loop",
    goal=Goal("ratio_at_least", 0.7),
)
AGG_SQLITE = Spec(
    "aggregator_sqlite",
    "3 aggregator → SQLite (projections, health)",
    "events/s",
    baseline="bare_loop",
    goal=Goal("ratio_at_least", 0.7),
)
AGG_SQLITE_SHARE = Spec(
    "aggregator_sqlite_share",
    "3 aggregator → SQLite, against the SQLite bare loop",
    "events/s",
    baseline="bare_loop_sqlite",
)
RSS_EARLY = Spec("aggregator_rss_early", "5 aggregator peak RSS, early checkpoint", "MiB")
RSS_END = Spec(
    "aggregator_rss_end",
    "5 aggregator peak RSS, end of drain",
    "MiB",
    baseline="aggregator_rss_early",
    goal=Goal("ratio_at_most", 1.1),
)
E2E_RATE = Spec(
    "e2e_throughput",
    "4 end to end: HTTP batches → visible",
    "events/s",
    baseline="raw_publish",
)
E2E_P50 = Spec("e2e_p50", "4 end to end: 202 → in /v1/events p50", "ms")
E2E_P99 = Spec("e2e_p99", "4 end to end: 202 → in /v1/events p99", "ms")


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


# --- 1: bare limits ---------------------------------------------------------------------


async def raw_publish(ctx: Context) -> None:
    if "ingest" in ctx.steps:
        return  # measured in each ingest run
    for run in range(ctx.sizes.runs):
        await _raw_publish_once(ctx, run)


async def _raw_publish_once(ctx: Context, run: int) -> None:
    messages = mixed_events(ctx.catalogue, ctx.sizes.raw_events, seed=100 + run)
    async with ctx.bench.nats() as server:
        seconds = await bare.publish_all(server.url, messages)
    ctx.results.add(RAW_PUBLISH, len(messages) / seconds)


async def raw_latency(ctx: Context) -> None:
    if "ingest" in ctx.steps:
        return  # measured in each ingest run
    for run in range(ctx.sizes.runs):
        await _raw_latency_once(ctx, run)


async def _raw_latency_once(ctx: Context, run: int) -> None:
    sizes = ctx.sizes
    count = int(sizes.rate * sizes.latency_seconds)
    messages = mixed_events(ctx.catalogue, count, seed=200 + run)
    async with ctx.bench.nats() as server:
        latencies, failures = await bare.single_publish_latencies(server.url, messages, sizes.rate)
    ctx.results.add(RAW_P50, _ms(latencies, 0.5))
    ctx.results.add(RAW_P99, _ms(latencies, 0.99))
    ctx.results.detail("raw_single", {"requests": count, "failures": failures})
    # What a single event costs the bus with its claim (#17), and as one atomic batch: each on
    # a server of its own, so that no measurement writes into another's stream.
    for atomic, (p50, p99) in (
        (False, (CLAIMED_P50, CLAIMED_P99)),
        (True, (ATOMIC_P50, ATOMIC_P99)),
    ):
        async with ctx.bench.nats() as server:
            latencies, failures = await bare.claimed_publish_latencies(
                server.url, messages, sizes.rate, atomic=atomic
            )
        ctx.results.add(p50, _ms(latencies, 0.5))
        ctx.results.add(p99, _ms(latencies, 0.99))
        ctx.results.detail(f"raw_{'atomic' if atomic else 'claimed'}", {"failures": failures})


async def bare_loop(ctx: Context) -> None:
    if "aggregator" in ctx.steps:
        return  # measured in each aggregator run
    for run in range(ctx.sizes.runs):
        await _bare_loop_once(ctx, run)


async def _bare_loop_once(ctx: Context, run: int) -> None:
    server = await ctx.drain_stream()
    total = ctx.sizes.drain_events
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        seconds, events = await bare.bare_loop(server.url, url, total, f"bench-bare-{run}")
        stored = await _pg_count(url)
    ctx.results.add(BARE_LOOP, events / seconds)
    url = ctx.bench.sqlite()
    await upgrade(url)
    path = url.removeprefix("sqlite:///")
    seconds, events = await bare.bare_loop_sqlite(server.url, path, total, f"bench-lite-{run}")
    ctx.results.add(BARE_SQLITE, events / seconds)
    stored_sqlite = _sqlite_count(url)
    ctx.results.detail("bare_loop", {"events": total, "stored": stored, "sqlite": stored_sqlite})


async def _pg_count(url: str, table: str = "event") -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await connection.close()


def _sqlite_count(url: str, table: str = "event") -> int:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- 2: ingestion ------------------------------------------------------------------------


def _batches(messages: list[Message]) -> Iterator[bytes]:
    for start in range(0, len(messages), BATCH):
        yield batch_body(messages[start : start + BATCH])


async def _post_batches(url: str, token: str, bodies: list[bytes], clients: int) -> int:
    """Post every body from ``clients`` concurrent keep-alive connections; events accepted."""
    headers = {"authorization": f"Bearer {token}", "content-type": BATCH_TYPE}
    queue = iter(bodies)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        pool = Pool(url)
        try:
            for body in queue:
                status, payload = await pool.request("POST", "/v1/events", body, headers)
                if status != 202:
                    raise RuntimeError(f"batch refused: {status} {payload[:300]!r}")
                accepted += len(json.loads(payload)["accepted"])
        finally:
            await pool.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted


async def _post_singles(
    url: str, token: str, messages: list[Message], rate: float
) -> tuple[list[float], int]:
    headers = {"authorization": f"Bearer {token}", "content-type": SINGLE_TYPE}
    bodies = [json.dumps(m.event).encode() for m in messages]
    pool = Pool(url)
    try:

        async def send(i: int) -> bool:
            status, _ = await pool.request("POST", "/v1/events", bodies[i], headers)
            return status == 202

        return await bare.open_loop(rate, len(bodies), send)
    finally:
        await pool.close()


async def ingest(ctx: Context) -> None:
    sizes = ctx.sizes
    column = "collaboration"
    for run in range(sizes.runs):
        await _raw_publish_once(ctx, run)
        await _raw_latency_once(ctx, run)
        data_dir = ctx.workdir("ingest-data")
        token = token_for(data_dir, SOURCE)
        batch_events = column_events(ctx.catalogue, column, SOURCE, sizes.ingest_events, seed=run)
        warm = column_events(ctx.catalogue, column, SOURCE, 2 * BATCH, seed=50 + run)
        count = int(sizes.rate * sizes.latency_seconds)
        singles = column_events(ctx.catalogue, column, SOURCE, count, seed=300 + run)
        warm_singles = column_events(ctx.catalogue, column, SOURCE, 100, seed=400 + run)
        bodies = list(_batches(batch_events))
        async with (
            ctx.bench.nats() as server,
            ctx.bench.ingest(column, server.url, data_dir) as svc,
        ):
            await _post_batches(svc.url, token, list(_batches(warm)), 1)
            started = time.perf_counter()
            accepted = await _post_batches(svc.url, token, bodies, sizes.ingest_clients)
            seconds = time.perf_counter() - started
            await _post_singles(svc.url, token, warm_singles, sizes.rate)
            latencies, failures = await _post_singles(svc.url, token, singles, sizes.rate)
            rss = svc.peak_rss_mib()
            # The bare peer (bench/peer.py) on the same server, at the same rate, right after.
            port = free_port()
            argv = [sys.executable, "-m", "bench.peer", "--port", str(port)]
            async with ctx.bench.service("peer", [*argv, "--nats-url", server.url], port) as peer:
                await _post_singles(peer.url, token, warm_singles, sizes.rate)
                bare_latencies, _ = await _post_singles(peer.url, token, singles, sizes.rate)
        ctx.results.add(INGEST_BATCH, accepted / seconds)
        ctx.results.add(INGEST_P50, _ms(latencies, 0.5))
        ctx.results.add(INGEST_P99, _ms(latencies, 0.99))
        ctx.results.add(PEER_P50, _ms(bare_latencies, 0.5))
        ctx.results.add(PEER_P99, _ms(bare_latencies, 0.99))
        ctx.results.add(INGEST_P99_VS_PEER, _ms(latencies, 0.99))
        ctx.results.add(INGEST_FAILED, failures)
        ctx.results.detail(
            "ingest",
            {
                "batch_events": accepted,
                "clients": sizes.ingest_clients,
                "single_requests": count,
                "single_failures": failures,
                "rate": sizes.rate,
                "service_peak_rss_mib": rss,
            },
        )


# --- 3 and 5 (memory): the aggregator draining a pre-loaded stream ----------------------------


async def aggregator(ctx: Context) -> None:
    server = await ctx.drain_stream()
    sizes = ctx.sizes
    total = sizes.drain_events
    for run in range(sizes.runs):
        await _bare_loop_once(ctx, run)
        for spec, backend in ((AGG_PG, "postgres"), (AGG_SQLITE, "sqlite")):
            await delete_consumer(server.url)
            if backend == "postgres":
                async with ctx.bench.postgres() as url:
                    watch, rss = await _drain_once(ctx, server.url, url, total)
                    stored = await _pg_count(url)
                ctx.results.add(RSS_EARLY, rss["early"])
                ctx.results.add(RSS_END, rss["end"])
            else:
                url = ctx.bench.sqlite()
                watch, rss = await _drain_once(ctx, server.url, url, total)
                stored = _sqlite_count(url)
            events = total - watch.first_floor
            ctx.results.add(spec, events / watch.seconds)
            if backend == "sqlite":
                ctx.results.add(AGG_SQLITE_SHARE, events / watch.seconds)
            ctx.results.detail(
                spec.key,
                {"events": total, "stored": stored, "timed_events": events, "rss_mib": rss},
            )
            if stored != total:
                raise RuntimeError(f"{backend}: {stored} of {total} events stored")


async def _drain_once(
    ctx: Context, nats_url: str, database_url: str, total: int
) -> tuple[DrainWatch, dict[str, float]]:
    async with ctx.bench.aggregator(nats_url, database_url, ready=False) as service:
        early = {"early": ctx.sizes.memory_checkpoint}

        def sample(_name: str) -> float | None:
            return service.peak_rss_mib()

        watch = await watch_drain(
            nats_url, total, service=service, checkpoints=early, on_checkpoint=sample
        )
        rss = {**watch.rss_at, "end": service.peak_rss_mib() or 0.0}
    return watch, rss


# --- 4: end to end ---------------------------------------------------------------------------


def _cursor(event: dict[str, object]) -> str:
    """The audit trail's cursor after ``event`` (as services.aggregator.queries encodes it)."""
    raw = json.dumps([event["stream_seq"], event["source"], event["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _follow(url: str, source: str, seen: dict[str, float], stop: asyncio.Event) -> None:
    """Read the audit trail of ``source`` as a dashboard would, noting when each id shows."""
    pool = Pool(url)
    cursor: str | None = None
    try:
        while not stop.is_set():
            path = f"/v1/events?source={source}&limit=1000"
            if cursor:
                path += f"&cursor={cursor}"
            status, body = await pool.request("GET", path)
            now = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"/v1/events: {status} {body[:200]!r}")
            events = json.loads(body)["events"]
            for event in events:
                seen.setdefault(event["id"], now)
            if events:
                cursor = _cursor(events[-1])
            else:
                await asyncio.sleep(0.005)
    finally:
        await pool.close()


async def e2e(ctx: Context) -> None:
    sizes = ctx.sizes
    columns = [c.id for c in ctx.catalogue.columns]
    for run in range(sizes.runs):
        data_dir = ctx.workdir("e2e-data")
        token = token_for(data_dir, SOURCE)
        latency_token = token_for(data_dir, LATENCY_SOURCE)
        per_column = sizes.e2e_events // len(columns)
        bodies = {
            c: list(_batches(column_events(ctx.catalogue, c, SOURCE, per_column, seed=run)))
            for c in columns
        }
        count = int(sizes.e2e_rate * sizes.e2e_latency_seconds)
        singles = column_events(
            ctx.catalogue,
            "collaboration",
            LATENCY_SOURCE,
            count,
            seed=500 + run,
            tag=uuid.uuid4().hex[:6],
        )
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(ctx.bench.nats())
            db = await stack.enter_async_context(ctx.bench.postgres())
            agg = await stack.enter_async_context(ctx.bench.aggregator(server.url, db))
            urls = {
                c: (await stack.enter_async_context(ctx.bench.ingest(c, server.url, data_dir))).url
                for c in columns
            }
            rate, latencies, failures = await _e2e_run(
                server.url, agg.url, urls, bodies, (token, latency_token), singles, sizes
            )
        ctx.results.add(E2E_RATE, rate)
        ctx.results.add(E2E_P50, _ms(latencies, 0.5))
        ctx.results.add(E2E_P99, _ms(latencies, 0.99))
        ctx.results.detail(
            "e2e",
            {
                "events": per_column * len(columns),
                "latency_requests": count,
                "latency_failures": failures,
                "latency_rate": sizes.e2e_rate,
            },
        )


async def _e2e_run(
    nats_url: str,
    aggregator_url: str,
    urls: dict[str, str],
    bodies: dict[str, list[bytes]],
    tokens: tuple[str, str],
    singles: list[Message],
    sizes: Sizes,
) -> tuple[float, list[float], int]:
    """Batches into every column until all are stored, then timed singles followed to the API."""
    token, latency_token = tokens
    total = sum(len(json.loads(b)) for bs in bodies.values() for b in bs)
    started = time.perf_counter()
    posting = [_post_batches(urls[c], token, bs, 1) for c, bs in bodies.items()]
    await asyncio.gather(*posting)
    watch = await watch_drain(nats_url, total)
    assert watch.finished is not None
    rate = total / (watch.finished - started)

    seen: dict[str, float] = {}
    stop = asyncio.Event()
    follower = asyncio.create_task(_follow(aggregator_url, LATENCY_SOURCE, seen, stop))
    accepted_at: dict[str, float] = {}
    headers = {"authorization": f"Bearer {latency_token}", "content-type": SINGLE_TYPE}
    pool = Pool(urls["collaboration"])
    try:

        async def send(i: int) -> bool:
            m = singles[i]
            status, _ = await pool.request(
                "POST", "/v1/events", json.dumps(m.event).encode(), headers
            )
            accepted_at[m.event["id"]] = time.perf_counter()
            return status == 202

        _, failures = await bare.open_loop(sizes.e2e_rate, len(singles), send)
        for _ in range(600):  # the last ones show within the aggregator's batch timeout
            if len(seen) >= len(accepted_at) - failures:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await follower
        await pool.close()
    latencies = [seen[i] - t for i, t in accepted_at.items() if i in seen]
    return rate, latencies, failures + len(accepted_at) - len(latencies)
