"""The aggregator's consumer: batches from the events stream into the database, then acks.

Acknowledgement is manual and follows the database: a message is acked only once the
transaction that stored it has committed (exactly-once comes from the unique key, not the
broker). What happens to a message that is not stored:

- it can never be stored (not JSON, not an event, a subject or catalogue id this
  catalogue does not know, data the database refuses): a ``dead_letter`` row in the same
  transaction, a copy on ``cotn.dlq.<reason>``, then an ack, so it never blocks the stream;
- the database is away, locked or timing out: the whole batch is nak'd with a delay that
  grows from ``retry_delay_min`` to ``retry_delay_max`` and is redelivered, for as long as
  it takes. Nothing is ever terminated.

The consumer's ``max_deliver`` is unlimited on purpose. A bound exists to stop a poison
message from looping for ever, but poison never reaches the retry path here: it is
dead-lettered by the handler. The only messages that come back are those that met a
transient failure, and terminating one of them after N attempts would lose an accepted
event whenever an outage outlasts N x retry_delay_max. The nak delay paces the retries, and
``cotn_consumer_backlog`` shows an outage that lasts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import nats.errors
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.publisher.usecase import LogicPublisher
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.aggregator.opmetrics import OperationalMetrics
from services.aggregator.pulling import consume_as_arrived
from services.aggregator.settings import AggregatorSettings
from services.aggregator.store import NO_REFS, BatchOutcome, NewEvent, store_batch
from shared.bus import (
    AGGREGATOR_DURABLE,
    DLQ_STREAM,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    dlq_subject,
    parse_event_subject,
)
from shared.catalogue import Catalogue
from shared.events import CloudEvent
from shared.kinds import KINDS, Refused
from shared.problems import problems_from_validation

log = logging.getLogger("cotn.aggregator.consumer")

MAX_DETAIL = 1000
PUBLISH_TIMEOUT = 5.0
Clock = Callable[[], datetime]
PublishDeadLetter = Callable[[dict[str, Any]], Awaitable[None]]


def one_line(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` without control characters, which a header or a PostgreSQL text cannot hold."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


class Unstorable(Exception):
    """A message that can never be stored as an event, and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = one_line(detail)


def consumer_config(settings: AggregatorSettings) -> ConsumerConfig:
    """The durable pull consumer of the events stream (see the module docstring on max_deliver)."""
    return ConsumerConfig(
        name=AGGREGATOR_DURABLE,
        durable_name=AGGREGATOR_DURABLE,
        description="COTN aggregator: accepted events into the database",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=JsAckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
        filter_subject=EVENTS_SUBJECTS,
    )


async def ensure_consumer(js: JetStreamContext, settings: AggregatorSettings) -> None:
    """Create the durable consumer, or bring an existing one to this configuration."""
    await js.add_consumer(EVENTS_STREAM, consumer_config(settings))


def stream_position(msg: Msg) -> tuple[int, datetime]:
    """(stream sequence, time stored) of a JetStream delivery, read from its reply subject.

    The two fields ``msg.metadata`` gives, without building its frozen dataclasses: that
    was about a twentieth of the consumer's time per event. Reply subjects are
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` or, with a
    domain, ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>...``;
    anything else is left to nats-py (which raises ``NotJSMessageError``).
    """
    tokens = msg.reply.split(".")
    if tokens[:2] == ["$JS", "ACK"] and (len(tokens) == 9 or len(tokens) >= 11):
        skip = 0 if len(tokens) == 9 else 2  # the domain and the account hash
        sequence, nanoseconds = tokens[5 + skip], tokens[7 + skip]
        # The same arithmetic as nats-py's, so both give the same instant.
        return int(sequence), datetime.fromtimestamp(int(nanoseconds) / 1_000_000_000.0, UTC)
    meta = msg.metadata
    return meta.sequence.stream, meta.timestamp


def decode(msg: Msg, catalogue: Catalogue) -> NewEvent:
    """The rows one message stores; :class:`Unstorable` if it can never be stored.

    The event's kind checks it against the catalogue as the column service did, with the
    subject's column: what a column service would have refused is never stored.
    """
    obj, event = _parse(msg.data)
    kind = KINDS.of(event)
    try:
        subject = parse_event_subject(msg.subject)
    except ValueError as exc:
        raise Unstorable("bad_subject", str(exc)) from None
    if subject.kind != kind.name:
        raise Unstorable(
            "bad_subject", f"{msg.subject} files a {kind.type} event as {subject.kind}"
        )
    if subject.proposal not in catalogue.proposal_by_id:
        raise Unstorable("unknown_proposal", f"no proposal {subject.proposal!r} in the catalogue")
    problems = kind.check(event, catalogue=catalogue, column=subject.column, authority=None)
    if problems:
        raise Unstorable(problems[0].code, "; ".join(f"{p.field} {p.reason}" for p in problems))
    if not kind.files_under(event, subject.proposal, catalogue):
        raise Unstorable("bad_subject", f"{msg.subject} files the event under another proposal")
    stream_seq, received_at = stream_position(msg)
    return NewEvent(
        row={
            "source": event.source,
            "event_id": event.id,
            "stream_seq": stream_seq,
            "type": event.type,
            "column": subject.column,
            "proposal": subject.proposal,
            **NO_REFS,
            **kind.row(event),
            "event_time": event.time,
            "received_at": received_at,
            "data": obj["data"],
            "extensions": event.extensions or None,
            "digest": event.digest,
        }
    )


def _parse(payload: bytes) -> tuple[dict[str, Any], CloudEvent]:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise Unstorable("invalid_json", str(exc)) from None
    try:
        return obj, KINDS.parse(obj)
    except Refused as exc:
        raise Unstorable(exc.problems[0].code, str(exc)) from None
    except ValidationError as exc:
        detail = "; ".join(f"{p.field} {p.reason}" for p in problems_from_validation(exc))
        raise Unstorable("invalid_event", detail) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # Not every refusal comes as a ValidationError (a number too big for a float).
        raise Unstorable("invalid_event", repr(exc)) from None


def dead_letter_row(msg: Msg, problem: Unstorable, recorded_at: datetime) -> dict[str, Any]:
    """The ``dead_letter`` row of a message, kept as it arrived."""
    stream_seq, received_at = stream_position(msg)
    return {
        "reason": problem.reason,
        "detail": problem.detail,
        "stream_seq": stream_seq,
        "subject": msg.subject,
        "payload": msg.data,
        # A dead letter that cannot be stored either would block the stream for ever.
        "headers": {one_line(k): one_line(v) for k, v in (msg.headers or {}).items()},
        "digest": hashlib.sha256(msg.data).hexdigest(),
        "received_at": received_at,
        "recorded_at": recorded_at,
    }


def dead_letter_message(row: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers of a dead letter on ``cotn.dlq.<reason>``."""
    headers = {
        # One id per stream message: a redelivered dead letter is not published twice.
        MSG_ID_HEADER: f"{EVENTS_STREAM}:{row['stream_seq']}:{row['digest'][:16]}",
        "Cotn-Reason": row["reason"],
        "Cotn-Detail": row["detail"],
        "Cotn-Subject": row["subject"],
        "Cotn-Stream-Seq": str(row["stream_seq"]),
    }
    if original := row["headers"].get(MSG_ID_HEADER):
        headers["Cotn-Original-Msg-Id"] = original
    return dlq_subject(row["reason"]), row["payload"], headers


def is_data_error(exc: DBAPIError) -> bool:
    """The database refused the data itself (SQLSTATE class 22): retrying cannot help."""
    orig = exc.orig
    cause = getattr(orig, "__cause__", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


@dataclass
class SortedBatch:
    """A batch split into events to store and dead letters, each with its message."""

    events: list[tuple[Msg, NewEvent]]
    dead_letters: list[tuple[Msg, dict[str, Any]]]


class BatchConsumer:
    """Stores batches of event messages and settles each message with the broker."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        sessions: async_sessionmaker[Any],
        metrics: OperationalMetrics,
        clock: Clock,
        settings: AggregatorSettings,
        publish_dead_letter: PublishDeadLetter,
        on_stored: Callable[[], None],
    ) -> None:
        self._catalogue = catalogue
        self._sessions = sessions
        self._metrics = metrics
        self._clock = clock
        self._settings = settings
        self._publish_dead_letter = publish_dead_letter
        self._on_stored = on_stored
        self._fault = FaultHook(settings.fault, settings.fault_batch)
        self._storing: asyncio.Task[None] | None = None
        self.database_ok: bool | None = None

    async def handle(self, messages: Sequence[Msg]) -> None:
        """Decode a batch, then store it in the background once the batch before is stored.

        Two batches are in hand at a time: while one commits (the database's work, on
        another core) the next is fetched and decoded (this process's). Stores still run
        one after another, in order, each in its own transaction, and a message is settled
        only by the store of its own batch.
        """
        started = perf_counter()
        batch = self._sort(messages)
        await self.drain()
        self._storing = asyncio.create_task(self._store_and_settle(messages, batch, started))

    async def drain(self) -> None:
        """Wait until the batch being stored is committed and settled (at shutdown too)."""
        storing = self._storing
        if storing is None:
            return
        try:
            # Shielded: a handler cancelled at shutdown must not cancel a commit under way;
            # the task stays in ``_storing`` until it is done, for shutdown to wait on.
            await asyncio.shield(storing)
        except Exception:  # its messages are redelivered after ack_wait
            log.exception("storing a batch failed unexpectedly")
        if self._storing is storing:
            self._storing = None

    async def abandon(self) -> None:
        """Cancel the batch being stored (at shutdown, when it would not finish): its
        transaction rolls back or has committed, and either way its messages, never
        acknowledged, are delivered again and stored once."""
        storing = self._storing
        if storing is None:
            return
        storing.cancel()
        with suppress(asyncio.CancelledError):
            await storing
        self._storing = None

    async def _store_and_settle(
        self, messages: Sequence[Msg], batch: SortedBatch, started: float
    ) -> None:
        """Store one decoded batch, then ack, nak (to retry) or dead-letter each message."""
        self._fault.batch_started()
        try:
            outcome = await self._store(batch)
        except Exception as exc:  # nothing committed: every message comes back later
            self.database_ok = False
            await self._retry_later(messages, exc)
            return
        self.database_ok = True
        # Counted as soon as it is committed: an acknowledged message is always counted.
        self._count(outcome)
        await self._fault.reached("after_commit")
        unsent = await self._send_dead_letters(batch.dead_letters)
        for index, msg in enumerate(messages):
            if index == len(messages) // 2:
                await self._fault.reached("mid_batch", flush=msg)
            await self._settle(msg, retry=id(msg) in unsent)
        self._metrics.batch_seconds.observe(perf_counter() - started)
        if outcome.persisted:
            self._on_stored()

    def _sort(self, messages: Sequence[Msg]) -> SortedBatch:
        batch = SortedBatch(events=[], dead_letters=[])
        now = self._clock()
        for msg in messages:
            try:
                batch.events.append((msg, decode(msg, self._catalogue)))
            except Unstorable as problem:
                row = dead_letter_row(msg, problem, now)
                log.warning("dead letter (stream seq %s): %s", row["stream_seq"], problem)
                batch.dead_letters.append((msg, row))
        return batch

    async def _commit(
        self, events: Sequence[NewEvent], dead_letters: Sequence[dict[str, Any]]
    ) -> BatchOutcome:
        async with self._sessions() as session, session.begin():
            outcome = await store_batch(
                session=session,
                events=events,
                dead_letters=dead_letters,
                recorded_at=self._clock(),
            )
            await self._fault.reached("before_commit")
            return outcome

    async def _store(self, batch: SortedBatch) -> BatchOutcome:
        try:
            return await self._commit(
                [e for _, e in batch.events], [d for _, d in batch.dead_letters]
            )
        except DBAPIError as exc:
            if not is_data_error(exc):
                raise
            log.warning(
                "the database refuses a message of the batch (%s): storing one by one", exc.orig
            )
        return await self._store_one_by_one(batch)

    async def _store_one_by_one(self, batch: SortedBatch) -> BatchOutcome:
        """Find the messages the database refuses: they become dead letters; the rest is stored."""
        outcome = await self._commit([], [d for _, d in batch.dead_letters])
        for msg, event in batch.events:
            try:
                outcome.merge(await self._commit([event], []))
            except DBAPIError as exc:
                if not is_data_error(exc):
                    raise
                row = dead_letter_row(msg, Unstorable("unstorable", str(exc.orig)), self._clock())
                batch.dead_letters.append((msg, row))
                outcome.merge(await self._commit([], [row]))
        return outcome

    async def _send_dead_letters(
        self, dead_letters: Sequence[tuple[Msg, dict[str, Any]]]
    ) -> set[int]:
        """Publish each dead letter to the DLQ stream; ids of the messages whose publish failed."""
        unsent = set()
        for msg, row in dead_letters:
            try:
                await self._publish_dead_letter(row)
            except Exception as exc:  # the row is stored: only the copy on the bus is retried
                log.warning("dead letter not published to %s (%r): retrying", DLQ_STREAM, exc)
                unsent.add(id(msg))
        return unsent

    def _retry_delay(self, messages: Sequence[Msg]) -> float:
        attempts = max(m.metadata.num_delivered for m in messages)
        low, high = self._settings.retry_delay_min_seconds, self._settings.retry_delay_max_seconds
        return min(high, low * 2 ** min(attempts - 1, 16))

    async def _retry_later(self, messages: Sequence[Msg], exc: Exception) -> None:
        delay = self._retry_delay(messages)
        log.warning(
            "batch of %d not stored (%s: %s); redelivery in %.1fs",
            len(messages),
            type(exc).__name__,
            exc,
            delay,
        )
        for msg in messages:
            await self._settle(msg, retry=True, delay=delay)

    async def _settle(self, msg: Msg, *, retry: bool, delay: float | None = None) -> None:
        # A lost ack only means a redelivery, which the unique key turns into a duplicate.
        with suppress(nats.errors.Error):
            if retry:
                await msg.nak(delay=delay or self._settings.retry_delay_min_seconds)
            else:
                await msg.ack()

    def _count(self, outcome: BatchOutcome) -> None:
        for event_type, n in outcome.persisted.items():
            self._metrics.persisted.labels(event_type).inc(n)
        for reason, n in outcome.dead_letters.items():
            self._metrics.dead_letters.labels(reason).inc(n)
        self._metrics.duplicates.inc(outcome.duplicates)
        self._metrics.conflicts.inc(outcome.conflicts)


class FaultHook:
    """Test-only: kill this process with SIGKILL at one point of one batch (tests/faults).

    Off unless ``COTN_AGGREGATOR_FAULT`` names a point; never set it in a deployment. The
    points, in batch number ``COTN_AGGREGATOR_FAULT_BATCH`` (from 1):

    - ``before_commit``: every write of the batch done, the transaction not committed;
    - ``after_commit``: the transaction committed, no message acknowledged;
    - ``mid_batch``: committed, the first half of the messages acknowledged (and flushed to
      the server, so the crash lands between the two halves), the rest not.
    """

    def __init__(self, point: str | None, batch: int) -> None:
        self._point = point
        self._batch = batch
        self._seen = 0

    def batch_started(self) -> None:
        self._seen += 1

    async def reached(self, point: str, *, flush: Msg | None = None) -> None:
        """Crash here if this is the configured point of the configured batch."""
        if point != self._point or self._seen != self._batch:
            return
        if flush is not None:
            # Acks are buffered by nats-py: flush so the server has the first half's.
            await flush._client.flush()
        log.warning("test fault %s in batch %d: SIGKILL", point, self._seen)
        os.kill(os.getpid(), signal.SIGKILL)


async def raw_messages(message: Any) -> list[Msg]:
    """FastStream decoder that hands the handler the batch's messages undecoded.

    FastStream's own decoder would parse JSON before the handler and fail the whole batch
    on one bad message; the handler must see each message to dead-letter only that one.
    """
    return list(message.raw_message)


def subscribe_events(
    router: NatsRouter, *, settings: AggregatorSettings, consumer: BatchConsumer
) -> None:
    """Add the batch subscriber of the events stream to ``router``."""
    subscriber = router.subscriber(
        EVENTS_SUBJECTS,
        # declare=False: the streams are made by shared.bus.ensure_streams, not by FastStream.
        stream=JStream(EVENTS_STREAM, declare=False),
        durable=AGGREGATOR_DURABLE,
        config=consumer_config(settings),
        pull_sub=PullSub(settings.batch_size, timeout=settings.batch_timeout_seconds, batch=True),
        # Deliveries come to the aggregator's own inbox, the only one its NATS user may read.
        inbox_prefix=f"{settings.nats_inbox_prefix}.".encode(),
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_messages,
        title="store_events",
        description="Stores every accepted event once, then acknowledges it",
    )

    consume_as_arrived(subscriber)  # a batch is what has arrived: see pulling.py

    # Typed loosely on purpose: the handler gets nats-py Msg objects (see raw_messages), and
    # FastStream derives the AsyncAPI payload from this annotation, which Msg cannot give.
    @subscriber
    async def store_events(messages: list[Any]) -> None:
        """Store a batch of accepted events and settle each message."""
        await consumer.handle(messages)


def dlq_publisher(router: NatsRouter) -> LogicPublisher:
    """Declare the dead letters on ``router`` (so the AsyncAPI document shows them)."""
    return router.publisher(
        "cotn.dlq.{reason}",
        stream=JStream(DLQ_STREAM, declare=False),
        title="cotn.dlq",
        description="A message of the events stream that can never be stored, as it arrived; "
        "Cotn-Reason, Cotn-Detail, Cotn-Subject and Cotn-Stream-Seq headers say why and where",
    )


async def publish_dead_letter(publisher: LogicPublisher, row: dict[str, Any]) -> None:
    """Publish one dead letter with JetStream's acknowledgement."""
    subject, body, headers = dead_letter_message(row)
    await publisher.publish(body, subject=subject, headers=headers, timeout=PUBLISH_TIMEOUT)
