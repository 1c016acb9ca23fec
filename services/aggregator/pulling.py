"""How the aggregator pulls the events stream: what has arrived is handed over at once.

nats-py's ``fetch(batch, timeout)``, and FastStream's batch loop around it, wait for a full
batch until the window ends, so a lone event on a quiet stream waited the whole window
(0.2 s) before it was stored. Here a batch is whatever has arrived:

- messages already delivered to the aggregator's inbox are taken at once, and a ``no_wait``
  pull asks the server for the rest of the batch from its backlog, which it answers at
  once: a busy stream (a backlog, a burst) still gives full batches;
- with nothing in hand, a pull of one message waits on the server up to the window; the
  first message ends it, and the rest of the batch comes from a ``no_wait`` pull as above.
  No pull is left waiting on the server once a fetch has returned, so nothing arrives for a
  pull nobody waits on (a fetch that timed out may leave one message for the next).

While a batch is being stored the next one is fetched (``BatchConsumer.handle``), so under
load the batches grow by themselves to what arrives during one store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import nats.errors
import nats.js.errors
from faststream.nats.subscriber.usecases.stream_pull_subscriber import (
    BatchPullStreamSubscriber,
)
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

log = logging.getLogger("cotn.aggregator.pulling")

ENDS_A_PULL = frozenset({api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT})
"""Statuses that end a pull request: nothing more is coming for it."""
PAUSE_AFTER_ERROR = 0.2
"""Seconds the loop waits after the server or the connection refused a pull."""


def adapt_pull_subscriptions(js: JetStreamContext) -> None:
    """Give each pull subscription ``js`` creates an :class:`ArrivedFetch` and the queued
    fast path of :func:`take_queued_messages_at_once`; run before the subscriber starts."""
    pull_subscribe = js.pull_subscribe

    async def subscribe(*args: Any, **kwargs: Any) -> JetStreamContext.PullSubscription:
        subscription = await pull_subscribe(*args, **kwargs)
        take_queued_messages_at_once(subscription._sub)
        subscription.fetch = ArrivedFetch(subscription)  # type: ignore[method-assign]
        return subscription

    js.pull_subscribe = subscribe  # type: ignore[method-assign]


class ArrivedFetch:
    """``fetch(batch, timeout)`` for one pull subscription: what has arrived, at once (see
    the module's docstring). Raises ``nats.errors.TimeoutError`` when nothing came within
    ``timeout``, and nats-py's ``APIError`` for a status that is not part of pulling (the
    consumer deleted, a leadership change)."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._subscription = subscription
        self._sub: Subscription = subscription._sub

    async def __call__(
        self,
        batch: int = 1,
        timeout: float | None = 5.0,  # noqa: ASYNC109 (nats-py's signature)
        heartbeat: float | None = None,
    ) -> list[Msg]:
        window = 5.0 if timeout is None else timeout
        msgs = self._take_queued(batch)
        if msgs:
            if len(msgs) < batch:
                msgs += await self._backlog(batch - len(msgs), window)
            return msgs
        return await self._first_arrival(batch, window)

    def _take_queued(self, most: int) -> list[Msg]:
        """Up to ``most`` messages already in the inbox; statuses of past pulls dropped."""
        sub = self._sub
        queue = sub._pending_queue
        taken: list[Msg] = []
        while len(taken) < most and not queue.empty():
            msg = queue.get_nowait()
            sub._pending_size -= len(msg.data)
            queue.task_done()
            if not JetStreamContext.is_status_msg(msg):
                taken.append(msg)
        return taken

    async def _pull(self, request: dict[str, Any]) -> None:
        s = self._subscription
        await s._nc.publish(s._nms, json.dumps(request).encode(), s._deliver)

    async def _backlog(self, needed: int, window: float) -> list[Msg]:
        """What the server holds for this consumer, up to ``needed``, answered at once."""
        await self._pull({"batch": needed, "no_wait": True})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        got: list[Msg] = []
        while len(got) < needed:
            try:
                msg = await self._sub.next_msg(timeout=max(0.001, deadline - loop.time()))
            except TimeoutError:
                break
            status = JetStreamContext.is_status_msg(msg)
            if status in ENDS_A_PULL:
                break
            if not status:
                got.append(msg)
        return got

    async def _first_arrival(self, batch: int, window: float) -> list[Msg]:
        """Wait up to ``window`` for the first message with a pull of one, then take the
        rest of the batch from the backlog at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        # Expires a little before our deadline: the server's end of the pull comes first.
        expires = max(int(window * 1_000_000_000) - 100_000, 1_000_000)
        await self._pull({"batch": 1, "expires": expires})
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise nats.errors.TimeoutError
            try:
                msg = await self._sub.next_msg(timeout=left)
            except TimeoutError:
                raise nats.errors.TimeoutError from None
            status = JetStreamContext.is_status_msg(msg)
            if status in ENDS_A_PULL or status == api.StatusCode.CONTROL_MESSAGE:
                continue  # the end of an earlier pull; ours ends by our deadline
            if status:
                raise nats.js.errors.APIError.from_msg(msg)
            if batch == 1:
                return [msg]
            return [msg, *await self._backlog(batch - 1, window)]


def consume_as_arrived(subscriber: BatchPullStreamSubscriber) -> None:
    """Run ``subscriber``'s batch loop as one fetch per batch, handed over at once.

    FastStream's own loop fetches again until the batch is full or the window has passed;
    this one hands each fetch to the handler. A refused pull or a lost connection is logged
    and tried again after a pause: the loop never ends while the subscriber runs.
    """

    async def consume_pull() -> None:
        pull = subscriber.pull_sub
        while subscriber.running:
            try:
                assert subscriber.subscription is not None
                messages = await subscriber.subscription.fetch(
                    batch=pull.batch_size, timeout=pull.timeout
                )
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as exc:
                log.warning("pulling the events stream failed (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(PAUSE_AFTER_ERROR)
                continue
            if messages and subscriber.running:
                await subscriber.consume(messages)

    subscriber._consume_pull = consume_pull  # type: ignore[method-assign]


def take_queued_messages_at_once(sub: Subscription) -> bool:
    """Let ``sub.next_msg`` hand over a message already queued without a task per message.

    nats-py's ``next_msg`` makes a task (named by a fresh UUID) and a ``wait_for`` each time,
    even when the message is already in the queue: about a tenth of the consumer's time per
    event. A queued message is taken here with nats-py's own bookkeeping (pending bytes,
    ``task_done``); otherwise, and on a closed connection, nats-py's ``next_msg`` runs as
    before. Returns False, and changes nothing, when this nats-py keeps its queue elsewhere.
    """
    queue = getattr(sub, "_pending_queue", None)
    if not isinstance(queue, asyncio.Queue) or not isinstance(
        getattr(sub, "_pending_size", None), int
    ):
        return False
    next_msg = sub.next_msg

    async def next_queued_msg(timeout: float | None = 1.0) -> Msg:  # noqa: ASYNC109 (nats-py's)
        if queue.empty() or sub._conn.is_closed:
            return await next_msg(timeout)
        msg: Msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        return msg

    sub.next_msg = next_queued_msg  # type: ignore[method-assign]
    return True
