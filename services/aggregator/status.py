"""Status events: a proposal's health, published on ``cotn.status.<column>.<proposal>`` when
its RAG or stalled state changes.

After each batch that stored something, and every ``status_interval`` for changes that
time alone brings (a stall, an overdue milestone), the programme is rated as
:func:`shared.health.programme_health` rates it, a few proposals at a time so that reads
are served in between. A proposal whose (rag, stalled) differs from its
``proposal_status`` row gets one status event. The row decides, so two replicas publish a
change once: in one transaction per change, the UPDATE ... WHERE (rag, stalled) differ
either matches (this replica publishes, then commits) or not (another one did). A publish
that fails rolls the change back, to be published on the next pass; its ``Nats-Msg-Id``
(proposal and version) keeps a retry after a lost commit from publishing it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime
from typing import Any, Final, Literal

from faststream.nats import JStream, NatsRouter
from faststream.nats.publisher.usecase import LogicPublisher
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.aggregator.board import ReasonOut, reason_data
from services.aggregator.queries import proposal_statuses
from services.aggregator.snapshot import LiveBoard, Snapshot
from services.aggregator.store import record_status_change
from shared.bus import CONTENT_TYPE, MSG_ID_HEADER, STATUS_STREAM, msg_id, status_subject
from shared.catalogue import Catalogue
from shared.health import ProposalHealth, Rag

log = logging.getLogger("cotn.aggregator.status")

STATUS_TYPE: Final = "org.cotn.status.v1"
STATUS_SOURCE: Final = "cotn-aggregator"
PUBLISH_TIMEOUT = 5.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StatusData(_Frozen):
    column: str
    proposal: str
    rag: Rag
    stalled: bool
    previous_rag: Rag | None = Field(description="None for the first status published")
    previous_stalled: bool | None
    version: int = Field(description="Counts the proposal's changes, from 1")
    last_progress: AwareDatetime = Field(description="Newest milestone event, or programme start")
    reasons: list[ReasonOut]


class StatusEvent(_Frozen):
    """A proposal's new health, as a CloudEvent."""

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: Literal["cotn-aggregator"] = STATUS_SOURCE
    type: Literal["org.cotn.status.v1"] = STATUS_TYPE
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: StatusData


PublishStatus = Callable[[StatusEvent], Awaitable[None]]


def status_publisher(router: NatsRouter) -> LogicPublisher:
    """Declare the status events on ``router`` (so the AsyncAPI document shows them)."""
    return router.publisher(
        "cotn.status.{column}.{proposal}",
        stream=JStream(STATUS_STREAM, declare=False),
        schema=StatusEvent,
        title="cotn.status",
        description="A proposal's RAG or stalled state changed",
    )


async def publish_status(publisher: LogicPublisher, event: StatusEvent) -> None:
    """Publish one status event with JetStream's acknowledgement."""
    await publisher.publish(
        event.model_dump_json().encode(),
        subject=status_subject(event.data.column, event.data.proposal),
        headers={MSG_ID_HEADER: msg_id(event.source, event.id), "content-type": CONTENT_TYPE},
        timeout=PUBLISH_TIMEOUT,
    )


def reasons_of(health: ProposalHealth) -> list[ReasonOut]:
    """The reasons of ``health`` in the wire model the board shows them in."""
    return [ReasonOut.model_validate(reason_data(r)) for r in health.reasons]


def status_event(
    health: ProposalHealth, previous: tuple[str | None, bool | None], version: int, now: datetime
) -> StatusEvent:
    """The status event of one change of ``health``."""
    previous_rag, previous_stalled = previous
    return StatusEvent(
        id=f"{health.id}:{version}",
        time=now,
        data=StatusData(
            column=health.column,
            proposal=health.id,
            rag=health.rag,
            stalled=health.stalled,
            previous_rag=previous_rag,
            previous_stalled=previous_stalled,
            version=version,
            last_progress=health.last_progress,
            reasons=reasons_of(health),
        ),
    )


class StatusPublisher:
    """Rates the programme and publishes each proposal's changes once."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        readers: async_sessionmaker[Any],
        writers: async_sessionmaker[Any],
        clock: Callable[[], datetime],
        publish: PublishStatus,
        interval: float,
        min_gap: float = 0.0,
        board: Callable[[], Awaitable[Snapshot]] | None = None,
    ) -> None:
        """``board`` gives the live board's snapshot (the app shares its read API's); by
        default one of its own, over ``readers``."""
        self._catalogue = catalogue
        self._board = (
            board or LiveBoard(catalogue=catalogue, sessions=readers, clock=clock).snapshot
        )
        self._readers = readers
        self._writers = writers
        self._clock = clock
        self._publish = publish
        self._interval = interval
        self._min_gap = min(min_gap, interval)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._next_change: datetime | None = None
        """When the clock alone next changes the rating of the state last passed over."""

    def poke(self) -> None:
        """Ask for a pass soon (after a batch stored something)."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` once the pass in progress is done."""
        # Cancelling a pass mid-write could strand its connection, and SQLite's write lock.
        self._stopped.set()
        self._wake.set()

    def until_next_pass(self) -> float:
        """Seconds to wait for a poke before passing anyway: until the clock alone next
        changes the rating (a stall, half a threshold, a due date's morrow, a grace period's
        end: :func:`~shared.health.valid_until`), at most ``interval`` less ``min_gap``."""
        wait = self._interval - self._min_gap
        if self._next_change is not None:
            wait = min(wait, max(0.0, (self._next_change - self._clock()).total_seconds()))
        return wait

    async def run(self) -> None:
        """Pass after each poke (at most one per ``min_gap``), at each instant the clock alone
        changes the rating, and every ``interval``."""
        while not self._stopped.is_set():
            try:
                await self.publish_changes()
            except Exception as exc:  # the next pass tries again; the rows tell what is published
                log.warning("status pass failed (%s: %s)", type(exc).__name__, exc)
            # A busy stream pokes after every batch: one pass per min_gap is enough.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=self._min_gap)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.until_next_pass())
            self._wake.clear()

    async def publish_changes(self) -> list[StatusEvent]:
        """Publish a status event for each proposal whose (rag, stalled) changed, as the live
        board's snapshot rates it now (built from the last one: only what changed is read
        and rated again)."""
        now = self._clock()
        snapshot = await self._board()
        async with self._readers() as session:
            published = await proposal_statuses(session=session)
        self._next_change = snapshot.valid_until
        sent = []
        for proposal in self._catalogue.proposals:
            health = snapshot.health.proposals[proposal.id]
            previous = published.get(proposal.id, (None, None))
            if previous != (health.rag, health.stalled):
                event = await self._publish_change(health, previous, now)
                if event is not None:
                    sent.append(event)
        return sent

    async def _publish_change(
        self, health: ProposalHealth, previous: tuple[str | None, bool | None], now: datetime
    ) -> StatusEvent | None:
        async with self._writers() as session, session.begin():
            version = await record_status_change(
                session=session,
                proposal=health.id,
                column=health.column,
                rag=health.rag,
                stalled=health.stalled,
                reasons=[r.model_dump(mode="json") for r in reasons_of(health)],
                changed_at=now,
            )
            if version is None:
                return None  # another replica published this change
            event = status_event(health, previous, version, now)
            # Inside the transaction: a failed publish rolls the change back for the next pass.
            await self._publish(event)
        log.info("status %s: %s%s", health.id, health.rag, " (stalled)" if health.stalled else "")
        return event
