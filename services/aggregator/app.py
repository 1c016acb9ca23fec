"""The aggregator app: consumer, status events, read API and metrics in one FastAPI app.

:func:`create_app` builds everything from settings and connects nothing: the FastStream
broker, its router (the events subscriber, the status and dead-letter publishers) and the
database engine come to life in the app's lifespan. Start-up does not wait for NATS or the
database: a background task migrates the schema, sets up the streams and the durable
consumer (or waits for ``cotn nats setup`` to have made them), then starts consuming,
retrying each step until it succeeds, so the read API answers meanwhile: ``/readyz`` says
what is missing, and the board answers 503 with Retry-After until the schema is migrated.
Shutdown lets the batch in hand finish (FastStream's graceful timeout) and the one being
stored commit and settle, stops the loops, then drains the NATS connection so the last
acknowledgements reach the server.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from functools import partial

import nats.errors
from fastapi import FastAPI, Response
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker, NatsRouter
from prometheus_client import CollectorRegistry
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator.api import StoreNotReady, build_read_router
from services.aggregator.consumer import (
    BatchConsumer,
    dlq_publisher,
    ensure_consumer,
    publish_dead_letter,
    subscribe_events,
)
from services.aggregator.db import make_engine, session_factory, upgrade
from services.aggregator.exports import build_exports_router
from services.aggregator.metrics import build_metrics_router
from services.aggregator.office import NatsReviewBus, build_office_router
from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.pulling import adapt_pull_subscriptions
from services.aggregator.settings import AggregatorSettings
from services.aggregator.snapshot import LiveBoard
from services.aggregator.status import StatusPublisher, publish_status, status_publisher
from shared.bus import AGGREGATOR_DURABLE, EVENTS_STREAM, ensure_streams
from shared.catalogue import Catalogue, load_catalogue
from shared.tokens import TokenStore

log = logging.getLogger("cotn.aggregator")

Clock = Callable[[], datetime]
RETRY_MAX_SECONDS = 5.0
BACKLOG_TIMEOUT = 2.0
"""Seconds a backlog reading may take before NATS counts as unable to say."""
SQLITE_SWITCH_INTERVAL = 0.0005
"""Seconds between GIL hand-overs when the database is SQLite (Python's default: 0.005)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Aggregator:
    """One app's running parts: broker, consumer, status publisher, backlog gauge."""

    def __init__(self, *, settings: AggregatorSettings, catalogue: Catalogue, clock: Clock):
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = OperationalMetrics(self.registry)
        self.engine = make_engine(
            settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        self.readers = session_factory(self.engine)
        self.writers = session_factory(self.engine, writer=True)
        self.broker = NatsBroker(
            settings.nats_servers,
            name="cotn-aggregator",
            # The only inbox its NATS user may read: see shared.natsauth.
            inbox_prefix=settings.nats_inbox_prefix,
            max_reconnect_attempts=-1,  # for ever: the aggregator waits for NATS, never gives up
            reconnect_time_wait=1,
            reconnected_cb=self._on_reconnected,
            graceful_timeout=settings.graceful_timeout_seconds,
            # FastStream logs two lines per batch at log_level: keep that at DEBUG.
            logger=logging.getLogger("cotn.aggregator.broker"),
            log_level=logging.DEBUG,
            # The handler takes the raw messages: nothing for FastDepends to validate.
            apply_types=False,
        )
        router = NatsRouter()
        # One snapshot of the live board: the read API, /metrics and the status events.
        self.live = LiveBoard(
            catalogue=catalogue,
            sessions=self.read_session,
            clock=clock,
            wait_proposals=settings.board_wait_proposals,
        )
        self.status = StatusPublisher(
            catalogue=catalogue,
            readers=self.readers,
            writers=self.writers,
            clock=clock,
            publish=partial(publish_status, status_publisher(router)),
            interval=settings.status_interval_seconds,
            min_gap=settings.status_min_gap_seconds,
            board=self.live.snapshot,
        )
        self.consumer = BatchConsumer(
            catalogue=catalogue,
            sessions=self.writers,
            metrics=self.metrics,
            clock=clock,
            settings=settings,
            publish_dead_letter=partial(publish_dead_letter, dlq_publisher(router)),
            on_stored=self.status.poke,
        )
        subscribe_events(router, settings=settings, consumer=self.consumer)
        self.broker.include_router(router)
        self.stage = "not started"
        self.migrated = not settings.migrate_on_start  # else another process migrates
        self.consuming = asyncio.Event()
        self._tasks: list[asyncio.Future[None]] = []
        self._status_task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start the bring-up in the background and return at once."""
        self._spawn(self._bring_up())

    async def stop(self) -> None:
        """Finish the batch in progress, stop the loops, drain NATS, close the database.

        Each step has the graceful timeout: one that overruns is logged with where it
        waits and left behind, so shutdown always ends. Nothing is lost by that: a batch
        whose store is abandoned was not acknowledged, and comes back to the next consumer,
        which stores each of its events once (the unique key)."""
        for subscriber in self.broker.subscribers:
            await self._within("stopping the events subscriber", subscriber.stop())
        if not await self._within("the batch being stored", self.consumer.drain()):
            await self._within("abandoning the batch being stored", self.consumer.abandon())
        self.status.stop()
        if self._status_task is not None:
            await self._within("the status pass", asyncio.shield(self._status_task))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await self._within("a background task", task)
        self._tasks.clear()
        await self._within("draining NATS", self.broker.stop())
        await self._within("closing the database", self.engine.dispose())
        self.stage = "stopped"

    async def _within(self, what: str, step: Awaitable[object]) -> bool:
        """Await one shutdown step for at most the graceful timeout; whether it finished."""
        task = asyncio.ensure_future(step)
        timeout = self.settings.graceful_timeout_seconds
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            where = io.StringIO()
            task.print_stack(file=where)
            log.error(
                "shutdown: %s took over %.0fs; left behind. %s", what, timeout, where.getvalue()
            )
            task.cancel()
            return False
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("shutdown: %s failed (%s: %s)", what, type(exc).__name__, exc)
        return True

    def ready(self) -> tuple[bool, str]:
        """(ready, detail) for ``/readyz``: consuming, connected and the database answering."""
        if not self.consuming.is_set():
            return False, self.stage
        if not self._nats_connected():
            return False, "NATS is not connected"
        if self.consumer.database_ok is False:
            return False, "the database is not storing events: batches are being retried"
        return True, "consuming"

    def review_bus(self) -> NatsReviewBus | None:
        """Where the office's reviews and locks go; None while NATS is not connected."""
        if not self._nats_connected():
            return None
        return NatsReviewBus(self.broker.config.connection_state.stream)

    def read_session(self) -> AsyncSession:
        """A session for the read API and ``/metrics``, once the schema is migrated."""
        if not self.migrated:
            raise StoreNotReady("the database schema is being migrated")
        return self.readers()

    def _nats_connected(self) -> bool:
        try:
            return self.broker.connection.is_connected
        except IncorrectState:
            return False

    def _spawn(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks.append(task)
        return task

    async def _bring_up(self) -> None:
        if self.settings.migrate_on_start:
            await self._until_done(
                "migrating the database", partial(upgrade, self.settings.database_url)
            )
            self.migrated = True
        await self._until_done("connecting to NATS", self.broker.connect)
        adapt_pull_subscriptions(self.broker.config.connection_state.stream)
        await self._until_done("setting up the streams", self._prepare_bus)
        await self._until_done("starting the consumer", self.broker.start)
        self._status_task = self._spawn(self.status.run())
        self._spawn(self._watch_backlog())
        self.stage = "consuming"
        self.consuming.set()
        log.info("consuming %s as %s", EVENTS_STREAM, AGGREGATOR_DURABLE)

    async def _until_done(self, stage: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` until it succeeds, waiting longer after each failure (up to 5 s)."""
        self.stage = stage
        delay = 0.1
        while True:
            try:
                await step()
                return
            except Exception as exc:
                log.warning(
                    "%s failed (%s: %s); retrying in %.1fs", stage, type(exc).__name__, exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_SECONDS, delay * 2)

    async def _prepare_bus(self) -> None:
        """Set up the streams and the durable consumer, or (when ``cotn nats setup`` manages
        them) wait until the consumer exists: the aggregator's NATS user may only read it."""
        js = self.broker.config.connection_state.stream
        if not self.settings.manage_streams:
            await js.consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
            return
        await ensure_streams(js, self.settings.stream_settings())
        await ensure_consumer(js, self.settings)

    async def _on_reconnected(self) -> None:
        # A server that came back without its store has no streams: set them up again.
        self._spawn(self._until_done("setting up the streams again", self._prepare_bus))

    async def _watch_backlog(self) -> None:
        """Read the consumer's backlog every few seconds; while NATS cannot answer, the
        gauge is absent (a stale number would read as a true one) and ``_up`` says 0."""
        while True:
            try:
                if not self._nats_connected():
                    raise IncorrectState("not connected to NATS")
                js = self.broker.config.connection_state.stream
                info = await js.consumer_info(
                    EVENTS_STREAM, AGGREGATOR_DURABLE, timeout=BACKLOG_TIMEOUT
                )
            except (nats.errors.Error, TimeoutError, IncorrectState):
                self.metrics.backlog.clear()
                self.metrics.backlog_up.set(0)
            else:
                self.metrics.backlog.set(info.num_pending or 0)
                self.metrics.backlog_up.set(1)
            await asyncio.sleep(self.settings.backlog_interval_seconds)


def create_app(
    settings: AggregatorSettings | None = None, *, clock: Clock | None = None
) -> FastAPI:
    """The aggregator's FastAPI app; ``clock`` (aware ``now``) is for tests."""
    settings = settings or AggregatorSettings()
    catalogue = load_catalogue(settings.catalogue)
    clock = clock or utc_now
    aggregator = Aggregator(settings=settings, catalogue=catalogue, clock=clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Tuning for the process, made when it serves, not when the app is built. The
        # catalogue and the app live as long as the process: out of the collector's sight,
        # a full collection scans what requests allocate, not 10^5 startup objects.
        gc.freeze()
        if aggregator.engine.dialect.name == "sqlite":
            # aiosqlite runs each statement on a thread of its own, and the answer comes
            # back only when that thread gets the GIL, which Python hands over every 5 ms
            # while this loop decodes the next batch: a store then waits 5 ms per
            # statement. A shorter interval let bench drain SQLite about 8 % faster.
            sys.setswitchinterval(SQLITE_SWITCH_INTERVAL)
        await aggregator.start()
        try:
            yield
        finally:
            await aggregator.stop()

    app = FastAPI(
        title="COTN aggregator",
        summary="The programme board, KPIs and audit trail of the COTN delivery monitor",
        lifespan=lifespan,
    )
    app.state.aggregator = aggregator
    app.include_router(
        build_read_router(
            catalogue=catalogue,
            sessions=aggregator.read_session,
            clock=clock,
            ready=aggregator.ready,
            live=aggregator.live,
        )
    )
    app.include_router(
        build_office_router(
            catalogue=catalogue,
            sessions=aggregator.read_session,
            clock=clock,
            tokens=TokenStore.in_dir(settings.data_dir),
            bus=aggregator.review_bus,
        )
    )
    app.include_router(
        build_exports_router(catalogue=catalogue, sessions=aggregator.read_session, clock=clock)
    )
    app.include_router(
        build_metrics_router(
            catalogue=catalogue,
            sessions=aggregator.read_session,
            clock=clock,
            operational=aggregator.metrics,
            office_every=settings.office_metrics_seconds,
            live=aggregator.live,
        )
    )
    if settings.bench_static_bytes is not None:
        mount_bench_static(app, settings.bench_static_bytes)
    return app


def mount_bench_static(app: FastAPI, size: int) -> None:
    """``GET /bench/static``: ``size`` bytes made once, a JSON string of ``x`` (for the bench
    only: the same server answering without reading or rating, the read side's baseline)."""
    body = b'"' + b"x" * max(0, size - 2) + b'"' if size >= 2 else b"0"

    @app.get("/bench/static", include_in_schema=False)
    async def bench_static() -> Response:
        return Response(body, media_type="application/json")
