"""The services as real child processes: ``cotn serve ...`` on free loopback ports.

Each service is started the way ``cotn run`` and docker-compose start it
(``python -m services.cli serve ...``), with its settings in ``COTN_*`` variables, its output
in a log file of the test's own, and is killed by its own pid only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.natsserver import free_port
from shared.tokens import TokenStore

REPO = Path(__file__).resolve().parents[2]
AUTHORITIES = ("greater-manchester", "northern-gritstone")

# Short waits so a fault test spends its time on the fault, not on timers.
AGGREGATOR_DEFAULTS: dict[str, Any] = {
    "batch_size": 50,
    "batch_timeout_seconds": 0.05,
    "ack_wait_seconds": 2,
    "retry_delay_min_seconds": 0.2,
    "retry_delay_max_seconds": 0.5,
    "status_interval_seconds": 3600,
    "status_min_gap_seconds": 0.5,
    "backlog_interval_seconds": 0.5,
    "graceful_timeout_seconds": 5,
    "sqlite_busy_timeout_ms": 1000,
}
INGEST_DEFAULTS: dict[str, Any] = {
    "column": "collaboration",
    "reconnect_wait_seconds": 0.2,
    "publish_timeout_seconds": 2,
    "retry_after_seconds": 1,
    # The load is the point here, not the per-token rate limit.
    "rate_limit_per_second": 1_000_000,
    "rate_limit_burst": 1_000_000,
}


def environment(prefix: str, settings: dict[str, Any]) -> dict[str, str]:
    """This process's environment without any ``COTN_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COTN_")}
    env.update({f"{prefix}{name.upper()}": str(value) for name, value in settings.items()})
    return env


@dataclass
class Service:
    """One ``cotn serve`` child process; ``start`` again reuses the same port and settings."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this service's own process."""
        assert self.process is not None and self.process.poll() is None, f"{self.name} is down"
        self.process.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL and reap; the exit status."""
        self.signal(signal.SIGKILL)
        return self.process.wait(10) if self.process else 0

    async def exited(self, within: float = 30) -> int:
        """Wait for the process to end by itself; its exit status."""
        assert self.process is not None
        try:
            return await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {within}s\n{self.tail()}") from None

    def stop(self) -> None:
        """Kill the process if it still runs (test teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    async def ready(self, within: float = 60) -> Service:
        """Poll ``/readyz`` until 200; fail with the log's tail if it never is or it died."""
        assert self.process is not None
        deadline = asyncio.get_running_loop().time() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited {self.process.returncode}\n{self.tail()}"
                    )
                try:
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass  # not listening yet
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{self.name} not ready after {within}s\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def unready(self) -> bool:
        """Whether ``/readyz`` answers 503 (up, but not ready)."""
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(self.url + "/readyz")).status_code == 503

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` (with these labels) on ``/metrics``."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.url + "/metrics")).raise_for_status().text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )

    def tail(self, lines: int = 40) -> str:
        """The end of the service's log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- {self.log} ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Services:
    """The services a test starts, killed at teardown; tokens for both load authorities."""

    root: Path
    started: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        store = TokenStore.in_dir(self.data_dir)
        self.tokens = {authority: store.create(authority)[0] for authority in AUTHORITIES}

    def _service(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Service:
        service = Service(name, argv, env, port, self.root / f"{name}.log")
        self.started.append(service)
        return service.start()

    async def aggregator(
        self,
        nats_url: str,
        database_url: str,
        *,
        name: str = "aggregator",
        wait: bool = True,
        log_level: str = "warning",
        **settings: Any,
    ) -> Service:
        """``cotn serve aggregator``, ready unless ``wait`` is false (a process meant to crash)."""
        port = free_port()
        values = {
            **AGGREGATOR_DEFAULTS,
            **settings,
            "nats_url": nats_url,
            "database_url": database_url,
        }
        argv = [*serve_argv("aggregator", log_level), "--port", str(port)]
        service = self._service(name, argv, environment("COTN_AGGREGATOR_", values), port)
        return await service.ready() if wait else service

    async def ingest(self, nats_url: str, *, name: str = "ingest", **settings: Any) -> Service:
        """``cotn serve ingest`` for the collaboration column, ready."""
        port = free_port()
        values = {**INGEST_DEFAULTS, **settings, "nats_url": nats_url, "data_dir": self.data_dir}
        argv = [*serve_argv("ingest"), "--port", str(port)]
        return await self._service(name, argv, environment("COTN_INGEST_", values), port).ready()

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


def serve_argv(kind: str, log_level: str = "warning") -> list[str]:
    """``cotn serve <kind>`` with this interpreter; quiet (warnings and errors) by default."""
    cotn = [sys.executable, "-m", "services.cli"]
    return [*cotn, "serve", kind, "--host", "127.0.0.1", "--log-level", log_level]
