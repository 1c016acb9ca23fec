"""A pre-loaded events stream and a watch on a durable consumer draining it.

Pre-loading is not what is measured, so the stream is filled with JetStream's default flush
and the server is then restarted on the same store with ``sync_interval: always``, the way
the project runs it, before anything drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats
from nats.js.errors import NotFoundError

from bench.bare import publish_all
from bench.harness import Service
from bench.workload import Message
from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM
from shared.natsserver import NatsServer

POLL = 0.02


class UnsyncedNatsServer(NatsServer):
    """JetStream with its default flush: only to pre-load a stream quickly."""

    def config_text(self) -> str:
        return super().config_text().replace("  sync_interval: always\n", "")


async def preload(server: NatsServer, messages: list[Message]) -> NatsServer:
    """Fill ``server``'s store with ``messages`` unsynced; restart it synced on the same port."""
    fast = UnsyncedNatsServer(store_dir=server.store_dir, port=server.port).start()
    try:
        await publish_all(fast.url, messages, window=4000)
    finally:
        fast.stop()  # a clean stop flushes the store
    return server.start()


@dataclass
class DrainWatch:
    """How a durable consumer progressed: when its ack floor moved, and RSS samples."""

    started: float | None = None
    first_floor: int = 0
    finished: float | None = None
    rss_at: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        assert self.started is not None and self.finished is not None
        return self.finished - self.started


async def watch_drain(
    nats_url: str,
    total: int,
    *,
    durable: str = AGGREGATOR_DURABLE,
    service: Service | None = None,
    within: float = 900.0,
    checkpoints: dict[str, int] | None = None,
    on_checkpoint: Callable[[str], float | None] | None = None,
) -> DrainWatch:
    """Poll the consumer until it has acked ``total`` messages.

    The clock starts at the first movement of the ack floor (the first batch committed), so
    start-up, migrations and the first batch's statement compilation are left out. At each
    checkpoint (a name and a message count) ``on_checkpoint(name)`` is sampled.
    """
    watch = DrainWatch()
    pending = dict(checkpoints or {})
    nc = await nats.connect(nats_url)
    deadline = time.monotonic() + within
    try:
        js = nc.jetstream(timeout=5)
        while True:
            if service is not None:
                service.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{durable} did not drain {total} messages in {within}s")
            try:
                info = await js.consumer_info(EVENTS_STREAM, durable)
            except (NotFoundError, nats.errors.TimeoutError):
                await asyncio.sleep(POLL)
                continue
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            floor = floor or 0
            now = time.perf_counter()
            if watch.started is None and floor > 0:
                watch.started, watch.first_floor = now, floor
            for name, at in list(pending.items()):
                if floor >= at and on_checkpoint is not None:
                    value = on_checkpoint(name)
                    if value is not None:
                        watch.rss_at[name] = value
                    del pending[name]
            if floor >= total:
                watch.finished = now
                return watch
            await asyncio.sleep(POLL)
    finally:
        await nc.close()


async def delete_consumer(nats_url: str, durable: str = AGGREGATOR_DURABLE) -> None:
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_consumer(EVENTS_STREAM, durable)
    finally:
        await nc.close()
