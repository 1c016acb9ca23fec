"""Sustained throughput of the aggregator next to a bare consumer loop, on one nats-server.

Starts a nats-server (``sync_interval: always``, as the project runs it), fills the events
stream with a mix of milestone and KPI events, then drains it twice, each time into a
fresh PostgreSQL database migrated to the aggregator's schema:

1. the aggregator (``create_app`` in this process, batches of 500), from the moment it
   consumes until every event is persisted;
2. a bare loop on its own durable consumer: nats-py ``fetch(500)`` -> ``json.loads`` ->
   one asyncpg insert-or-ignore of the batch into the same ``event`` table -> commit ->
   ack, with no validation, no conflict check and no projections.

It prints both rates and their ratio. Not run by the tests.

    .venv/bin/python bench/aggregator_bench.py [--events 100000] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig

from services.aggregator.app import create_app
from services.aggregator.db import upgrade
from services.aggregator.settings import AggregatorSettings
from shared.bus import (
    CONTENT_TYPE,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    StreamSettings,
    ensure_streams,
    event_subject,
    msg_id,
)
from shared.catalogue import load_catalogue
from shared.natsserver import NatsServer

BATCH = 500
IN_FLIGHT = 500
T0 = datetime(2025, 3, 1, tzinfo=UTC)
BARE_INSERT = """
INSERT INTO event (source, event_id, stream_seq, type, "column", proposal, milestone, kpi,
                   event_time, received_at, data, digest)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                     $11::jsonb[], $12::text[])
ON CONFLICT DO NOTHING
"""


def make_events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """(subject, event) pairs: 80 % milestone updates over every milestone, 20 % KPI reports."""
    catalogue = load_catalogue()
    rng = random.Random(1)
    milestones = [(p, m) for p in catalogue.proposals for m in p.milestones]
    out = []
    data: dict[str, Any]
    for i in range(n):
        when = (T0 + timedelta(seconds=rng.randrange(20_000_000))).isoformat()
        base = {"specversion": "1.0", "id": f"bench-{i}", "time": when}
        if i % 5:
            proposal, m = rng.choice(milestones)
            status = rng.choice(["in_progress", "at_risk", "completed"])
            data = {"proposal": proposal.id, "milestone": m.id, "status": status}
            event = base | {"source": proposal.partners[0], "type": "org.cotn.milestone.v1"}
            subject = event_subject(catalogue.column_of[proposal.id], proposal.id, "milestone")
        else:
            kpi = rng.choice(catalogue.kpis)
            data = {"kpi": kpi.id, "value": rng.uniform(1, 1000), "period": str(2020 + i % 8)}
            event = base | {"source": kpi.reporters[0], "type": "org.cotn.kpi.v1"}
            proposal_id = kpi.evidences[0]
            subject = event_subject(catalogue.column_of[proposal_id], proposal_id, "kpi")
        out.append((subject, event | {"data": data}))
    return out


async def fill_stream(url: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, StreamSettings())
    for start in range(0, len(events), IN_FLIGHT):
        await asyncio.gather(
            *(
                js.publish(
                    subject,
                    json.dumps(event).encode(),
                    stream=EVENTS_STREAM,
                    headers={
                        MSG_ID_HEADER: msg_id(event["source"], event["id"]),
                        "content-type": CONTENT_TYPE,
                    },
                )
                for subject, event in events[start : start + IN_FLIGHT]
            )
        )
    await nc.close()


@asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    name = f"cotn_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        await upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run_aggregator(nats_url: str, database_url: str, n: int) -> float:
    """Events per second from the moment the aggregator consumes until all are persisted."""
    settings = AggregatorSettings(nats_url=nats_url, database_url=database_url)
    app = create_app(settings)
    aggregator = app.state.aggregator
    registry = aggregator.registry
    async with app.router.lifespan_context(app):
        await aggregator.consuming.wait()
        started = time.perf_counter()
        while True:
            done = sum(
                registry.get_sample_value("cotn_events_persisted_total", {"type": t}) or 0
                for t in ("org.cotn.milestone.v1", "org.cotn.kpi.v1")
            )
            if done >= n:
                return n / (time.perf_counter() - started)
            await asyncio.sleep(0.05)


def bare_row(msg: Any) -> tuple[Any, ...]:
    event = json.loads(msg.data)
    data = event["data"]
    _, _, column, proposal, _ = msg.subject.split(".")
    meta = msg.metadata
    return (
        event["source"],
        event["id"],
        meta.sequence.stream,
        event["type"],
        column,
        proposal,
        data.get("milestone"),
        data.get("kpi"),
        datetime.fromisoformat(event["time"]),
        meta.timestamp,
        json.dumps(data),
        "",
    )


async def run_bare(nats_url: str, database_url: str, n: int) -> float:
    """The same drain as a bare loop: pull 500, decode, insert-or-ignore, commit, ack."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        EVENTS_SUBJECTS,
        durable="bench-bare",
        stream=EVENTS_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=2 * BATCH),
    )
    db = await asyncpg.connect(database_url)
    stored = 0
    started = time.perf_counter()
    while stored < n:
        try:
            messages = await sub.fetch(BATCH, timeout=0.2)
        except TimeoutError:
            continue
        rows = [bare_row(m) for m in messages]
        async with db.transaction():
            await db.execute(BARE_INSERT, *(list(column) for column in zip(*rows, strict=True)))
        for m in messages:
            await m.ack()
        stored += len(messages)
    rate = n / (time.perf_counter() - started)
    await db.close()
    await nc.close()
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    events = make_events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats").start()
        try:
            t = time.perf_counter()
            await fill_stream(server.url, events)
            print(f"stream filled: {args.events} events in {time.perf_counter() - t:.1f}s")
            async with fresh_database(args.pg) as url:
                aggregator = await run_aggregator(server.url, url, args.events)
            print(f"aggregator (PostgreSQL, batches of {BATCH}): {aggregator:,.0f} events/s")
            async with fresh_database(args.pg) as url:
                bare = await run_bare(server.url, url, args.events)
            print(f"bare pull -> decode -> insert -> commit -> ack: {bare:,.0f} events/s")
            print(f"aggregator / bare: {aggregator / bare:.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
