"""Supervise the parts of an embedded run: start them, restart one that dies, stop them all.

A part is one child process (nats-server, the aggregator, a column service) with its log
file and a way to tell it is ready. The supervisor never leaves a silent half-stack: a
part that exits is reported and restarted, and a part that keeps dying stops the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.natsauth import write_private

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 10.0


class RestartLimitExceeded(RuntimeError):
    """A part died more often than the supervisor may restart it."""


@dataclass
class Part:
    """One supervised child process."""

    name: str
    argv: list[str]
    log: Path
    port: int
    host: str = "127.0.0.1"
    ready_path: str | None = "/readyz"
    """HTTP path answering 200 when ready; None means ready once the port accepts."""
    stage: int = 1
    """Parts of a lower stage are what later ones depend on: started first, stopped last."""
    files: dict[Path, str] = field(default_factory=dict)
    """Files (such as a configuration) written before each start, readable by the owner only."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment of this part on top of the supervisor's (secrets go here, not in argv,
    which any local user can read)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    restarts: deque[float] = field(default_factory=deque, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (a TIME_WAIT leftover does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Servers such as uvicorn set SO_REUSEADDR too, so only a live listener blocks them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, loaded once here so the child only has to call it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
_SIGTERM = int(signal.SIGTERM)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor itself is killed.

    Nothing is imported or allocated here: the child of a threaded parent must not take locks.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGTERM)


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
    return f"exit code {code}"


class Supervisor:
    """Starts parts in order, restarts those that die and stops them in reverse order."""

    def __init__(
        self,
        parts: list[Part],
        *,
        report: Callable[[str], None],
        max_restarts: int = MAX_RESTARTS,
        window: float = RESTART_WINDOW,
    ):
        self.parts = parts
        self.report = report
        self.max_restarts = max_restarts
        self.window = window
        # Unbuffered, so a child's last words reach its log before it dies.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _spawn(self, part: Part) -> None:
        for path, text in part.files.items():
            write_private(path, text)
        part.log.parent.mkdir(parents=True, exist_ok=True)
        with open(part.log, "ab") as log:
            # A session of its own: Ctrl-C reaches only the supervisor, which stops parts in order.
            part.process = subprocess.Popen(
                part.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **part.env},
                start_new_session=True,
                # The death signal follows the forking thread: the supervisor forks from main.
                preexec_fn=_die_with_parent,
            )

    def start(self, part: Part) -> None:
        """Start one part and say so with its pid (tests and people find the pid there)."""
        self._spawn(part)
        self.report(
            f"started {part.name} (pid {part.pid}) on {part.host}:{part.port}, log {part.log}"
        )

    def start_all(self) -> None:
        for part in sorted(self.parts, key=lambda p: p.stage):
            self.start(part)

    def check(self) -> None:
        """Report and restart every part that has exited; raise once one dies too often."""
        for part in self.parts:
            if part.process is None or (code := part.process.poll()) is None:
                continue
            now = time.monotonic()
            while part.restarts and now - part.restarts[0] > self.window:
                part.restarts.popleft()
            self.report(f"{part.name} (pid {part.pid}) died with {describe_exit(code)}")
            if len(part.restarts) >= self.max_restarts:
                part.process = None
                raise RestartLimitExceeded(
                    f"{part.name} died {len(part.restarts) + 1} times within "
                    f"{self.window:.0f}s (last: {describe_exit(code)}); see {part.log}"
                )
            part.restarts.append(now)
            self._spawn(part)
            self.report(
                f"restarted {part.name} (pid {part.pid}), restart {len(part.restarts)} of "
                f"{self.max_restarts} allowed per {self.window:.0f}s"
            )

    def stop_order(self) -> list[Part]:
        """The parts from the latest stage to the first, the order they are stopped in."""
        return sorted(self.parts, key=lambda p: -p.stage)

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the latest stage first (services drain to the bus), each stage's parts together."""
        for stage in sorted({p.stage for p in self.parts}, reverse=True):
            self._stop_group([p for p in self.parts if p.stage == stage], timeout)

    @staticmethod
    def _stop_group(parts: list[Part], timeout: float) -> None:
        running = [p for p in parts if p.process and p.process.poll() is None]
        for part in running:
            assert part.process
            part.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for part in running:
            assert part.process
            try:
                part.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                part.process.kill()
                part.process.wait()
        for part in parts:
            part.process = None
