"""The column service's side of NATS: connect in the background, keep the streams, publish.

The app's lifespan starts and stops the broker (no FastAPI integration: FastStream's
``faststream.nats.fastapi`` is deprecated, and the service has no subscriber for it to
serve). ``broker.start()`` would wait for NATS and hold the HTTP side down;
:class:`BackgroundNatsBroker` starts in a task instead: the service answers ``/healthz``
(and ``/readyz`` 503) at once while nats-py keeps retrying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import nats.errors
from faststream.exceptions import IncorrectState
from faststream.nats import JStream, NatsBroker
from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.ingest.acks import ATOMIC_BATCH_LIMIT, Ack, PendingAcks, Send
from services.ingest.claims import (
    CLAIMS_PREFIX,
    CREATE_ONLY,
    Claim,
    claim,
    claim_of,
    claim_subject,
    is_taken,
    withdraw,
)
from services.ingest.locks import LockWatcher
from services.ingest.settings import IngestSettings
from shared.bus import (
    CLAIMS_BUCKET,
    CLAIMS_STREAM,
    CONTENT_TYPE,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    ensure_streams,
    event_subject,
)
from shared.kinds import KINDS

log = logging.getLogger("cotn.ingest.bus")

# What a publish or a probe raises when NATS or JetStream cannot answer (nats.js errors
# derive from nats.errors.Error; IncorrectState is FastStream's "not connected yet").
BUS_ERRORS = (nats.errors.Error, TimeoutError, IncorrectState)

# FastStream reads this spelling to decode what a subscriber receives.
CONTENT_TYPE_HEADER = "content-type"

PROBE_TIMEOUT = 1.0


class BusUnavailable(Exception):
    """The bus did not acknowledge every event of a request."""


class Conflicts(Exception):
    """Ids of the request held by events with other content; nothing was published."""

    def __init__(self, held: dict[int, Claim]) -> None:
        super().__init__(f"{len(held)} ids are held by other events")
        self.held = held
        """By position in the request's messages, the claim that holds each id."""


@dataclass(frozen=True, slots=True)
class BusMessage:
    subject: str
    msg_id: str
    payload: bytes
    claim: Claim


class BackgroundNatsBroker(NatsBroker):
    """A NatsBroker whose ``start`` returns at once and connects in a task.

    ``on_connected`` runs once the connection is up; ``stop`` cancels what is still running,
    then drains the connection (or closes it when NATS is away, as nats-py cannot drain then).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_connected: Callable[[], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until it ends or the broker stops."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("NATS set-up failed; the service stays not ready", exc_info=exc)

    async def start(self) -> None:
        self.run_in_background(self._start_when_reachable())

    async def _start_when_reachable(self) -> None:
        await super().start()
        log.info("connected to NATS")
        if self.on_connected is not None:
            await self.on_connected()

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if self._connection is not None and not self._connection.is_connected:
            await self._connection.close()
            self._connection = None
        await super().stop(exc_type, exc_val, exc_tb)


def declare_event_channels(broker: NatsBroker, column: str) -> None:
    """Declare each registered kind's subject of ``column`` (so the AsyncAPI document shows
    them); publishing goes through :meth:`EventBus.publish`, which sets the stream's ack and
    de-duplication headers itself."""
    for kind in KINDS:
        broker.publisher(
            event_subject(column, "{proposal}", kind.name),
            stream=JStream(EVENTS_STREAM, declare=False),
            schema=kind.model,
            title=f"cotn.events.{column}.{kind.name}",
            description=f"{kind.description} ({kind.type}), accepted by the {column} service",
        )


class EventBus:
    """Claims accepted events' ids (services/ingest/claims.py), then publishes the events to
    the events stream, each with its JetStream ack; watches the locks bucket once connected
    (``locks``, services/ingest/locks.py)."""

    def __init__(self, settings: IngestSettings) -> None:
        self._stream_settings = settings.stream_settings()
        self._timeout = settings.publish_timeout_seconds
        self._retry_wait = settings.reconnect_wait_seconds
        self._max_in_flight = settings.max_in_flight
        self._warned = False
        self._manage_streams = settings.manage_streams
        self._acks: PendingAcks | None = None
        self._bucket: KeyValue | None = None
        self.locks = LockWatcher(
            timeout=settings.publish_timeout_seconds, retry_wait=settings.reconnect_wait_seconds
        )
        self.broker = BackgroundNatsBroker(
            settings.nats_servers,  # one URL, or the seeds of a cluster
            name=f"cotn-ingest-{settings.column}",
            # The only inbox its NATS user may read: see shared.natsauth.
            inbox_prefix=settings.nats_inbox_prefix,
            max_reconnect_attempts=-1,  # for ever: the service waits for NATS, it never gives up
            reconnect_time_wait=settings.reconnect_wait_seconds,
            connect_timeout=2,
            error_cb=self._on_error,
            reconnected_cb=self._on_reconnected,
            # FastStream logs per message at log_level: keep that at DEBUG, warnings stay.
            logger=log,
            log_level=logging.DEBUG,
        )
        self.broker.on_connected = self._on_connected
        declare_event_channels(self.broker, settings.column)

    async def ensure_streams(self) -> None:
        """Create or update the streams, retrying until JetStream answers.

        Nothing to do when ``cotn nats setup`` manages them (``manage_streams`` off): the
        service's NATS user may not, and ``/readyz`` says when the stream is missing.
        """
        while self._manage_streams:
            try:
                js = self.broker.connection.jetstream(timeout=self._timeout)
                await ensure_streams(js, self._stream_settings)
            except BUS_ERRORS as exc:
                log.warning("cannot set up the JetStream streams yet (%r); retrying", exc)
                await asyncio.sleep(self._retry_wait)
            else:
                return

    async def _on_connected(self) -> None:
        # The watch needs the bucket, which ensure_streams makes (or `cotn nats setup` did).
        await self.ensure_streams()
        self.broker.run_in_background(self.locks.run(self.broker.connection))

    async def _on_error(self, exc: Exception) -> None:
        # FastStream logs connection errors once connected; before that, say it once here.
        if not self._warned and self._client() is None:
            self._warned = True
            log.warning("NATS unreachable (%r); retrying every %ss", exc, self._retry_wait)

    async def _on_reconnected(self) -> None:
        self.broker.run_in_background(self._after_reconnection())

    async def _after_reconnection(self) -> None:
        # A server that restarted without its store has no streams: set them up again; and
        # the locks' consumer may be gone with it: watch again.
        await self.ensure_streams()
        await self.locks.rewatch()

    def _client(self) -> Client | None:
        try:
            return self.broker.connection
        except IncorrectState:
            return None

    async def unready_reason(self) -> str | None:
        """None when the bus is connected, the events stream and the claims bucket answer
        and the locks are loaded, else why not."""
        client = self._client()
        if client is None or not client.is_connected:
            return "not connected to NATS"
        js = client.jetstream(timeout=PROBE_TIMEOUT)
        for stream in (EVENTS_STREAM, CLAIMS_STREAM):
            try:
                await js.stream_info(stream)
            except BUS_ERRORS as exc:
                return f"stream {stream} does not answer: {exc!r}"
        return self.locks.unready_reason()

    def _bus(self, client: Client) -> tuple[PendingAcks, KeyValue]:
        """The connection's acks (one reply subscription for every publish) and the claims
        bucket, for the slow path."""
        if self._acks is None or self._acks.client is not client:
            self._acks = PendingAcks(client, max_pending=self._max_in_flight, timeout=self._timeout)
            js = client.jetstream(timeout=self._timeout)
            self._bucket = KeyValue(
                name=CLAIMS_BUCKET, stream=CLAIMS_STREAM, pre=CLAIMS_PREFIX, js=js, direct=True
            )
        assert self._bucket is not None
        return self._acks, self._bucket

    async def resent(self, messages: Sequence[BusMessage]) -> list[bool]:
        """Whether each message was accepted before with the same content (its claim holds
        the same digest): a resend. Reads the claims; makes none."""
        client = self._client()
        if client is None or not client.is_connected:
            raise BusUnavailable("not connected to NATS")
        _, bucket = self._bus(client)
        found = await asyncio.gather(
            *(claim_of(bucket, m.msg_id) for m in messages), return_exceptions=True
        )
        out = []
        for message, held in zip(messages, found, strict=True):
            if isinstance(held, BaseException):
                raise BusUnavailable(f"a claim could not be read ({held!r})")
            out.append(held is not None and held.digest == message.claim.digest)
        return out

    async def publish(self, messages: Sequence[BusMessage]) -> list[bool]:
        """Claim every message's id, then publish them all, many acks pending; True where
        the event was sent before (the same content under the same id).

        Raises :class:`Conflicts` when an id is held by other content, and
        :class:`BusUnavailable` unless every claim and publish is acknowledged. The claims
        this request made are withdrawn when nothing was published; once publishing began
        they stay (an event may have landed without its ack reaching us), and the client's
        retry with the same events is then a resend.
        """
        client = self._client()
        if client is None or not client.is_connected:
            # Refuse before sending: nats-py would buffer and deliver after we answered.
            raise BusUnavailable("not connected to NATS")
        acks, bucket = self._bus(client)
        made, taken = await self._claim_all(acks, bucket, messages)
        try:
            held = await self._held(bucket, messages, taken, made)
            if held:
                raise Conflicts(held)
        except (BusUnavailable, Conflicts):
            await self._withdraw(bucket, messages, made)
            raise
        events = [
            Send(
                m.subject,
                m.payload,
                {CONTENT_TYPE_HEADER: CONTENT_TYPE, MSG_ID_HEADER: m.msg_id},
                EVENTS_STREAM,
            )
            for m in messages
        ]
        answers = await self._acked(acks, events)
        if failures := [a for a in answers if not isinstance(a, Ack)]:
            raise BusUnavailable(
                f"{len(failures)} of {len(messages)} events not acknowledged ({failures[0]!r})"
            )
        return [a.duplicate or i not in made for i, a in enumerate(answers) if isinstance(a, Ack)]

    async def _claim_all(
        self, acks: PendingAcks, bucket: KeyValue, messages: Sequence[BusMessage]
    ) -> tuple[dict[int, int], list[int]]:
        """Claim every message's id in atomic batches: the claims made (position -> their
        revision), and the positions of batches refused because some id has a claim."""
        made: dict[int, int] = {}
        taken: list[int] = []
        for start in range(0, len(messages), ATOMIC_BATCH_LIMIT):
            chunk = range(start, min(start + ATOMIC_BATCH_LIMIT, len(messages)))
            sends = [
                Send(
                    claim_subject(messages[i].msg_id),
                    messages[i].claim.encode(),
                    CREATE_ONLY,
                    CLAIMS_STREAM,
                )
                for i in chunk
            ]
            try:
                answer = await acks.publish_atomic(sends)
            except BUS_ERRORS as exc:
                answer = exc
            if isinstance(answer, Ack):
                first = answer.seq - len(chunk) + 1
                made.update({i: first + n for n, i in enumerate(chunk)})
            elif is_taken(answer):
                taken += chunk
            else:
                await self._withdraw(bucket, messages, made)
                raise BusUnavailable(f"{len(messages)} claims not acknowledged ({answer!r})")
        return made, taken

    async def _held(
        self,
        bucket: KeyValue,
        messages: Sequence[BusMessage],
        taken: Sequence[int],
        made: dict[int, int],
    ) -> dict[int, Claim]:
        """The claims held by other content among ``taken``, by position; ``made`` gains
        the claims made here (ids of a refused batch that no claim held)."""
        outcomes = await asyncio.gather(
            *(claim(bucket, messages[i].msg_id, messages[i].claim) for i in taken),
            return_exceptions=True,
        )
        held = {}
        for i, outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise BusUnavailable(f"a claim could not be read ({outcome!r})")
            if outcome.revision is not None:
                made[i] = outcome.revision
            elif outcome.held is not None and outcome.held.digest != messages[i].claim.digest:
                held[i] = outcome.held
        return held

    async def _acked(self, acks: PendingAcks, sends: Sequence[Send]) -> list[Ack | BaseException]:
        try:
            return await acks.publish_all(sends)
        except BUS_ERRORS as exc:
            raise BusUnavailable(
                f"{len(sends)} events not acknowledged within {self._timeout:g} s ({exc!r})"
            ) from exc

    async def _withdraw(
        self, bucket: KeyValue, messages: Sequence[BusMessage], made: dict[int, int]
    ) -> None:
        outcomes = await asyncio.gather(
            *(withdraw(bucket, messages[i].msg_id, rev) for i, rev in made.items()),
            return_exceptions=True,
        )
        if failed := [o for o in outcomes if isinstance(o, BaseException)]:
            # The claims stay: a resend of the same events works, another's under an id is a 409.
            log.warning("could not withdraw %d claims (%r)", len(failed), failed[0])
