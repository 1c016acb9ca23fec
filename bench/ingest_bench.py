"""Throughput of a column service next to raw JetStream publishing, on one nats-server.

Starts a nats-server (``sync_interval: always``, as the project runs it) and the
collaboration service (uvicorn in a process of its own, as ``cotn serve ingest`` runs it),
posts batches of 500 events from a few concurrent clients for a while, then publishes the
same messages straight to JetStream with nats-py, each client keeping a batch of 500 acks in
flight, and prints both rates and their ratio.

    .venv/bin/python bench/ingest_bench.py [--seconds 10] [--clients 4] [--no-sync]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats

from shared.bus import CONTENT_TYPE, EVENTS_STREAM, MSG_ID_HEADER
from shared.natsserver import NatsServer, free_port
from shared.tokens import TokenStore

BATCH = 500
SOURCE = "greater-manchester"
SUBJECT = "cotn.events.collaboration.2a.milestone"
READY_WITHIN = 20.0


class UnsyncedNatsServer(NatsServer):
    """JetStream with its default flush (every 2 min): shows the CPU ceiling, not the disk's."""

    def config_text(self) -> str:
        return super().config_text().replace("  sync_interval: always\n", "")


@dataclass
class Tally:
    events: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def event(event_id: str, when: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": "org.cotn.milestone.v1",
        "time": when,
        "data": {"proposal": "2a", "milestone": "adoption-priorities", "status": "in_progress"},
    }


def batch_body() -> bytes:
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    prefix = uuid.uuid4().hex
    return json.dumps([event(f"{prefix}-{i}", when) for i in range(BATCH)]).encode()


def start_service(nats_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "COTN_INGEST_COLUMN": "collaboration",
        "COTN_INGEST_NATS_URL": nats_url,
        "COTN_INGEST_DATA_DIR": str(data_dir),
    }
    argv = [
        *(sys.executable, "-m", "uvicorn", "services.ingest.app:app_from_env", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    with open(data_dir / "service.log", "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the service did not get ready")


async def post_for(client: httpx.AsyncClient, token: str, seconds: float, tally: Tally) -> None:
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/cloudevents-batch+json",
    }
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = batch_body()
        started = time.perf_counter()
        response = await client.post("/v1/events", content=body, headers=headers)
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        tally.latencies.append(time.perf_counter() - started)
        tally.events += len(response.json()["accepted"])


async def bench_service(url: str, token: str, seconds: float, clients: int) -> tuple[float, Tally]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await wait_ready(client)
        await post_for(client, token, 1.0, Tally())  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(post_for(client, token, seconds, tally) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return tally.events / elapsed, tally


async def publish_for(js: nats.js.JetStreamContext, seconds: float, tally: Tally) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        prefix = uuid.uuid4().hex
        started = time.perf_counter()
        acks = await asyncio.gather(
            *(
                js.publish(
                    SUBJECT,
                    json.dumps(event(f"{prefix}-{i}", when)).encode(),
                    stream=EVENTS_STREAM,
                    headers={MSG_ID_HEADER: f"{SOURCE}:{prefix}-{i}", "content-type": CONTENT_TYPE},
                )
                for i in range(BATCH)
            )
        )
        tally.latencies.append(time.perf_counter() - started)
        tally.events += sum(1 for ack in acks if not ack.duplicate)


async def bench_raw(nats_url: str, seconds: float, clients: int) -> tuple[float, Tally]:
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        tally = Tally()
        started = time.perf_counter()
        await asyncio.gather(*(publish_for(js, seconds, tally) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return tally.events / elapsed, tally


def report(name: str, rate: float, tally: Tally) -> None:
    print(
        f"{name:<28} {rate:>9,.0f} events/s   batch of {BATCH}: "
        f"p50 {tally.percentile(0.5) * 1000:6.1f} ms, p95 {tally.percentile(0.95) * 1000:6.1f} ms"
    )


async def main(seconds: float, clients: int, sync: bool) -> None:
    server_class = NatsServer if sync else UnsyncedNatsServer
    with tempfile.TemporaryDirectory(prefix="cotn-bench-") as tmp:
        data_dir = Path(tmp)
        server = server_class(store_dir=data_dir / "nats").start()
        token = TokenStore.in_dir(data_dir).create(SOURCE)[0]
        port = free_port()
        service = start_service(server.url, data_dir, port)
        try:
            service_rate, service_tally = await bench_service(
                f"http://127.0.0.1:{port}", token, seconds, clients
            )
        finally:
            service.terminate()
            service.wait(15)
        raw_rate, raw_tally = await bench_raw(server.url, seconds, clients)
        server.stop()
    sync_text = "always" if sync else "default (2 min)"
    print(f"{clients} clients, {seconds:g} s, sync_interval {sync_text}, {os.cpu_count()} CPUs")
    report("column service (HTTP)", service_rate, service_tally)
    report("raw JetStream (nats-py)", raw_rate, raw_tally)
    print(f"{'service / raw':<28} {service_rate / raw_rate:>9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--no-sync", action="store_true", help="JetStream's default flush instead of fsync per ack"
    )
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients, sync=not args.no_sync))
