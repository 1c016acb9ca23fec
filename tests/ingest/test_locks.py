"""Locks at the door: an approved KPI return or a verified completion is refused (409, naming
the lock) until the office reopens it, from the column service's watch of the locks bucket.

The locks are put and deleted in the session's real bucket, as the aggregator would; each
test removes its own, and uses periods and milestones no other test posts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services.ingest.locks import LOCKED, LockWatcher, apply_update, lock_problem
from shared.bus import (
    StreamSettings,
    claims_bucket_config,
    events_stream_config,
    locks_bucket_config,
)
from shared.natsserver import NatsServer
from shared.reviews import LOCKS_BUCKET, Lock, kpi_target, milestone_target

from .support import (
    CE_BATCH,
    Ingest,
    StreamProbe,
    is_ready,
    kpi,
    milestone,
    running,
    settings_for,
    wait_for,
)

REPORTER = "northern-gritstone"
LOCKED_PERIOD, OPEN_PERIOD = "2019-Q2", "2019-Q3"
KPI_TARGET = kpi_target("early-stage-finance", LOCKED_PERIOD, REPORTER)
MILESTONE_TARGET = milestone_target("2a", "productivity-review")
APPROVAL = Lock(KPI_TARGET, "approve", "office/jane", "2026-07-10T09:00:00Z", "review-1")
VERIFICATION = Lock(MILESTONE_TARGET, "verify", "office/omar", "2026-07-11T10:30:00Z", "review-2")


class Locks:
    """The locks bucket as the aggregator writes it; what a test locks is lifted after it."""

    def __init__(self, bucket: KeyValue) -> None:
        self.bucket = bucket
        self.put_keys: set[str] = set()

    async def lock(self, lock: Lock) -> None:
        self.put_keys.add(lock.target)
        await self.bucket.put(lock.target, lock.encode())

    async def reopen(self, target: str) -> None:
        await self.bucket.delete(target)

    async def lift_all(self) -> None:
        for key in self.put_keys:
            try:
                await self.bucket.delete(key)
            except KeyNotFoundError:
                pass


@pytest.fixture
async def locks(nats_server: NatsServer, service: Ingest) -> AsyncIterator[Locks]:
    """The session's locks bucket, once the service has made it."""
    connection = await nats.connect(nats_server.url)
    held = Locks(await connection.jetstream().key_value(LOCKS_BUCKET))
    try:
        yield held
    finally:
        await held.lift_all()
        await connection.close()


def watcher_of(service: Ingest) -> LockWatcher:
    watcher: LockWatcher = service.app.state.ingest.bus.locks
    return watcher


async def until_watched(service: Ingest, target: str, present: bool = True) -> None:
    async def seen() -> bool:
        return (watcher_of(service).lock_of(target) is not None) == present

    await wait_for(seen, within=5)


def assert_locked(response: httpx.Response, field: str, lock: Lock, index: int = 0) -> Any:
    """A 409 ``locked`` problem whose error at ``index`` names ``lock``; its body."""
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:cotn:problem:{LOCKED}"
    assert body["title"] == "Return locked by the programme office"
    [error] = [e for e in body["errors"] if e["index"] == index]
    assert error["field"] == field and error["code"] == LOCKED
    assert lock.by in error["reason"] and lock.at in error["reason"]
    assert "reopen" in error["reason"]
    return body


# -- the pure parts ----------------------------------------------------------------------------


def test_a_put_locks_and_a_delete_or_purge_lifts() -> None:
    locks: dict[str, Lock] = {}
    apply_update(locks, KPI_TARGET, None, APPROVAL.encode())
    apply_update(locks, MILESTONE_TARGET, None, VERIFICATION.encode())
    assert locks == {KPI_TARGET: APPROVAL, MILESTONE_TARGET: VERIFICATION}
    apply_update(locks, KPI_TARGET, KV_DEL, b"")
    apply_update(locks, MILESTONE_TARGET, KV_PURGE, b"")
    apply_update(locks, "kpi.never.locked.x", KV_DEL, b"")
    assert locks == {}


def test_a_value_that_is_no_lock_lifts_the_key() -> None:
    locks = {KPI_TARGET: APPROVAL}
    apply_update(locks, KPI_TARGET, None, b"not json")
    assert locks == {}


def test_the_problem_names_the_field_the_lock_holds() -> None:
    kpi_problem, milestone_problem = lock_problem(APPROVAL), lock_problem(VERIFICATION)
    assert (kpi_problem.field, kpi_problem.status, kpi_problem.code) == ("data.period", 409, LOCKED)
    assert milestone_problem.field == "data.milestone"
    assert APPROVAL.describe() in kpi_problem.reason and "review-1" in kpi_problem.reason


def test_a_watcher_is_not_ready_before_its_initial_values() -> None:
    watcher = LockWatcher(timeout=1, retry_wait=0.1)
    assert not watcher.loaded
    assert "locks not loaded" in (watcher.unready_reason() or "")
    assert watcher.lock_of(KPI_TARGET) is None


# -- at the door ------------------------------------------------------------------------------


async def test_an_approved_kpi_return_is_refused_until_reopened(
    service: Ingest, stream: StreamProbe, locks: Locks
) -> None:
    await locks.lock(APPROVAL)
    await until_watched(service, KPI_TARGET)

    late = kpi(period=LOCKED_PERIOD, source=REPORTER)
    other = kpi(period=OPEN_PERIOD, source=REPORTER)
    token = service.app.state.ingest.tokens.create(REPORTER)[0]

    body = assert_locked(await service.post(late, token=token), "data.period", APPROVAL)
    assert APPROVAL.describe() in body["detail"] and "nothing was published" in body["detail"]

    # All or none: the open period's event in the same batch is not published either.
    batch = await service.post([other, late], token=token, content_type=CE_BATCH)
    assert [e["index"] for e in assert_locked(batch, "data.period", APPROVAL, 1)["errors"]] == [1]
    assert await stream.landed([late["id"], other["id"]], source=REPORTER) == []

    assert (await service.post(other, token=token)).status_code == 202

    await locks.reopen(KPI_TARGET)
    await until_watched(service, KPI_TARGET, present=False)
    assert (await service.post(late, token=token)).status_code == 202
    assert len(await stream.landed([late["id"], other["id"]], source=REPORTER)) == 2


async def test_a_resend_of_an_event_accepted_before_the_lock_is_a_duplicate(
    service: Ingest, stream: StreamProbe, locks: Locks
) -> None:
    token = service.app.state.ingest.tokens.create(REPORTER)[0]
    before = kpi(period=LOCKED_PERIOD, source=REPORTER)
    assert (await service.post(before, token=token)).status_code == 202
    await locks.lock(APPROVAL)
    await until_watched(service, KPI_TARGET)

    # The same event again: a retry, answered as such (stored once), not refused.
    again = await service.post([before], token=token, content_type=CE_BATCH)
    assert again.status_code == 202, again.text
    assert again.json() == {"accepted": [], "duplicates": [before["id"]]}
    # A correction under a new id, or changed content under the old one, is refused.
    corrected = kpi(period=LOCKED_PERIOD, source=REPORTER, value=181.0)
    assert_locked(await service.post(corrected, token=token), "data.period", APPROVAL)
    changed = {**before, "data": {**before["data"], "value": 182.0}}
    assert_locked(await service.post(changed, token=token), "data.period", APPROVAL)
    assert await stream.landed([corrected["id"]], source=REPORTER) == []


async def test_a_verified_completion_is_refused(
    service: Ingest, stream: StreamProbe, locks: Locks
) -> None:
    await locks.lock(VERIFICATION)
    await until_watched(service, MILESTONE_TARGET)
    event = milestone(milestone="productivity-review", status="completed")

    assert_locked(await service.post(event), "data.milestone", VERIFICATION)
    assert await stream.landed([event["id"]]) == []
    assert service.metric("cotn_ingest_rejections_total", reason=LOCKED) == 1


async def test_a_service_started_after_the_lock_sees_it_once_ready(
    nats_server: NatsServer, service: Ingest, locks: Locks, tmp_path: Path
) -> None:
    await locks.lock(VERIFICATION)
    later = settings_for(nats_server.url, tmp_path)  # the same token file
    async with running(later, service.token) as started:
        # Ready means the initial values are in: no waiting for the lock.
        assert watcher_of(started).lock_of(MILESTONE_TARGET) == VERIFICATION
        event = milestone(milestone="productivity-review", status="completed")
        assert_locked(await started.post(event), "data.milestone", VERIFICATION)


async def test_readiness_waits_for_the_locks(fresh_nats: NatsServer, tmp_path: Path) -> None:
    # Streams made by an administrator who has not made the locks bucket yet.
    settings = settings_for(fresh_nats.url, tmp_path, manage_streams=False)
    connection = await nats.connect(fresh_nats.url)
    try:
        js = connection.jetstream()
        for config in (
            events_stream_config(StreamSettings()),
            claims_bucket_config(StreamSettings()),
        ):
            await js.add_stream(config)
        async with running(settings, "unused", wait_ready=False) as service:

            async def waits_for_locks() -> bool:
                answer = await service.client.get("/readyz")
                return answer.status_code == 503 and "locks" in answer.json()["reason"]

            await wait_for(waits_for_locks)  # connected, the streams answer: only the locks

            await js.add_stream(locks_bucket_config(StreamSettings()))
            await wait_for(lambda: is_ready(service.client))
            assert watcher_of(service).loaded
    finally:
        await connection.close()


@pytest.mark.fault
async def test_the_watch_survives_a_restart_of_nats(
    fresh_nats: NatsServer, tmp_path: Path, token: str
) -> None:
    async with running(settings_for(fresh_nats.url, tmp_path), token) as service:
        connection = await nats.connect(fresh_nats.url)
        bucket = await connection.jetstream().key_value(LOCKS_BUCKET)
        await bucket.put(KPI_TARGET, APPROVAL.encode())
        await until_watched(service, KPI_TARGET)
        await connection.close()

        fresh_nats.stop()
        fresh_nats.start()  # same store directory, same port: the lock is still there
        await wait_for(lambda: is_ready(service.client))

        connection = await nats.connect(fresh_nats.url)
        try:
            bucket = await connection.jetstream().key_value(LOCKS_BUCKET)
            await bucket.delete(KPI_TARGET)  # a reopen after the restart reaches the service
            await until_watched(service, KPI_TARGET, present=False)
            await bucket.put(MILESTONE_TARGET, VERIFICATION.encode())
            await until_watched(service, MILESTONE_TARGET)
        finally:
            await connection.close()
