"""What every figure needs: servers on free loopback ports, databases of its own, the services
as child processes, a lean HTTP/1.1 client, percentiles, and the machine it ran on.

Nothing here measures anything by itself. Everything started is stopped by the
:class:`Bench` exit stack, including on Ctrl-C, so a run never leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.natsserver import NatsServer, free_port, nats_server_binary
from shared.tokens import TokenStore

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ENV = "COTN_BENCH_PG"
READY_WITHIN = 60.0
ROOT = Path(__file__).resolve().parent.parent

# The benchmark measures throughput, not the per-token limit (issue 6): lift it, keep its cost.
UNLIMITED_INGEST = {
    "COTN_INGEST_RATE_LIMIT_PER_SECOND": "1000000000",
    "COTN_INGEST_RATE_LIMIT_BURST": "1000000000",
}


# --- numbers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


# --- the machine -------------------------------------------------------------------------


def _meminfo_total_mib() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "memory_mib": _meminfo_total_mib(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "load_average": list(os.getloadavg()),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(pg_version: str | None) -> dict[str, Any]:
    nats = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "nats_server": nats.removeprefix("nats-server: "),
        "postgresql": pg_version,
        "sqlite": sqlite3.sqlite_version,
        **{
            name: _version(package)
            for name, package in (
                ("faststream", "faststream"),
                ("sqlalchemy", "SQLAlchemy"),
                ("sqlmodel", "sqlmodel"),
                ("nats_py", "nats-py"),
                ("asyncpg", "asyncpg"),
                ("aiosqlite", "aiosqlite"),
                ("fastapi", "fastapi"),
                ("uvicorn", "uvicorn"),
                ("pydantic", "pydantic"),
            )
        },
    }


def vm_kib(pid: int, field_name: str) -> int | None:
    """A ``Vm*`` line of /proc/<pid>/status in KiB (VmRSS now, VmHWM its peak)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    return None


# --- child processes ---------------------------------------------------------------------


@dataclass
class Service:
    """A ``cotn serve ...`` child process listening on ``port``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mib(self) -> float | None:
        kib = vm_kib(self.pid, "VmHWM")
        return kib / 1024 if kib is not None else None

    def rss_mib(self) -> float | None:
        kib = vm_kib(self.pid, "VmRSS")
        return kib / 1024 if kib is not None else None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: Mapping[str, str],
    port: int,
    stop_signal: int = signal.SIGTERM,
) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the bench, which stops it in order
        )
    return Service(name, process, port, log, stop_signal)


def cotn_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


# --- a lean HTTP/1.1 client ----------------------------------------------------------------


class HttpError(RuntimeError):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; a request at a time (cheaper than httpx per call)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._writer is None:
            await self._open()
        assert self._reader is not None and self._writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"content-length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        fields = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if fields.get("transfer-encoding") == "chunked":
            payload = await self._read_chunked()
        else:
            payload = await self._reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection") == "close":
            await self.close()
        return status, payload

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None


KEEP_IDLE_SECONDS = 4.0
"""How long a pooled connection may stay idle: below uvicorn's keep-alive timeout (5 s),
which closes it from the server's side, so a request never goes to a closing connection."""


class Pool:
    """Connections to one server, opened as needed: an open-loop client never waits for one."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self._idle: list[tuple[float, Connection]] = []
        self._all: list[Connection] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        connection = None
        while self._idle and connection is None:
            idle_since, connection = self._idle.pop()
            if time.monotonic() - idle_since > KEEP_IDLE_SECONDS:
                await connection.close()
                connection = None
        if connection is None:
            connection = Connection(self.host, self.port)
            self._all.append(connection)
        try:
            result = await connection.request(method, path, body, headers)
        except BaseException:
            await connection.close()
            raise
        self._idle.append((time.monotonic(), connection))
        return result

    async def close(self) -> None:
        for connection in self._all:
            await connection.close()
        self._all.clear()
        self._idle.clear()


async def wait_http(url: str, path: str, *, service: Service | None = None) -> None:
    """Wait until ``path`` answers 200 (the service's readiness)."""
    pool = Pool(url)
    deadline = time.monotonic() + READY_WITHIN
    try:
        while True:
            if service is not None:
                service.check_alive()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
                status, _ = await pool.request("GET", path)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}{path} not ready within {READY_WITHIN}s")
            await asyncio.sleep(0.1)
    finally:
        await pool.close()


# --- the bench's resources ---------------------------------------------------------------


@dataclass
class Bench:
    """Starts what a figure needs and stops all of it when the figure's scope ends."""

    workdir: Path
    pg_admin: str
    quick: bool
    profile_dir: Path | None = None
    """When set, every child service runs under cProfile and writes ``<name>-<id>.prof`` here."""
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def path(self, name: str) -> Path:
        """A fresh directory under the bench's temporary directory."""
        p = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        p.mkdir(parents=True)
        return p

    @contextlib.asynccontextmanager
    async def nats(self) -> AsyncIterator[NatsServer]:
        """A nats-server of its own: JetStream, ``sync_interval: always``, a free port."""
        server = NatsServer(store_dir=self.path("nats")).start()
        try:
            yield server
        finally:
            server.stop()

    @contextlib.asynccontextmanager
    async def postgres(self) -> AsyncIterator[str]:
        """A database of its own on the bench's PostgreSQL server, dropped afterwards."""
        name = f"cotn_bench_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(self.pg_admin)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield f"{self.pg_admin.rsplit('/', 1)[0]}/{name}"
        finally:
            admin = await asyncpg.connect(self.pg_admin)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    def _profiled(self, name: str, argv: list[str]) -> list[str]:
        if self.profile_dir is None:
            return argv
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{name}-{uuid.uuid4().hex[:6]}.prof"
        return [argv[0], "-m", "cProfile", "-o", str(out), *argv[1:]]

    @property
    def _stop_signal(self) -> int:
        # uvicorn re-raises SIGTERM after its shutdown, which kills cProfile before it writes;
        # SIGINT ends in KeyboardInterrupt, and cProfile writes its file on the way out.
        return signal.SIGINT if self.profile_dir else signal.SIGTERM

    def sqlite(self) -> str:
        return f"sqlite:///{self.path('sqlite') / 'cotn.db'}"

    @contextlib.asynccontextmanager
    async def service(
        self, name: str, argv: list[str], port: int, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[Service]:
        argv = self._profiled(name, argv)
        log = self.path(name) / "service.log"
        service = spawn(name, argv, log, env or {}, port, self._stop_signal)
        try:
            await wait_http(service.url, "/readyz", service=service)
            yield service
        finally:
            service.stop()

    @contextlib.asynccontextmanager
    async def ingest(
        self, column: str, nats_url: str, data_dir: Path, catalogue: Path | None = None
    ) -> AsyncIterator[Service]:
        """A column service, as ``cotn serve ingest`` runs it (tokens in ``data_dir``)."""
        port = free_port()
        argv = cotn_argv(
            *("serve", "ingest", "--column", column, "--port", str(port)),
            *("--nats-url", nats_url, "--data-dir", str(data_dir), "--log-level", "warning"),
            *(("--catalogue", str(catalogue)) if catalogue else ()),
        )
        async with self.service(f"ingest-{column}", argv, port, UNLIMITED_INGEST) as service:
            yield service

    @contextlib.asynccontextmanager
    async def aggregator(
        self,
        nats_url: str,
        database_url: str,
        catalogue: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> AsyncIterator[Service]:
        """The aggregator, as ``cotn serve aggregator`` runs it; ``ready=False`` returns at once."""
        port = free_port()
        argv = cotn_argv(
            *("serve", "aggregator", "--port", str(port), "--log-level", "warning"),
            *("--nats-url", nats_url, "--database-url", database_url),
            *(("--catalogue", str(catalogue)) if catalogue else ()),
        )
        if ready:
            async with self.service("aggregator", argv, port, env) as service:
                yield service
            return
        argv = self._profiled("aggregator", argv)
        log = self.path("aggregator") / "service.log"
        service = spawn("aggregator", argv, log, env or {}, port, self._stop_signal)
        try:
            yield service
        finally:
            service.stop()

    @contextlib.asynccontextmanager
    async def office(self, aggregator_url: str) -> AsyncIterator[Service]:
        """The office web board over ``aggregator_url``, as ``cotn serve office`` runs it."""
        port = free_port()
        argv = cotn_argv(
            *("serve", "office", "--port", str(port), "--log-level", "warning"),
            *("--aggregator-url", aggregator_url, "--data-dir", str(self.path("office"))),
        )
        env = {"COTN_ENV": "development", "COTN_OFFICE_SECRET_KEY": "bench-session-key"}
        async with self.service("office", argv, port, env) as service:
            yield service


def token_for(data_dir: Path, authority: str) -> str:
    return TokenStore.in_dir(data_dir).create(authority)[0]


async def pg_version(admin_url: str) -> str | None:
    try:
        connection = await asyncpg.connect(admin_url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed:`` … ``elapsed()`` seconds since the block began (perf_counter)."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started
