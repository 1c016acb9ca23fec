"""An approval races late events for the return it locks, and the aggregator is killed and
restarted in the middle.

Clients post corrections of one KPI return (and, as a control, returns of another period)
through a real column service, as fast as it answers, while the office approves the return
through the aggregator's ``POST /v1/reviews``. Every event is either acknowledged (202) or
refused by the lock (409); none is lost, none is stored twice, and none that came after the
approval in the stream changes the locked period: those the column service accepted before
the lock reached it are kept aside. The control period takes every event. Whether any falls
in that window is up to the race (on this machine the lock usually wins within
milliseconds); the keeping aside itself is proved step by step in
``tests/aggregator/test_office.py``.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from services.aggregator.db import make_engine
from services.aggregator.storage.log import EVENT
from shared.kinds.kpi import KPI_OBSERVATION
from shared.natsserver import NatsServer
from shared.reviews import kpi_target
from shared.tokens import TokenStore
from tests.aggregator.harness import eventually, kpi

from .checks import exactly_once, stored_count
from .procs import Services

pytestmark = pytest.mark.fault

REPORTER = "northern-gritstone"
KPI = "early-stage-finance"  # collaboration column: the column service the test starts
LOCKED, OPEN = "2025-Q3", "2025-Q4"
CLIENTS = 4
T = datetime(2026, 1, 1, tzinfo=UTC)
"""The events' times begin here: after both periods have begun."""


class Posters:
    """Clients posting single events until stopped; what each answer was."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.acked: set[tuple[str, str]] = set()
        self.refused: set[str] = set()
        self.other: list[str] = []
        self.counter = itertools.count()
        self.stopping = asyncio.Event()

    async def client(self, n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stopping.is_set():
                i = next(self.counter)
                period = LOCKED if i % 3 else OPEN
                # Later event times, so an applied correction would change the projection.
                body = kpi(f"late-{n}-{i}", KPI, 200.0 + i, period, T + timedelta(seconds=i))
                body["source"] = REPORTER
                answer = await self.post(http, body)
                if answer.status_code == 202:
                    self.acked.add((REPORTER, body["id"]))
                elif answer.status_code == 409 and answer.json()["type"].endswith(":locked"):
                    assert period == LOCKED, answer.text
                    self.refused.add(body["id"])
                else:
                    self.other.append(f"{answer.status_code} {answer.text}")

    async def post(self, http: httpx.AsyncClient, body: dict[str, object]) -> httpx.Response:
        """Post until answered other than 503, with the same id: it may have landed."""
        while True:
            answer = await http.post(
                self.url + "/v1/events",
                json=body,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/cloudevents+json",
                },
            )
            if answer.status_code != 503:
                return answer
            await asyncio.sleep(0.05)

    async def until(self, acked: int) -> None:
        await eventually(lambda: _at_least(self, acked), f"{acked} events acknowledged")


async def _at_least(posters: Posters, acked: int) -> bool:
    return len(posters.acked) >= acked


async def test_an_approval_racing_late_events_and_a_restart_loses_none_and_locks_the_period(
    fresh_nats: NatsServer, services: Services, pg_url: str
) -> None:
    office = TokenStore.in_dir(services.data_dir).create_office("race")[0]
    ingest = await services.ingest(fresh_nats.url)
    aggregator = await services.aggregator(fresh_nats.url, pg_url, data_dir=services.data_dir)
    posters = Posters(ingest.url, services.tokens[REPORTER])
    tasks = [asyncio.ensure_future(posters.client(n)) for n in range(CLIENTS)]
    try:
        await posters.until(60)
        await eventually(lambda: _stored_at_least(pg_url, 20), "the first returns stored")
        async with httpx.AsyncClient(timeout=30) as http:
            approved = await http.post(
                aggregator.url + "/v1/reviews",
                json={"action": "approve", "kpi": KPI, "period": LOCKED, "reporter": REPORTER},
                headers={"Authorization": f"Bearer {office}"},
            )
        assert approved.status_code == 201, approved.text
        await eventually(lambda: _refused(posters), "the lock to reach the column service")
        aggregator.kill()  # in the middle of the load: the restart must change nothing
        await posters.until(len(posters.acked) + 60)
        restarted = await services.aggregator(
            fresh_nats.url, pg_url, name="restarted", data_dir=services.data_dir
        )
        await posters.until(len(posters.acked) + 60)
    finally:
        posters.stopping.set()
        await asyncio.gather(*tasks)
    assert posters.other == [], posters.other[:3]
    assert posters.refused, "the lock refused nothing: the race was not run"

    # Every acknowledged event stored once; the approval is an event too.
    review = ("office/race", approved.json()["review"]["event"]["id"])
    await exactly_once({*posters.acked, review}, pg_url, nats_url=fresh_nats.url)
    target = kpi_target(KPI, LOCKED, REPORTER)
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(EVENT.c.event_id, EVENT.c.stream_seq, EVENT.c.held, EVENT.c.target)
                    .where(EVENT.c.kpi == KPI)
                    .order_by(EVENT.c.stream_seq)
                )
            ).all()
            held_by = (
                await connection.execute(
                    sa.select(EVENT.c.stream_seq).where(
                        EVENT.c.source == review[0], EVENT.c.event_id == review[1]
                    )
                )
            ).scalar_one()
            observed = (
                await connection.execute(
                    sa.select(KPI_OBSERVATION.c.period, KPI_OBSERVATION.c.event_id).where(
                        KPI_OBSERVATION.c.kpi == KPI
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    locked = [r for r in rows if r.target == target]
    before = [r for r in locked if r.stream_seq < held_by]
    after = [r for r in locked if r.stream_seq > held_by]
    # None refused was stored; every one after the approval in the stream is kept aside.
    assert not {r.event_id for r in rows} & posters.refused
    assert before and all(r.held is None for r in before)
    assert all(r.held == held_by for r in after), [r for r in after if r.held != held_by][:3]
    # The locked period shows the newest event before the approval; the open one takes all.
    newest_before = max(before, key=lambda r: int(r.event_id.rsplit("-", 1)[1]))
    shown = dict(observed)
    assert shown[LOCKED] == newest_before.event_id
    open_ids = [r.event_id for r in rows if r.target != target]
    assert shown[OPEN] == max(open_ids, key=lambda e: int(e.rsplit("-", 1)[1]))
    assert all(r.held is None for r in rows if r.target != target)
    assert await restarted.metric("cotn_events_kept_aside", column="collaboration") == len(after)


async def _stored_at_least(url: str, n: int) -> bool:
    return await stored_count(url) >= n


async def _refused(posters: Posters) -> bool:
    return bool(posters.refused)
