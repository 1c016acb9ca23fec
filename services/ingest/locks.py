"""Locks: the returns the office approved or verified, refused at the door until reopened.

The aggregator keeps the locks bucket ``COTN_LOCKS`` (:data:`shared.reviews.LOCKS_BUCKET`):
one key per locked target (``kpi.<kpi>.<period>.<reporter>``, ``milestone.<proposal>.<m>``),
its value the :class:`~shared.reviews.Lock`; a reopen deletes the key. A column service
watches the bucket (:class:`LockWatcher`) and keeps every lock in memory, so checking an
event costs one dict lookup and never a round trip, and never the database: an event for a
locked target is a ``409`` naming the lock (see services/ingest/router.py).

The watch can lag a review by the time a message takes: an event accepted in that window is
kept aside by the aggregator, which decides by stream order alone (shared/reviews.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from types import MappingProxyType

from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.problems import Problem
from shared.reviews import LOCKS_BUCKET, LOCKS_STREAM, Lock, parse_target

log = logging.getLogger("cotn.ingest.locks")

LOCKS_PREFIX = f"$KV.{LOCKS_BUCKET}."
LOCKED = "locked"
"""The problem's reason and each locked event's code."""

LOCKED_FIELD = {"kpi": "data.period", "milestone": "data.milestone"}
"""The field a locked event is refused by, by the kind of its target: what the lock holds."""


def apply_update(locks: dict[str, Lock], key: str, operation: str | None, value: bytes) -> None:
    """Apply one update of the bucket to ``locks``: a put locks ``key``, a delete or purge
    (a reopen) lifts it. A value that is no lock lifts it too, with a warning: the aggregator
    still holds events by stream order, so letting them in loses nothing."""
    if operation in (KV_DEL, KV_PURGE):
        locks.pop(key, None)
        return
    try:
        locks[key] = Lock.decode(value)
    except ValueError as exc:
        log.warning("ignoring the value of lock %s: %s", key, exc)
        locks.pop(key, None)


def lock_problem(lock: Lock) -> Problem:
    """Why an event for ``lock``'s target is refused, for the client to read."""
    return Problem(
        LOCKED_FIELD[parse_target(lock.target).kind],
        f"{lock.describe()} (review {lock.review}): it is locked, and events for it are "
        "refused until the programme office reopens it",
        status=409,
        code=LOCKED,
    )


class LockWatcher:
    """The locks bucket, mirrored in memory by a watch that starts again on reconnection.

    :meth:`run` watches for as long as the service runs; :meth:`lock_of` answers from
    memory. Until the bucket's initial values are in, :meth:`unready_reason` says so and the
    service is not ready: an empty map would let a locked return in. A re-watch (after a
    reconnection, :meth:`rewatch`) serves the previous state until its own initial values
    are in, then replaces it whole, so deletes missed while away are not kept.
    """

    def __init__(self, *, timeout: float, retry_wait: float) -> None:
        self._timeout = timeout
        self._retry_wait = retry_wait
        self._locks: dict[str, Lock] = {}
        self._loaded = False
        self._problem = "the locks bucket is not watched yet"
        self._watcher: KeyValue.KeyWatcher | None = None

    def lock_of(self, target: str) -> Lock | None:
        """The lock on ``target``, or None: one dict lookup (the request path's cost)."""
        return self._locks.get(target)

    @property
    def locks(self) -> Mapping[str, Lock]:
        """Every lock known now, by target (read-only)."""
        return MappingProxyType(self._locks)

    @property
    def loaded(self) -> bool:
        """Whether the bucket's initial values have been loaded once."""
        return self._loaded

    def unready_reason(self) -> str | None:
        """None once the locks are loaded, else why the service cannot check events yet."""
        return None if self._loaded else f"locks not loaded: {self._problem}"

    async def run(self, client: Client) -> None:
        """Watch the bucket until cancelled, watching again after a failure or a
        :meth:`rewatch`."""
        while True:
            try:
                await self._watch(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must outlive any failure of the bus
                self._problem = f"bucket {LOCKS_BUCKET} does not answer: {exc!r}"
                log.warning("cannot watch the locks (%r); retrying", exc)
                await asyncio.sleep(self._retry_wait)

    async def rewatch(self) -> None:
        """End the current watch, so :meth:`run` watches again from the bucket's values
        (after a reconnection, the consumer behind it may be gone)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with suppress(Exception):  # a dead subscription is what is being replaced
                await watcher.stop()

    async def _watch(self, client: Client) -> None:
        js = client.jetstream(timeout=self._timeout)
        bucket = KeyValue(
            name=LOCKS_BUCKET, stream=LOCKS_STREAM, pre=LOCKS_PREFIX, js=js, direct=False
        )
        watcher = self._watcher = await bucket.watchall()
        state: dict[str, Lock] = {}
        async for entry in watcher:
            if entry is None:  # nats-py's marker: the initial values are in
                self._locks, self._loaded = state, True
                log.info("watching %d locks", len(state))
                continue
            apply_update(state, entry.key, entry.operation, entry.value or b"")
