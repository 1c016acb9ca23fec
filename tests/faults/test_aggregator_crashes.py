"""The aggregator process dies mid-batch (SIGKILL at an exact point) or is stopped (SIGTERM).

The events are posted first, through a column service, so that the aggregator meets a full
backlog and every batch is full: batch N holds stream sequences 50(N-1)+1 .. 50N. The crash
comes from the aggregator's test-only fault hook (``COTN_AGGREGATOR_FAULT``, see
``services.aggregator.consumer.FaultHook``); a second aggregator without the fault must
then store exactly what was acknowledged, and its duplicate count shows what came back.
Each crash runs on SQLite (its write-ahead log recovered) and on PostgreSQL (the open
transaction aborted with the connection).

SIGTERM is sent while a batch is certainly in the middle of being stored: the test holds
SQLite's write lock, so the batch the aggregator fetched waits for it.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from shared.natsserver import NatsServer
from tests.aggregator.harness import eventually

from .checks import consumer_info, exactly_once, stored_count
from .load import Load
from .procs import Service, Services

pytestmark = pytest.mark.fault

BATCH = 50
FAULT_BATCH = 3
# A long batch window: with the backlog in place every fetch fills the whole batch.
FULL_BATCHES = {"batch_size": BATCH, "batch_timeout_seconds": 1.0}


async def post_backlog(services: Services, nats_url: str, prefix: str, batches: int) -> Load:
    """Post ``batches`` x 4 x 20 events through a column service; the load, finished."""
    ingest = await services.ingest(nats_url)
    load = Load(lambda: ingest.url, services.tokens, prefix, clients=4, max_batches=batches)
    await load.start().finished()
    return load


@pytest.mark.parametrize(
    ("point", "stored_at_crash", "acked_at_crash"),
    [
        # Every write of batch 3 done, not committed: it is rolled back and comes back.
        ("before_commit", 2 * BATCH, 2 * BATCH),
        # Batch 3 committed, nothing acked: all of it comes back, as duplicates.
        ("after_commit", 3 * BATCH, 2 * BATCH),
        # Batch 3 committed, its first half acked: the second half comes back.
        ("mid_batch", 3 * BATCH, 2 * BATCH + BATCH // 2),
    ],
)
async def test_aggregator_killed_in_a_batch_stores_every_event_once(
    point: str,
    stored_at_crash: int,
    acked_at_crash: int,
    fresh_nats: NatsServer,
    services: Services,
    database_url: str,
) -> None:
    load = await post_backlog(services, fresh_nats.url, point, batches=4)  # 320 events
    crashing = await services.aggregator(
        fresh_nats.url,
        database_url,
        fault=point,
        fault_batch=FAULT_BATCH,
        wait=False,
        **FULL_BATCHES,
    )

    assert await crashing.exited() == -signal.SIGKILL, crashing.tail()
    assert await stored_count(database_url) == stored_at_crash
    info = await consumer_info(fresh_nats.url)
    assert info.ack_floor.stream_seq == acked_at_crash
    # Delivered, not acked: the rest of batch 3, and batch 4 if it was fetched and decoded
    # while batch 3 was being stored (the consumer holds two batches at a time).
    unacked = FAULT_BATCH * BATCH - acked_at_crash
    assert info.num_ack_pending in (unacked, unacked + BATCH)

    restarted = await services.aggregator(
        fresh_nats.url, database_url, name="restarted", **FULL_BATCHES
    )
    await exactly_once(load.acked, database_url, nats_url=fresh_nats.url)
    # Committed but unacknowledged messages were redelivered and found already stored.
    duplicates = await restarted.metric("cotn_event_duplicates_total")
    assert duplicates == stored_at_crash - acked_at_crash


async def test_sigterm_mid_batch_commits_and_acks_the_batch_then_stops(
    fresh_nats: NatsServer, services: Services, sqlite_url: str, tmp_path: Path
) -> None:
    ingest = await services.ingest(fresh_nats.url)
    aggregator = await services.aggregator(
        fresh_nats.url, sqlite_url, log_level="info", sqlite_busy_timeout_ms=20_000
    )
    load = Load(lambda: ingest.url, services.tokens, "term", max_batches=30).start()
    await load.until_acked(200)
    await eventually(lambda: has_events(sqlite_url, 100), "the aggregator consuming")

    # Hold SQLite's write lock: the next batch is fetched and waits in the middle of storing.
    async with write_lock(tmp_path / "cotn.db"):
        stuck = await eventually(lambda: delivered_unacked(fresh_nats.url), "a batch waiting")
        stored_before = await stored_count(sqlite_url)
        aggregator.signal(signal.SIGTERM)
        await eventually(lambda: logged(aggregator, "Waiting for application shutdown"), "SIGTERM")

    # uvicorn shuts down gracefully and the process says so: exit code 0, not -15.
    assert await aggregator.exited(within=20) == 0
    assert "Application shutdown complete" in aggregator.tail(), aggregator.tail()
    info = await consumer_info(fresh_nats.url)
    stored = await stored_count(sqlite_url)
    # The batch in hand was finished, committed and acknowledged. Messages fetched behind it
    # but not yet handled (under load the fetch may be ahead of the handler) stay unacked and
    # come back: every in-flight message is either committed and acked or redelivered.
    assert stuck > 0 and stored > stored_before
    assert info.ack_floor.stream_seq == stored

    restarted = await services.aggregator(fresh_nats.url, sqlite_url, name="restarted")
    load.stop()
    await exactly_once(await load.finished(), sqlite_url, nats_url=fresh_nats.url)
    assert await restarted.metric("cotn_event_duplicates_total") == 0


async def has_events(database_url: str, count: int) -> bool:
    return await stored_count(database_url) >= count


async def delivered_unacked(nats_url: str) -> int:
    return (await consumer_info(nats_url)).num_ack_pending


async def logged(service: Service, text: str) -> bool:
    return text in service.log.read_text(errors="replace")


@asynccontextmanager
async def write_lock(path: Path) -> AsyncIterator[None]:
    """Another connection holds the SQLite database's write lock until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        await asyncio.to_thread(holder.execute, "ROLLBACK")
        holder.close()
