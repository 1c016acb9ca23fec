"""JetStream publishes with many acknowledgements pending on one reply subscription, and
atomic batches.

A request's events are published together and their acks awaited together: one round
trip's latency for a batch, not one per event, and no task or timer per message. Its claims
go as one atomic batch (nats-server 2.12+, ``allow_atomic`` on the stream): stored all or
none, with one acknowledgement and one write to disk for the batch, where one publish per
claim would cost the stream a synced write each and halve what a column service takes.
nats-py's ``publish_async`` does the same, but turns an error reply (a refused create-only
claim is one) into an exception inside its subscription callback, which leaves the
message's future unresolved until the caller's timeout; here an error reply resolves the
future with the :class:`nats.js.errors.APIError` the server named.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError

NO_RESPONDERS = "503"
BATCH_ID, BATCH_SEQUENCE = Header.BATCH_ID.value, Header.BATCH_SEQUENCE.value
BATCH_COMMIT = Header.BATCH_COMMIT.value
ATOMIC_BATCH_LIMIT = 1000
"""The most messages nats-server takes in one atomic batch (its default)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The stream's acknowledgement of one message."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Send:
    subject: str
    payload: bytes
    headers: dict[str, str]
    stream: str
    """The stream expected to take it (``Nats-Expected-Stream``)."""


class PendingAcks:
    """Publishes on ``client`` whose acks arrive on one subscription of its inbox."""

    def __init__(self, client: Client, *, max_pending: int, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._prefix = client.new_inbox()
        self._pending: dict[str, asyncio.Future[Ack]] = {}
        self._room = asyncio.Semaphore(max_pending)
        self._next = 0
        self._subscription: Subscription | None = None

    @property
    def client(self) -> Client:
        return self._client

    async def publish_all(self, sends: Sequence[Send]) -> list[Ack | BaseException]:
        """Publish every message; each one's ack, or the error the stream answered.

        The errors are :class:`nats.js.errors.APIError` (what the stream refused, such as a
        claim on a key that has a value) and ``NoStreamResponseError``. Raises TimeoutError
        unless every message is answered within the timeout, and what nats-py raises when the
        connection cannot take a message.
        """
        if self._subscription is None:
            self._subscription = await self._client.subscribe(f"{self._prefix}.*", cb=self._reply)
        futures: list[asyncio.Future[Ack]] = []
        try:
            async with asyncio.timeout(self._timeout):
                for send in sends:
                    futures.append(await self._publish(send))
                return await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for future in futures:
                future.cancel()  # no-op for the answered ones

    async def publish_atomic(self, sends: Sequence[Send]) -> Ack | BaseException:
        """Publish ``sends`` (at most :data:`ATOMIC_BATCH_LIMIT`, to one stream) as one atomic
        batch: the commit's ack (``seq`` is the last message's), or the error that refused
        the whole batch (what the stream refused of any message: nothing of it is stored).

        Raises like :meth:`publish_all`.
        """
        assert 0 < len(sends) <= ATOMIC_BATCH_LIMIT, len(sends)
        if len(sends) == 1:
            [answer] = await self.publish_all(sends)
            return answer
        batch = secrets.token_hex(16)
        *first, last = sends
        for sequence, send in enumerate(first, 1):
            headers = {**send.headers, BATCH_ID: batch, BATCH_SEQUENCE: str(sequence)}
            await self._client.publish(send.subject, send.payload, headers=headers)
        commit = {BATCH_ID: batch, BATCH_SEQUENCE: str(len(sends)), BATCH_COMMIT: "1"}
        [answer] = await self.publish_all(
            [Send(last.subject, last.payload, {**last.headers, **commit}, last.stream)]
        )
        return answer

    async def _publish(self, send: Send) -> asyncio.Future[Ack]:
        await self._room.acquire()
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._done(token))
        self._pending[token] = future
        headers = {**send.headers, Header.EXPECTED_STREAM.value: send.stream}
        try:
            await self._client.publish(
                send.subject, send.payload, reply=f"{self._prefix}.{token}", headers=headers
            )
        except BaseException:
            future.cancel()
            raise
        return future

    def _done(self, token: str) -> None:
        self._pending.pop(token, None)
        self._room.release()

    async def _reply(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return  # answered after its request gave up
        if msg.headers and msg.headers.get(Header.STATUS.value) == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
            if "error" in answer:
                try:
                    APIError.from_error(answer["error"])  # raises the error of that code
                except APIError as error:
                    future.set_exception(error)
                return
            future.set_result(Ack(int(answer["seq"]), bool(answer.get("duplicate", False))))
        except (ValueError, KeyError, TypeError) as exc:
            future.set_exception(APIError(description=f"unreadable ack: {exc!r}"))
