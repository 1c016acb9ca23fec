"""The live board as an immutable snapshot: read and rated once, encoded once, then served
until the store or the clock changes it.

A :class:`Snapshot` is the rating of the stored state at the instant it was built, with
what the live answers of ``/v1/programme`` and ``/v1/kpis`` are (encoded bytes and their
strong ``ETag``) and the text of ``/metrics``' programme gauges, with each proposal's
``/v1/proposals/{id}`` encoded the first time it is asked for. It records two things that say
when it stops being right:

- ``version``: the store's version it was read at. Every commit that changes what the
  board reads moves the version on in the same transaction (``store_version``, moved by
  ``store.store_batch`` and ``replay``), so a commit of any replica is seen at the next
  request: one primary-key lookup per request.
- ``valid_until``: the first instant at which the clock alone can change the rating
  (:func:`shared.health.valid_until`: a stall threshold, half of one, a grace period's
  end, the next UTC midnight).

:class:`LiveBoard` holds the current snapshot and answers each request with it while it is
fresh, else builds the next one, one build at a time, from the current one: it reads only
the projection rows written since its version (each row carries the version of the commit
that wrote it) and the locks of their returns, and rates again only what they touch
(:func:`shared.health.rerate`), unless a review or a replay since may have taken rows out
or changed locks (``store_version.rebuilt``), when it reads the store whole. The rating and
encoding run in a worker thread, so the event loop goes on storing and serving meanwhile.

How fresh an answer is. A request waits for the build that holds every commit made before
it, so a client that saw its event stored sees it on the board at its next request, with
one exception, for the live reads (``/v1/programme``, ``/v1/proposals/{id}``, ``/v1/kpis``,
``/metrics``) while the programme changes fast. A live read that would wait for a build
rating again more than ``wait_proposals`` proposals (a burst of events across the
programme, a review or replay read whole, the clock moving every rating) is answered from
the last complete snapshot while that build runs; and after a build from the changed rows
that large, until one that is not, a live read is answered from the last complete snapshot
at once, starting the next build if none runs. The board is then a build behind, never
older than one this replica has answered with. The status pass always waits. Two replicas
over one store therefore converge to the same answers, and every answer is the rating the
clock's ``now`` gave when it was built; ``generated_at`` says when that was (the time the
board was last rated), not when it was asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from services.aggregator import queries, returns
from services.aggregator.board import (
    LIVE,
    Locks,
    ProgrammeEncoder,
    kpi_list,
    programme_document,
    proposal_detail,
)
from services.aggregator.gauges import (
    GaugeEncoder,
    approval_gauge,
    programme_gauges,
    render_gauges,
)
from shared.catalogue import Catalogue
from shared.health import (
    ClockWatch,
    ProgrammeHealth,
    ProgrammeState,
    Touched,
    changed_state,
    programme_health,
    rated_again,
    rerate,
    valid_until,
)

Clock = Callable[[], datetime]
Sessions = Callable[[], AsyncSession]


class Encoded(NamedTuple):
    """A response body and its strong entity tag (quoted, as the ``ETag`` header has it)."""

    body: bytes
    etag: str


def encode(body: bytes) -> Encoded:
    """``body`` with an ETag made of its hash: equal bodies, on any replica, equal tags."""
    return Encoded(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The live board at one store version, rated at ``health.at``; right until the store
    moves past ``version`` or the clock reaches ``valid_until``."""

    catalogue: Catalogue = field(repr=False)
    version: int
    state: ProgrammeState = field(repr=False)
    """What was rated: the next snapshot starts from it when only some rows changed."""
    health: ProgrammeHealth
    locks: Locks
    valid_until: datetime
    programme: Encoded = field(repr=False)
    """``GET /v1/programme``."""
    kpis: Encoded = field(repr=False)
    """``GET /v1/kpis``."""
    gauges: bytes = field(repr=False)
    """``/metrics``' programme gauges."""
    # Made the first time asked for: most proposals' pages are never read between changes.
    _proposals: dict[str, Encoded] = field(default_factory=dict, repr=False, compare=False)

    def fresh(self, version: int, now: datetime) -> bool:
        """Whether this is the board of a store at ``version`` (or a later one) at ``now``."""
        return self.version >= version and self.holds_at(now)

    def holds_at(self, now: datetime) -> bool:
        """Whether the clock alone leaves the rating as it is at ``now`` (a clock set back
        before the rating, as a test's may be, needs a new one too)."""
        return self.health.at <= now < self.valid_until

    def proposal(self, proposal_id: str) -> Encoded:
        """``GET /v1/proposals/{proposal_id}`` of a proposal in the catalogue."""
        found = self._proposals.get(proposal_id)
        if found is None:
            detail = proposal_detail(self.catalogue, self.health, proposal_id, LIVE, self.locks)
            assert detail is not None, proposal_id  # the caller checked it against the catalogue
            found = self._proposals[proposal_id] = encode(detail.model_dump_json().encode())
        return found


def build_snapshot(
    catalogue: Catalogue,
    state: ProgrammeState,
    locks: Locks,
    version: int,
    now: datetime,
    previous: tuple[Snapshot, Touched] | None = None,
    encoder: ProgrammeEncoder | None = None,
    watch: ClockWatch | None = None,
    gauges: GaugeEncoder | None = None,
) -> Snapshot:
    """Rate ``state`` at ``now`` and encode the board, the KPIs and the gauges: a pure
    function. With ``previous`` (a snapshot of a state that differs from ``state`` by what
    it touched), only what that can change is rated again (:func:`shared.health.rerate`);
    with ``encoder`` and ``gauges``, only the proposals rated again (or whose verifications
    changed) are encoded again, the same bytes; with ``watch``, only their clock instants
    are worked out again (:class:`shared.health.ClockWatch`), the same ``valid_until``."""
    if previous is None:
        health = programme_health(catalogue, state, now)
    else:
        before, touched = previous
        health = rerate(
            catalogue, before.health, state, touched, now, holds_until=before.valid_until
        )
    # Serialised straight from the board's plain data: at thousands of milestones a model
    # per milestone would cost more than rating the programme (see board.py).
    if encoder is None:
        programme = encode(to_json(programme_document(catalogue, health, LIVE, locks)))
    else:
        body, digest = encoder.encode_tagged(health, LIVE, locks)
        programme = Encoded(body, f'"{digest}"')
    kpis = kpi_list(catalogue, health, LIVE, locks).model_dump_json().encode()
    if gauges is None:
        text = render_gauges(
            [*programme_gauges(catalogue, health), approval_gauge(catalogue, health, locks)]
        )
    else:
        text = gauges.render(health, locks)
    return Snapshot(
        catalogue=catalogue,
        version=version,
        state=state,
        health=health,
        locks=locks,
        valid_until=(
            valid_until(catalogue, state, now) if watch is None else watch.valid_until(state, now)
        ),
        programme=programme,
        kpis=encode(kpis),
        gauges=text,
    )


WAIT_PROPOSALS = 100
"""A live read waits for a build of the board that rates again at most this many proposals
(:class:`LiveBoard`): at 1,000 proposals, about 15 ms of CPU."""


@dataclass(eq=False)
class _Build:
    """The next snapshot being built: how many proposals it rates again (known once it has
    read the store), and the snapshot."""

    weight: asyncio.Future[int]
    done: asyncio.Task[Snapshot]


class LiveBoard:
    """The current :class:`Snapshot` of the live board, built again when it is stale: one
    build at a time, its rating and encoding in a worker thread, so the event loop goes on
    serving (and storing) meanwhile."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        sessions: Sessions,
        clock: Clock,
        wait_proposals: int = WAIT_PROPOSALS,
    ) -> None:
        self._catalogue = catalogue
        self._sessions = sessions
        self._clock = clock
        self._wait_proposals = wait_proposals
        self._current: Snapshot | None = None
        self._encoder = ProgrammeEncoder(catalogue)
        self._watch = ClockWatch(catalogue)
        self._gauges = GaugeEncoder(catalogue)
        self._building: _Build | None = None
        self._busy = False

    async def snapshot(self, *, lag: bool = False) -> Snapshot:
        """The snapshot of the store and the clock now: of every commit made before the
        call. Raises what the store raises when it cannot be read.

        With ``lag`` (a live read's answer), the last complete snapshot instead of waiting
        for a build that rates again more than ``wait_proposals`` proposals; and while the
        last build from the changed rows was such a build (the programme changing fast),
        the last complete snapshot at once, without reading the store, the next build
        started if none runs."""
        current = self._current
        if lag and current is not None and self._busy:
            # Changing fast: the last board at once, and the next one on its way.
            if self._building is None:
                self._start()
            return current
        async with self._sessions() as session:
            version = await queries.store_version(session=session)
        while True:
            current = self._current
            if current is not None and current.fresh(version, self._clock()):
                return current
            # A build started before this request read the version may not hold what it
            # read: then, once it ends, another one.
            build = self._building or self._start()
            if lag and current is not None:
                if await asyncio.shield(build.weight) > self._wait_proposals:
                    return current
            await asyncio.shield(build.done)

    def _start(self) -> _Build:
        weight = asyncio.get_running_loop().create_future()
        build = self._building = _Build(weight, asyncio.create_task(self._build(weight)))
        # A failure reaches whoever waits for it; none may (a read answered meanwhile).
        weight.add_done_callback(_retrieved)
        build.done.add_done_callback(_retrieved)
        return build

    async def _build(self, weight: asyncio.Future[int]) -> Snapshot:
        try:
            with queries.collector_paused():
                snapshot = self._current = await self._next(weight)
            return snapshot
        except BaseException as exc:
            self._busy = False  # the next read reads the store, and says what it raises
            if not weight.done():
                if isinstance(exc, asyncio.CancelledError):
                    weight.cancel()
                else:
                    weight.set_exception(exc)
            raise
        finally:
            self._building = None

    async def _next(self, weight: asyncio.Future[int]) -> Snapshot:
        """The next snapshot, from the current one and the rows written since when they can
        tell, else from the whole store; ``weight`` is given the number of proposals it
        rates again once the store is read."""
        current = self._current
        previous: tuple[Snapshot, Touched] | None = None
        async with self._sessions() as session:
            # The version before the state: a commit between the two reads makes the
            # snapshot look older than it is (built once more), never newer.
            version = await queries.store_version(session=session)
            if current is not None and current.fresh(version, self._clock()):
                weight.set_result(0)  # started by a read that did not look (busy)
                self._busy = False
                return current
            changed = None
            if current is not None and current.version <= version:
                changed = await _changed(session, current, version)
            locks: Locks
            if changed is None:
                state = await queries.load_state(session=session)
                locks = await returns.locks(session=session, targets=returns.shown_targets(state))
            else:
                state, touched, locks = changed
                assert current is not None
                previous = (current, touched)
        now = self._clock()
        if previous is not None and previous[0].holds_at(now):
            weight.set_result(len(rated_again(self._catalogue, previous[1])))
            # Busy while the rows change many proposals from one build to the next; a
            # read in whole, or the clock moving every rating, says nothing of that.
            self._busy = weight.result() > self._wait_proposals
        else:  # read whole, or the clock moved a rating: all rated again
            weight.set_result(len(self._catalogue.proposals))
        return await asyncio.to_thread(
            build_snapshot, self._catalogue, state, locks, version, now,
            previous=previous, encoder=self._encoder, watch=self._watch, gauges=self._gauges,
        )  # fmt: skip


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark ``future``'s outcome as seen: asyncio logs an exception nobody retrieved."""
    if not future.cancelled():
        future.exception()


async def _changed(
    session: AsyncSession, current: Snapshot, version: int
) -> tuple[ProgrammeState, Touched, Locks] | None:
    """The state of ``current`` brought up to the store's ``version`` from the projection
    rows written since its own, what that touched, and the locks of what it shows; None
    when the rows cannot tell (a review or a replay committed since: read it all again).

    Rows of commits after ``version`` may be among those read: applying a row again is a
    no-op, so the next snapshot, from ``version``, is right all the same."""
    if version == current.version:  # the clock alone: the same state and locks
        return current.state, Touched(), current.locks
    milestones, observations = await queries.changed_since(session=session, version=current.version)
    # Read after the rows: a review or replay committed before them is seen here, and one
    # committed after them moves the version past ``version``, for the next snapshot.
    if await queries.store_rebuilt(session=session) > current.version:
        return None
    state, touched = changed_state(current.state, milestones, observations)
    # No review since: a target's lock is as it was; only which targets are shown moved.
    gone = returns.shown_targets(current.state, touched)
    locks = {t: lock for t, lock in current.locks.items() if t not in gone}
    shown = returns.shown_targets(state, touched)
    if shown:
        locks.update(await returns.locks(session=session, targets=shown))
    return state, touched, locks
