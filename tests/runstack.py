"""``cotn run`` as a subprocess for tests: free ports, its output read as it comes, its pids."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.cli.supervisor import port_is_free
from shared.catalogue import load_catalogue

T = TypeVar("T")
STARTED = re.compile(r"\b(?:re)?started (\S+) \(pid (\d+)\)(?: on [\d.]+:(\d+))?")


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_base_port(count: int = 5) -> int:
    """A port P such that P .. P + count - 1 are all free on loopback (aggregator, three
    columns and the web board by default).

    Chosen below the kernel's ephemeral range: the stack's own outgoing connections (to NATS
    and the database, made while its services start) take their source ports from that
    range, and one once took a column's port before the column bound it ("port … is busy").
    """
    try:
        first_ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default
    choose = random.Random()
    for _ in range(200):
        base = choose.randrange(10_000, first_ephemeral - count)
        if all(port_is_free("127.0.0.1", p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def cotn(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a ``cotn`` command in a child process and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250"},
    )


def wait_until(probe: Callable[[], T | None], what: str, timeout: float, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as exc:  # a probe may fail until the thing is up
            last_error = exc
        else:
            if value:
                return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last_error!r})")


@dataclass
class RunningStack:
    """A ``cotn run`` child process and what it has printed so far."""

    process: subprocess.Popen[str]
    data_dir: Path
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def columns(self) -> dict[str, str]:
        """Column id -> base URL of its service, as ``cotn run`` lays them out."""
        ids = [c.id for c in load_catalogue().columns]
        return {c: f"http://127.0.0.1:{self.port + i}" for i, c in enumerate(ids, start=1)}

    @property
    def office(self) -> str:
        """Base URL of the web board: the port after the last column service's."""
        return f"http://127.0.0.1:{self.port + len(load_catalogue().columns) + 1}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for_output(self, text: str, timeout: float = 30) -> str:
        def seen() -> str | None:
            if text in self.output:
                return self.output
            if self.process.poll() is not None:
                raise AssertionError(f"cotn run exited {self.process.returncode}:\n{self.output}")
            return None

        return wait_until(seen, repr(text), timeout)

    def wait_for(self, probe: Callable[[], T | None], what: str, timeout: float = 30) -> T:
        return wait_until(probe, what, timeout)

    def parts(self) -> dict[str, tuple[int, int | None]]:
        """Part name -> (latest pid, port) from the supervisor's "started"/"restarted" lines."""
        found: dict[str, tuple[int, int | None]] = {}
        for name, pid, port in STARTED.findall(self.output):
            known_port = int(port) if port else found.get(name, (0, None))[1]
            found[name] = (int(pid), known_port)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def start_stack(data_dir: Path, *args: str, ready_timeout: float = 60) -> Iterator[RunningStack]:
    """``cotn run --no-board`` on free ports with ``data_dir``; stopped (SIGTERM) afterwards."""
    port = free_base_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--no-board",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    stack = RunningStack(process, data_dir, port)
    threading.Thread(target=stack.read, daemon=True).start()
    try:
        stack.wait_for_output("All parts ready", timeout=ready_timeout)
        yield stack
    finally:
        stack.stop()
