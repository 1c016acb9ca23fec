"""Load from concurrent HTTP clients that retry until every batch is acknowledged with a 202.

A client posts batches of CloudEvents to a column service and keeps each batch, with the
same ids, until it is answered 202: after a 503 (waiting its Retry-After, capped), after an
unanswered request (a service killed mid-request), after a timeout. What the tests check
afterwards is ``Load.acked``: every (source, id) a 202 acknowledged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from shared.catalogue import load_catalogue
from tests.aggregator.harness import T0, kpi, milestone

CE_BATCH = "application/cloudevents-batch+json"
CATALOGUE = load_catalogue()
COLUMN = "collaboration"
# Milestones of the collaboration column: several events per key, so ordering matters.
MILESTONE_KEYS = [
    (proposal, m.id)
    for proposal in CATALOGUE.column_by_id[COLUMN].proposals
    for m in CATALOGUE.proposal_by_id[proposal].milestones[:3]
]
STATUSES = ("not_started", "in_progress", "at_risk", "blocked", "completed")
KPI_PERIODS = [f"{year}-Q{quarter}" for year in (2023, 2024) for quarter in range(1, 5)]
"""Quarters (the KPI's frequency) that have all begun by the load's first event time (a
later period is refused)."""

Key = tuple[str, str]


def batch_events(prefix: str, client: int, number: int, size: int) -> tuple[str, list[dict]]:
    """(authority, events) of one batch; the same arguments give the same events.

    Every fourth batch is KPI reports from Northern Gritstone, the others milestone events
    from Greater Manchester, with event times scattered so that arrival order is not time
    order.
    """
    kpi_batch = number % 4 == 3
    make = _kpi_event if kpi_batch else _milestone_event
    events = [
        # A scrambled sequence number picks the key, the value and the event's time.
        make(f"{prefix}-c{client}-b{number}-{i}", client * 7919 + number * 131 + i * 17)
        for i in range(size)
    ]
    return ("northern-gritstone" if kpi_batch else "greater-manchester"), events


def _milestone_event(event_id: str, seq: int) -> dict[str, Any]:
    proposal, key = MILESTONE_KEYS[seq % len(MILESTONE_KEYS)]
    when = T0 + timedelta(minutes=seq % 5000)
    return milestone(event_id, proposal, key, STATUSES[seq % len(STATUSES)], when)


def _kpi_event(event_id: str, seq: int) -> dict[str, Any]:
    period = KPI_PERIODS[seq % len(KPI_PERIODS)]
    when = T0 + timedelta(minutes=seq % 5000)
    value = 100 + seq % 97
    return kpi(event_id, "early-stage-finance", value, period, when, source="northern-gritstone")


@dataclass(frozen=True)
class Answer:
    """One request: when it started and ended (loop time), its status (None: no answer)."""

    started: float
    ended: float
    status: int | None
    retry_after: str | None = None
    accepted: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    attempt: int = 1


class LoadFailed(AssertionError):
    """A client got an answer no retry can fix, or ran out of time."""


@dataclass
class Load:
    """``clients`` concurrent clients posting batches until stopped or ``max_batches`` each.

    ``url`` is called for each request, so a test can move the clients to a restarted
    service. Counts and time are bounded: ``max_batches`` per client, ``deadline`` seconds.
    """

    url: Callable[[], str]
    tokens: dict[str, str]
    prefix: str
    clients: int = 4
    batch_size: int = 20
    max_batches: int = 40
    deadline: float = 90.0
    max_backoff: float = 1.0
    acked: set[Key] = field(default_factory=set)
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> Load:
        """Run the clients in the background."""
        self._task = asyncio.ensure_future(self.run())
        return self

    def stop(self) -> None:
        """Ask the clients to finish the batch in hand and post no other."""
        self._stop.set()

    async def finished(self, within: float = 60) -> set[Key]:
        """Wait for every client to end; the acknowledged keys."""
        assert self._task is not None
        await asyncio.wait_for(self._task, within)
        return self.acked

    async def until_acked(self, count: int, within: float = 60) -> None:
        """Wait until ``count`` events are acknowledged (failing early if a client failed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.acked) < count:
            if self._task is not None and self._task.done():
                self._task.result()  # raises the client's failure, if any
                raise LoadFailed(f"load ended with {len(self.acked)} of {count} events acked")
            if loop.time() > deadline:
                raise LoadFailed(f"{len(self.acked)} of {count} events acked after {within}s")
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            async with asyncio.timeout(self.deadline):
                await asyncio.gather(*(self._client(http, c) for c in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, client: int) -> None:
        for number in range(self.max_batches):
            if self._stop.is_set():
                return
            authority, events = batch_events(self.prefix, client, number, self.batch_size)
            await self.post_until_acked(http, authority, events)

    async def post_until_acked(
        self, http: httpx.AsyncClient, authority: str, events: list[dict[str, Any]]
    ) -> Answer:
        """POST one batch until a 202, retrying with the same ids; its 202 answer."""
        body = json.dumps(events).encode()
        headers = {"content-type": CE_BATCH, "authorization": f"Bearer {self.tokens[authority]}"}
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            started = loop.time()
            try:
                response = await http.post(self.url() + "/v1/events", content=body, headers=headers)
            except httpx.TransportError:
                # No answer (the service died or is not back yet): retry the same ids.
                self.answers.append(Answer(started, loop.time(), None, attempt=attempt))
                await asyncio.sleep(0.1)
                continue
            answer = self._record(response, started, loop.time(), attempt)
            if response.status_code == 202:
                acknowledged = answer.accepted + answer.duplicates
                assert sorted(acknowledged) == sorted(e["id"] for e in events), "202 for a part"
                self.acked.update((authority, i) for i in acknowledged)
                return answer
            if response.status_code not in (429, 503):
                raise LoadFailed(f"{response.status_code} is not retryable: {response.text}")
            await asyncio.sleep(min(float(answer.retry_after or 1), self.max_backoff))

    def _record(
        self, response: httpx.Response, started: float, ended: float, attempt: int
    ) -> Answer:
        body = response.json() if response.status_code == 202 else {}
        answer = Answer(
            started,
            ended,
            response.status_code,
            retry_after=response.headers.get("retry-after"),
            accepted=tuple(body.get("accepted", ())),
            duplicates=tuple(body.get("duplicates", ())),
            attempt=attempt,
        )
        self.answers.append(answer)
        return answer

    def between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests made after ``start`` and answered before ``end``."""
        return [a for a in self.answers if a.started >= start and a.ended <= end]


async def post_all(load: Load, batches: list[tuple[str, list[dict]]]) -> list[Answer]:
    """Post ``batches`` once each (until acked), all at the same time; their 202 answers."""
    async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(load.deadline):
        return list(
            await asyncio.gather(*(load.post_until_acked(http, a, events) for a, events in batches))
        )
