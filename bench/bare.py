"""Figure 1: the bare limits the services are judged against, measured in the same run.

- raw JetStream publish: nats-py ``publish_async`` with up to ``window`` acks pending, the
  payloads a column service would publish, until every ack is in;
- raw single publish latency: one ``js.publish`` (request, await the ack) per event at a
  fixed rate, open loop, as a column service does for a single-event request;
- the bare consumer loop: ``fetch(500)`` -> ``json.loads`` -> one asyncpg insert-or-ignore
  of the batch into the aggregator's ``event`` table -> commit -> ack, no framework, no
  validation, no projections;
- the same loop on SQLite (the standard library's ``sqlite3``, ``executemany``, WAL with
  ``synchronous=FULL`` as the aggregator runs it): not a goal's baseline, it shows how
  much of the aggregator's SQLite figure the backend itself takes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from bench.workload import Message
from services.ingest.acks import Ack, PendingAcks, Send
from services.ingest.claims import CREATE_ONLY, Claim, claim_key, claim_subject
from shared.bus import (
    CLAIMS_STREAM,
    CONTENT_TYPE,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    StreamSettings,
    ensure_streams,
)

BATCH = 500
WINDOW = 1000
"""Acks pending at once: a column service's ``max_in_flight``."""

EVENT_COLUMNS = ("source", "event_id", "stream_seq", "type", "column", "proposal", "milestone",
                 "kpi", "event_time", "received_at", "data", "digest")  # fmt: skip
COLUMNS_SQL = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
BARE_INSERT = f"""
INSERT INTO event ({COLUMNS_SQL})
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                     $11::jsonb[], $12::text[])
ON CONFLICT DO NOTHING
"""


def headers_of(message: Message) -> dict[str, str]:
    return {MSG_ID_HEADER: message.msg_id, "content-type": CONTENT_TYPE}


async def publish_all(url: str, messages: Sequence[Message], window: int = WINDOW) -> float:
    """Publish every message with ``window`` acks pending; seconds until the last ack."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream(timeout=30, publish_async_max_pending=window)
        await ensure_streams(js, StreamSettings())
        started = time.perf_counter()
        futures = [
            await js.publish_async(
                m.subject, m.payload, stream=EVENTS_STREAM, headers=headers_of(m), wait_stall=30
            )
            for m in messages
        ]
        acks = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    duplicates = sum(1 for ack in acks if ack.duplicate)
    if duplicates:
        raise RuntimeError(f"{duplicates} raw publishes were duplicates: ids are not unique")
    return elapsed


async def open_loop(
    rate: float, count: int, send: Callable[[int], Awaitable[bool]]
) -> tuple[list[float], int]:
    """Call ``send(i)`` at ``rate`` a second whatever the answers (open loop).

    Latency runs from the scheduled time, so a stall is charged to every request it delays
    (no coordinated omission). Returns the latencies of the successes and the failure count.
    The bench's own collector is held off meanwhile: a full collection of the workload it
    holds stalls this loop for tens of ms, which would be charged to the service measured.
    """
    latencies: list[float] = []
    failures = 0

    async def one(i: int, at: float) -> None:
        nonlocal failures
        try:
            ok = await send(i)
        except Exception:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - at)
        else:
            failures += 1

    tasks = []
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter() + 0.05
        for i in range(count):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    return latencies, failures


async def single_publish_latencies(
    url: str, messages: Sequence[Message], rate: float
) -> tuple[list[float], int]:
    """One JetStream publish awaited per event, at ``rate`` a second."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream(timeout=5)
        await ensure_streams(js, StreamSettings())

        async def send(i: int) -> bool:
            m = messages[i]
            await js.publish(m.subject, m.payload, stream=EVENTS_STREAM, headers=headers_of(m))
            return True

        return await open_loop(rate, len(messages), send)
    finally:
        await connection.close()


ATOMIC_STREAM = "BENCH_CLAIMED"
"""A stream of the bench's own that holds claims and events, to publish both as one atomic
batch: the project's streams cannot (an atomic batch goes to one stream, and the claims
outlive the events stream's ``max_age``: here a claim's ``Nats-TTL: never`` would)."""


async def claimed_publish_latencies(
    url: str, messages: Sequence[Message], rate: float, *, atomic: bool
) -> tuple[list[float], int]:
    """Each event's claim and the event, at ``rate`` a second, as a column service
    publishes a single event but without HTTP: the claim (create-only, in the claims
    bucket) acknowledged, then the event (two synced writes, one after the other); or, with
    ``atomic``, the two as one atomic batch of :data:`ATOMIC_STREAM` (one write per event,
    the alternative issue 16 names)."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream(timeout=5)
        await ensure_streams(js, StreamSettings())
        await js.add_stream(
            StreamConfig(
                name=ATOMIC_STREAM,
                subjects=["bench.claimed.>"],
                storage=StorageType.FILE,
                allow_atomic=True,
                allow_msg_ttl=True,
            )
        )
        acks = PendingAcks(connection, max_pending=WINDOW, timeout=5)

        async def send(i: int) -> bool:
            m = messages[i]
            claim = Claim(m.msg_id, "2025-01-01T00:00:00Z").encode()
            event = Send(m.subject, m.payload, headers_of(m), EVENTS_STREAM)
            if atomic:
                claim_headers = {**CREATE_ONLY, "Nats-TTL": "never"}
                subject = f"bench.claimed.claims.{claim_key(m.msg_id)}"
                answer = await acks.publish_atomic(
                    [
                        Send(subject, claim, claim_headers, ATOMIC_STREAM),
                        Send(f"bench.claimed.events.{i}", m.payload, headers_of(m), ATOMIC_STREAM),
                    ]
                )
                return isinstance(answer, Ack)
            [made] = await acks.publish_all(
                [Send(claim_subject(m.msg_id), claim, CREATE_ONLY, CLAIMS_STREAM)]
            )
            [published] = await acks.publish_all([event]) if isinstance(made, Ack) else [made]
            return isinstance(published, Ack)

        return await open_loop(rate, len(messages), send)
    finally:
        await connection.close()


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


Store = Callable[[list[tuple[Any, ...]]], Awaitable[None]]


async def bare_loop(nats_url: str, pg_url: str, total: int, durable: str) -> tuple[float, int]:
    """Drain ``total`` messages with the bare loop into a migrated PostgreSQL database."""
    db = await asyncpg.connect(pg_url)

    async def store(rows: list[tuple[Any, ...]]) -> None:
        async with db.transaction():
            await db.execute(BARE_INSERT, *(list(c) for c in zip(*rows, strict=True)))

    try:
        return await _drain(nats_url, total, durable, store)
    finally:
        await db.close()


def _sqlite_text(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.isoformat(" ") if isinstance(v, datetime) else v for v in row)


async def bare_loop_sqlite(nats_url: str, path: str, total: int, durable: str) -> tuple[float, int]:
    """The bare loop into a migrated SQLite database, as blocking calls on the event loop."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    insert = f"INSERT INTO event ({COLUMNS_SQL}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
    insert += "ON CONFLICT DO NOTHING"

    async def store(rows: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, [_sqlite_text(r) for r in rows])
        db.execute("COMMIT")

    try:
        return await _drain(nats_url, total, durable, store)
    finally:
        db.close()


async def _drain(nats_url: str, total: int, durable: str, store: Store) -> tuple[float, int]:
    """Pull, decode, ``store`` and ack until ``total`` messages are stored.

    Returns (seconds, events) timed from the first committed batch to the last, so start-up
    is left out as it is for the aggregator.
    """
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(timeout=10)
        sub = await js.pull_subscribe(
            EVENTS_SUBJECTS,
            durable=durable,
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=4 * BATCH,
            ),
        )
        stored = 0
        first: tuple[float, int] | None = None
        while stored < total:
            try:
                messages = await sub.fetch(BATCH, timeout=0.2)
            except TimeoutError:
                continue
            await store([bare_row(m) for m in messages])
            for m in messages:
                await m.ack()
            stored += len(messages)
            if first is None:
                first = (time.perf_counter(), stored)
        assert first is not None
        return time.perf_counter() - first[0], stored - first[1]
    finally:
        await nc.close()
