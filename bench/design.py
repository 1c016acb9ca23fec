"""Figure 9: the read side by design (issue 16): the live board and ``/metrics`` served from
a snapshot while ingestion runs at full speed, and status events at the instant the clock
alone changes a rating.

**The board under load.** The programme and its log are those of figure 5
(``scale_proposals`` proposals, ``scale_events`` events stored set-wise), filled afresh so
the figure runs on its own. While the requests are timed, a publisher publishes milestone
events (a random milestone of a random proposal of that programme, with a status of
in_progress, at_risk, completed or blocked, ``time`` the instant it is made, a unique
``Nats-Msg-Id``) straight to JetStream with up to 1,000 acks in flight, as fast as it can,
as figure 1 publishes: the aggregator consumes them as fast as it can (a backlog remains at
the end), every commit moves the store's version, and the next request finds the snapshot
stale and rebuilds it (the details count the distinct ``/v1/programme`` bodies seen). The
publisher is a process of its own (``python -c``: a ``multiprocessing`` child would import
``bench.__main__`` again), not a task of the bench's event loop, so its work is never
charged to the client's clock as latency; it shares the machine's two cores with the rest.

The baseline is the same aggregator process answering ``GET /bench/static``, a fixed body
of the size of ``/v1/programme``'s (``COTN_AGGREGATOR_BENCH_STATIC_BYTES``: a route mounted
only when that bench-only setting is set). The size is read once per figure, the simplest
honest way: a probe aggregator is started on the filled store before the runs and asked
one ``GET /v1/programme``, without load. The board's size under load drifts from it by a
few per cent (reasons come and go as statuses change); both sizes are in the details, with
``/metrics``' own, which differs more: it is held to the same static baseline, as issue 16
states its goal. The three routes are asked in turn, one request at a time, the order
rotating, so all three see the same machine and the same ingestion; 200 times each
(``design_requests``), as the p99 of 50 is the slowest one or two and moved by half between
runs of one commit. The events stored per
second over the measurement (the durable consumer's ack floor, which moves only after a
commit, so it moves a batch of 500 at a time) show that ingestion really ran.

**Time-driven status events.** A small programme of its own (``status_proposals``
proposals, one milestone each, due next year) whose stall thresholds are staggered, 5 s +
20 ms x i, so the stalls fall over a few seconds. One ``in_progress`` event per proposal,
``time`` = now, is published as a column service publishes it; once they are stored, each
proposal stalls just after its event's time + its threshold (``shared.health``: stalled when
the quiet time is strictly over the threshold, ``valid_until`` wakes the pass one
microsecond after it). The delay of each is the receipt (a core NATS subscription on
``cotn.status.>``) of the status event saying ``stalled: true`` with that
``last_progress``, less that instant. The aggregator runs as deployed but for its periodic
pass (every 600 s): its least gap between two passes (``status_min_gap_seconds``, 1 s)
stays, so stalls that fall within a second of one another share a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import yaml

from bench.context import Context
from bench.harness import ROOT, Pool, percentile, timer, wait_http
from bench.results import Goal, Spec
from bench.scale import _fill, _settled
from bench.workload import MILESTONE, Scale, generated_catalogue, write_catalogue
from services.aggregator.db import upgrade
from shared.bus import (
    AGGREGATOR_DURABLE,
    CONTENT_TYPE,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    STATUS_SUBJECTS,
    event_subject,
    msg_id,
)
from shared.catalogue import check_catalogue

STATIC = "/bench/static"
STATIC_ENV = "COTN_AGGREGATOR_BENCH_STATIC_BYTES"
WINDOW = 1000
"""Publishes awaiting their ack at once: a column service's ``max_in_flight``."""
WARM_UP_SECONDS = 1.0
"""Ingestion runs this long before the first request is timed."""
STALL_BASE = timedelta(seconds=5)
STALL_STEP = timedelta(milliseconds=20)
STATUS_WAIT_AFTER = 30.0
"""Seconds after the last stall instant a missing status event is waited for."""
STORED_WITHIN = 30.0

STATIC_P50 = Spec("design_static_p50", "9 GET /bench/static (same size) p50 under ingestion", "ms")
STATIC_P99 = Spec("design_static_p99", "9 GET /bench/static (same size) p99 under ingestion", "ms")
PROGRAMME_P50 = Spec(
    "design_programme_p50",
    "9 GET /v1/programme p50 at scale under ingestion",
    "ms",
    baseline="design_static_p50",
)
PROGRAMME_P99 = Spec(
    "design_programme_p99",
    "9 GET /v1/programme p99 at scale under ingestion",
    "ms",
    baseline="design_static_p99",
    goal=Goal("ratio_at_most", 2.0),
)
METRICS_P50 = Spec(
    "design_metrics_p50",
    "9 GET /metrics p50 at scale under ingestion",
    "ms",
    baseline="design_static_p50",
)
METRICS_P99 = Spec(
    "design_metrics_p99",
    "9 GET /metrics p99 at scale under ingestion",
    "ms",
    baseline="design_static_p99",
    goal=Goal("ratio_at_most", 2.0),
)
AGE_P50 = Spec("design_age_p50", "9 age of the board answered under ingestion p50", "ms")
AGE_P99 = Spec("design_age_p99", "9 age of the board answered under ingestion p99", "ms")
STORED_RATE = Spec("design_stored_rate", "9 events stored during the read measurement", "events/s")
STALL_P50 = Spec("design_stall_p50", "9 stall instant → status event p50", "ms")
STALL_P99 = Spec(
    "design_stall_p99", "9 stall instant → status event p99", "ms", goal=Goal("below", 2000.0)
)
STALL_MISSED = Spec(
    "design_stall_missed",
    "9 stalls without a status event",
    "proposals",
    goal=Goal("at_most", 0),
)


async def design(ctx: Context) -> None:
    sizes = ctx.sizes
    shape = Scale(
        proposals=sizes.scale_proposals,
        milestones_per_proposal=sizes.scale_milestones_per_proposal,
        columns=min(10, sizes.scale_proposals),
    )
    path, catalogue = write_catalogue(shape, ctx.workdir("design-catalogue"))
    async with ctx.bench.postgres() as url:
        await upgrade(url)
        setup = await _fill(url, shape, sizes.scale_events)
        async with ctx.bench.nats() as server:
            async with ctx.bench.aggregator(server.url, url, catalogue=path) as agg:
                await _settled(url, len(catalogue.proposals))
                size = await _body_size(agg.url, "/v1/programme")
        ctx.results.detail(
            "design", {"proposals": len(catalogue.proposals), "static_bytes": size, **setup}
        )
        for run in range(sizes.runs):
            async with ctx.bench.nats() as server:
                env = {STATIC_ENV: str(size)}
                async with ctx.bench.aggregator(server.url, url, catalogue=path, env=env) as agg:
                    await _settled(url, len(catalogue.proposals))
                    times, ages, info = await _reads_under_ingestion(
                        agg.url,
                        server.url,
                        shape,
                        sizes.design_requests,
                        seed=run,
                        log=ctx.workdir("design-publisher") / "publisher.log",
                    )
            for (p50, p99), values in (
                ((STATIC_P50, STATIC_P99), times[STATIC]),
                ((PROGRAMME_P50, PROGRAMME_P99), times["/v1/programme"]),
                ((METRICS_P50, METRICS_P99), times["/metrics"]),
            ):
                ctx.results.add(p50, percentile(values, 0.5) * 1000)
                ctx.results.add(p99, percentile(values, 0.99) * 1000)
            ctx.results.add(AGE_P50, percentile(ages, 0.5) * 1000)
            ctx.results.add(AGE_P99, percentile(ages, 0.99) * 1000)
            ctx.results.add(STORED_RATE, info["stored_per_second"])
            ctx.results.detail("design_reads", info)
            await _time_driven(ctx, run)


# --- the board under ingestion ---------------------------------------------------------------


async def _body_size(url: str, path: str) -> int:
    pool = Pool(url)
    try:
        status, body = await pool.request("GET", path)
    finally:
        await pool.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return len(body)


async def _reads_under_ingestion(
    aggregator_url: str, nats_url: str, shape: Scale, count: int, *, seed: int, log: Path
) -> tuple[dict[str, list[float]], list[float], dict[str, Any]]:
    """The three routes in turn (two rounds to warm up first) while the publisher runs; the
    seconds each one took, and the age of each board answered: from its ``generated_at``
    (the aggregator's clock when it was rated) to its receipt (the machine's one clock)."""
    await wait_http(aggregator_url, STATIC)
    paths = [STATIC, "/v1/programme", "/metrics"]
    times: dict[str, list[float]] = {p: [] for p in paths}
    sizes: dict[str, int] = {}
    boards: set[bytes] = set()
    ages: list[float] = []
    pools = {p: Pool(aggregator_url) for p in paths}
    try:
        with _publisher(nats_url, shape, seed, log):
            await _started(nats_url, log)
            await asyncio.sleep(WARM_UP_SECONDS)
            floor, sent = await _ack_floor(nats_url), await _stream_last(nats_url)
            at = time.perf_counter()
            gc.collect()
            gc.disable()  # the bench's own collections are not the server's latency
            try:
                for i in range(count + 2):
                    for k in range(len(paths)):
                        path = paths[(i + k) % len(paths)]
                        with timer() as took:
                            status, body = await pools[path].request("GET", path)
                        if status != 200:
                            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
                        if i >= 2:
                            times[path].append(took())
                        sizes[path] = len(body)
                        if path == "/v1/programme":  # each rebuilt snapshot is a new body
                            boards.add(hashlib.blake2b(body, digest_size=16).digest())
                            if i >= 2:
                                ages.append(_age(body, datetime.now(UTC)))
            finally:
                gc.enable()
            seconds = time.perf_counter() - at
            stored = await _ack_floor(nats_url) - floor
            sent = await _stream_last(nats_url) - sent
            backlog = await _backlog(nats_url)
    finally:
        for pool in pools.values():
            await pool.close()
    if stored <= 0:
        raise RuntimeError("the aggregator stored nothing while the board was read")
    return (
        times,
        ages,
        {
            "seconds": round(seconds, 2),
            "stored": stored,
            "stored_per_second": stored / seconds,
            "published_per_second": sent / seconds,
            "backlog_at_end": backlog,
            "body_bytes": sizes,
            "distinct_programme_bodies": len(boards),
            "programme_requests": count + 2,
        },
    )


GENERATED_AT = re.compile(rb'"generated_at":"([^"]+)"')


def _age(board: bytes, received: datetime) -> float:
    """Seconds from the board's ``generated_at`` (near its start) to ``received``."""
    found = GENERATED_AT.search(board, 0, 1000)
    if found is None:
        raise RuntimeError(f"no generated_at in the board's head: {board[:200]!r}")
    return (received - datetime.fromisoformat(found[1].decode())).total_seconds()


async def _consumer(nats_url: str) -> Any:
    connection = await nats.connect(nats_url)
    try:
        return await connection.jetstream().consumer_info(EVENTS_STREAM, AGGREGATOR_DURABLE)
    finally:
        await connection.close()


async def _ack_floor(nats_url: str) -> int:
    """The stream sequence up to which the aggregator has stored and acknowledged all."""
    info = await _consumer(nats_url)
    return int(info.ack_floor.stream_seq) if info.ack_floor else 0


async def _stream_last(nats_url: str) -> int:
    """The events stream's last sequence: the events JetStream has acknowledged."""
    connection = await nats.connect(nats_url)
    try:
        info = await connection.jetstream().stream_info(EVENTS_STREAM)
    finally:
        await connection.close()
    return int(info.state.last_seq)


async def _backlog(nats_url: str) -> int:
    return int((await _consumer(nats_url)).num_pending or 0)


@contextlib.contextmanager
def _publisher(nats_url: str, shape: Scale, seed: int, log: Path) -> Iterator[None]:
    """A child process publishing milestone events until the block ends.

    A process started with ``-c``, not ``multiprocessing``: its spawn would import
    ``bench.__main__`` again, which runs the bench."""
    argv = [sys.executable, "-c", "import sys; from bench.design import main; main(sys.argv[1:])"]
    argv += [nats_url, json.dumps(asdict(shape)), str(seed)]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the publisher exited with {process.returncode}: {log.read_text()}")


async def _started(nats_url: str, log: Path) -> None:
    """Wait until the publisher's first events are in the stream."""
    deadline = time.monotonic() + 60
    while await _stream_last(nats_url) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the publisher published nothing in 60 s: see {log}")
        await asyncio.sleep(0.05)


def main(argv: list[str]) -> None:
    """The publisher process: ``NATS_URL SHAPE_JSON SEED``; it ends on SIGTERM."""
    nats_url, shape, seed = argv
    asyncio.run(_publish_until(nats_url, Scale(**json.loads(shape)), int(seed)))


async def _publish_until(nats_url: str, shape: Scale, seed: int) -> None:
    """Publish as fast as JetStream takes them, ``WINDOW`` acks in flight, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    statuses = ("in_progress", "at_risk", "completed", "blocked")
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream(timeout=30, publish_async_max_pending=WINDOW)
        n = 0
        while not stop.is_set():
            for _ in range(100):
                i = rng.randrange(shape.proposals)
                proposal = f"p{i + 1:04d}"
                source = f"a{i % shape.authorities + 1:02d}"  # the proposal's first partner
                event_id = f"design-{tag}-{n}"
                event = {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": source,
                    "type": MILESTONE,
                    "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "data": {
                        "proposal": proposal,
                        "milestone": f"m{rng.randrange(shape.milestones_per_proposal) + 1:02d}",
                        "status": rng.choice(statuses),
                    },
                }
                await js.publish_async(
                    event_subject(f"c{shape.column_index(i) + 1:02d}", proposal, "milestone"),
                    json.dumps(event).encode(),
                    stream=EVENTS_STREAM,
                    headers={MSG_ID_HEADER: msg_id(source, event_id), "content-type": CONTENT_TYPE},
                    wait_stall=30,
                )
                n += 1
            await asyncio.sleep(0)  # let the signal handler in when no ack was awaited
        await js.publish_async_completed()
    finally:
        await connection.close()


# --- time-driven status events -----------------------------------------------------------


def _stall_threshold(i: int) -> timedelta:
    return STALL_BASE + i * STALL_STEP


def _stall_catalogue(proposals: int, directory: Path) -> Path:
    """A small programme: one milestone per proposal, due next year, staggered thresholds."""
    shape = Scale(
        columns=min(10, proposals),
        proposals=proposals,
        milestones_per_proposal=1,
        authorities=min(20, proposals),
        kpis=min(4, proposals),
    )
    document = generated_catalogue(shape)
    due = date.today() + timedelta(days=365)
    for i, proposal in enumerate(document["proposals"]):
        proposal["stall_threshold"] = f"{_stall_threshold(i).total_seconds():.3f}s"
        for milestone in proposal["milestones"]:
            milestone["due"] = due
    path = directory / "catalogue.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    catalogue, problems = check_catalogue(path)
    if catalogue is None:
        raise ValueError(f"the stall catalogue is invalid: {problems[:3]}")
    return path


async def _time_driven(ctx: Context, run: int) -> None:
    count = ctx.sizes.status_proposals
    path = _stall_catalogue(count, ctx.workdir("design-stalls"))
    # The periodic pass every 600 s: only the wake at valid_until can explain a short delay.
    env = {"COTN_AGGREGATOR_STATUS_INTERVAL_SECONDS": "600"}
    async with ctx.bench.nats() as server, ctx.bench.postgres() as url:
        async with ctx.bench.aggregator(server.url, url, catalogue=path, env=env):
            await _settled(url, count)  # the first pass: every proposal stalled since the start
            delays, info = await _stalls(server.url, url, count)
    ctx.results.add(STALL_P50, percentile(delays, 0.5) * 1000)
    ctx.results.add(STALL_P99, percentile(delays, 0.99) * 1000)
    ctx.results.add(STALL_MISSED, count - len(delays))
    ctx.results.detail("design_stalls", {"run": run, **info})


async def _stalls(nats_url: str, database_url: str, count: int) -> tuple[list[float], dict]:
    """Publish one event per proposal; the seconds from each stall instant to its event."""
    received: list[tuple[datetime, dict[str, Any]]] = []
    connection = await nats.connect(nats_url)
    try:

        async def on_status(msg: Any) -> None:
            received.append((datetime.now(UTC), json.loads(msg.data)))

        await connection.subscribe(STATUS_SUBJECTS, cb=on_status)
        await connection.flush()
        js = connection.jetstream(timeout=30, publish_async_max_pending=WINDOW)
        tag = uuid.uuid4().hex[:8]
        instants: dict[str, datetime] = {}
        progress: dict[str, datetime] = {}
        futures = []
        for i in range(count):
            proposal = f"p{i + 1:04d}"
            source = f"a{i % min(20, count) + 1:02d}"
            when = datetime.now(UTC)
            event_id = f"stall-{tag}-{i}"
            event = {
                "specversion": "1.0",
                "id": event_id,
                "source": source,
                "type": MILESTONE,
                "time": when.isoformat().replace("+00:00", "Z"),
                "data": {"proposal": proposal, "milestone": "m01", "status": "in_progress"},
            }
            column = f"c{i * min(10, count) // count + 1:02d}"
            futures.append(
                await js.publish_async(
                    event_subject(column, proposal, "milestone"),
                    json.dumps(event).encode(),
                    stream=EVENTS_STREAM,
                    headers={MSG_ID_HEADER: msg_id(source, event_id), "content-type": CONTENT_TYPE},
                )
            )
            progress[proposal] = when
            instants[proposal] = when + _stall_threshold(i)
        await asyncio.gather(*futures)
        published_at = datetime.now(UTC)
        stored_after = await _stored(database_url, count, published_at)
        first = min(instants.values())
        deadline = max(instants.values()) + timedelta(seconds=STATUS_WAIT_AFTER)
        stalled: dict[str, tuple[datetime, datetime]] = {}
        while len(stalled) < count and datetime.now(UTC) < deadline:
            await asyncio.sleep(0.1)
            for at, event in received:
                data = event["data"]
                pid = data["proposal"]
                if data["stalled"] and pid in progress and pid not in stalled:
                    if _instant(data["last_progress"]) == progress[pid]:
                        stalled[pid] = (at, _instant(event["time"]))
    finally:
        await connection.close()
    delays = [(at - instants[pid]).total_seconds() for pid, (at, _) in stalled.items()]
    # A status event's ``time`` is the instant its pass rated the programme (the pass then
    # publishes its changes one transaction at a time): the wake's own lateness.
    rated = [(when - instants[pid]).total_seconds() for pid, (_, when) in stalled.items()]
    return delays, {
        "proposals": count,
        "received": len(stalled),
        "before_their_instant": sum(1 for d in delays if d < 0),  # 0 unless the rule moved
        "stored_seconds_after_publishing": round(stored_after, 3),
        "first_stall_seconds_after_publishing": round((first - published_at).total_seconds(), 3),
        "rated_delay_p50_ms": percentile(rated, 0.5) * 1000,
        "rated_delay_p99_ms": percentile(rated, 0.99) * 1000,
        "max_delay_ms": max(delays, default=float("nan")) * 1000,
    }


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _stored(database_url: str, count: int, since: datetime) -> float:
    """Wait until ``count`` events are stored; the seconds that took from ``since``."""
    connection = await asyncpg.connect(database_url)
    deadline = time.monotonic() + STORED_WITHIN
    try:
        while await connection.fetchval("SELECT count(*) FROM event") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} events not stored within {STORED_WITHIN}s")
            await asyncio.sleep(0.01)
        return (datetime.now(UTC) - since).total_seconds()
    finally:
        await connection.close()
