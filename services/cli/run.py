"""``cotn run``: the whole pipeline on one machine, supervised, with an optional demo feed.

Parts: a nats-server with JetStream (unless ``--nats-url``), the aggregator on the base
port, one column service per catalogue column on the ports after it and the office web
board on the port after those, each a child process started as ``cotn serve ...``.
Every port is checked before anything starts; the board shows once every part answers
``/readyz``. Ctrl-C or SIGTERM stops the demo feed, then the web board, then the services,
then nats-server, and leaves nothing running.

The embedded nats-server runs with the project's least-privilege users
(:mod:`shared.natsauth`) and passwords generated for each run, kept in
``<data dir>/nats-users.json`` (mode 0600) and handed to each service in its environment,
never on a command line. The run itself sets up the streams and the aggregator's consumer
as the administrator (what ``cotn nats setup`` does), again whenever nats-server restarts;
the services do not manage streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import nats.errors
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.cli.common import (
    DEFAULT_DATA_DIR,
    EXIT_FAILED,
    CatalogueOption,
    DataDirOption,
    fail,
    open_catalogue,
)
from services.cli.nats import setup_bus
from services.cli.status import BoardUnavailable, board_of, fit_board, programme_url
from services.cli.supervisor import Part, RestartLimitExceeded, Supervisor, port_is_free
from services.demo.feed import Feed, demo_office_token, demo_tokens
from services.demo.history import story_authorities
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue
from shared.deployment import column_ports, office_port, service_name
from shared.natsauth import (
    ADMIN_USER,
    AGGREGATOR_USER,
    USERS_FILE,
    bus_users,
    generate_passwords,
    ingest_user,
    with_credentials,
    without_credentials,
)
from shared.natsserver import NatsServer, free_port, nats_server_binary
from shared.tokens import TokenStore

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
READY_TIMEOUT = 60.0
WATCH_EVERY = 0.5
BOARD_EVERY = 2.0
PROBE_TIMEOUT = 1.0
STORED_TIMEOUT = 15.0


class NotReady(RuntimeError):
    """A part did not answer its readiness probe in time."""


@dataclass
class Stack:
    """What ``cotn run`` starts, and where each part answers."""

    parts: list[Part]
    nats_url: str
    """Where NATS answers, without credentials (to show)."""
    database_url: str
    aggregator: Part
    columns: dict[str, Part]
    data_dir: Path
    admin_url: str
    """NATS as the administrator, who sets up the streams and the consumer."""
    nats: Part | None = None
    office: Part | None = None


def register(parent: typer.Typer) -> None:
    """Add ``cotn run`` to the ``cotn`` app."""
    parent.command("run")(run)


def _serve_argv(*args: str) -> list[str]:
    # The same interpreter and code as this process, whatever is on PATH.
    return [sys.executable, "-m", "services.cli", "serve", *args]


def _nats_part(
    data_dir: Path, log_dir: Path, passwords: dict[str, str], columns: list[str]
) -> Part:
    """nats-server from the wheel, JetStream stored under the data dir, on a free port, with
    the project's users; their passwords are written beside it (0600) when it starts."""
    server = NatsServer(
        store_dir=data_dir / "nats",
        port=free_port(HOST),
        host=HOST,
        users=bus_users(columns, passwords.__getitem__),
    )
    config = server.store_dir / "nats-server.conf"
    return Part(
        name="nats-server",
        argv=[nats_server_binary(), "-c", str(config)],
        log=log_dir / "nats-server.log",
        port=server.port,
        host=HOST,
        ready_path=None,
        stage=0,
        files={
            config: server.config_text(),
            data_dir / USERS_FILE: json.dumps(passwords, indent=2) + "\n",
        },
    )


def _bus_env(prefix: str, url: str) -> dict[str, str]:
    """A service's NATS settings: its URL (credentials included) and no stream management."""
    return {f"{prefix}NATS_URL": url, f"{prefix}MANAGE_STREAMS": "false"}


def plan_stack(
    catalogue: Catalogue,
    *,
    catalogue_path: Path,
    data_dir: Path,
    port: int,
    nats_url: str | None,
    database_url: str | None,
) -> Stack:
    """The parts of the run: ports ``port`` (aggregator), ``port + 1``.. (columns, in order),
    then the office web board."""
    log_dir = data_dir / "logs"
    parts: list[Part] = []
    column_ids = [c.id for c in catalogue.columns]
    nats = None
    if nats_url is None:
        passwords = generate_passwords(column_ids)
        nats = _nats_part(data_dir, log_dir, passwords, column_ids)
        parts.append(nats)
        started = nats_url = f"nats://{HOST}:{nats.port}"

        def url_of(user: str) -> str:
            return with_credentials(started, user, passwords[user])

    else:
        given = nats_url

        def url_of(user: str) -> str:
            return given  # a server (or cluster) of the user's: its URLs serve every part

        nats_url = without_credentials(given)

    database_url = database_url or f"sqlite+aiosqlite:///{data_dir / 'cotn.db'}"
    shared_args = ["--host", HOST, "--catalogue", str(catalogue_path)]
    aggregator = Part(
        name="aggregator",
        argv=_serve_argv(
            "aggregator",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--data-dir",
            str(data_dir),
            *shared_args,
        ),
        log=log_dir / "aggregator.log",
        port=port,
        host=HOST,
        env=_bus_env("COTN_AGGREGATOR_", url_of(AGGREGATOR_USER)),
    )
    parts.append(aggregator)
    columns = {}
    ports = column_ports([c.id for c in catalogue.columns], port)
    for column_id, column_port in ports.items():
        columns[column_id] = Part(
            name=service_name(column_id),
            argv=_serve_argv(
                "ingest",
                "--column",
                column_id,
                "--port",
                str(column_port),
                "--data-dir",
                str(data_dir),
                *shared_args,
            ),
            log=log_dir / f"{service_name(column_id)}.log",
            port=column_port,
            host=HOST,
            env=_bus_env("COTN_INGEST_", url_of(ingest_user(column_id))),
        )
    parts += columns.values()
    office = _office_part(
        log_dir, office_port(column_ids, port), aggregator.url, data_dir, catalogue_path
    )
    parts.append(office)
    return Stack(
        parts,
        nats_url,
        database_url,
        aggregator,
        columns,
        data_dir,
        url_of(ADMIN_USER),
        nats,
        office,
    )


def _office_part(
    log_dir: Path, port: int, aggregator_url: str, data_dir: Path, catalogue_path: Path
) -> Part:
    """The web board; open on loopback (development, unless COTN_ENV says otherwise), its
    session key made for this run, the run's catalogue (the exports page's quarters)."""
    return Part(
        name="office",
        argv=_serve_argv(
            "office",
            "--port",
            str(port),
            "--aggregator-url",
            aggregator_url,
            "--data-dir",
            str(data_dir),
            "--host",
            HOST,
        ),
        log=log_dir / "office.log",
        port=port,
        host=HOST,
        stage=2,
        env={
            "COTN_ENV": os.environ.get("COTN_ENV", "development"),
            "COTN_OFFICE_SECRET_KEY": secrets.token_urlsafe(32),
            "COTN_OFFICE_CATALOGUE": str(catalogue_path),
        },
    )


def busy_part(parts: list[Part]) -> Part | None:
    """The first part whose port something else already listens on."""
    return next((p for p in parts if not port_is_free(p.host, p.port)), None)


def readiness_address(part: Part) -> str:
    """Where ``part``'s readiness is probed: its ready URL, or its port when it has none."""
    if part.ready_path is None:
        return f"{part.host}:{part.port}"
    return part.url + part.ready_path


async def probe(client: httpx.AsyncClient, part: Part) -> str | None:
    """None when ``part`` is ready, else why not (for the not-ready message)."""
    if part.ready_path is None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(part.host, part.port), PROBE_TIMEOUT
            )
        except (OSError, TimeoutError):
            return f"nothing listens on {readiness_address(part)}"
        writer.close()
        return None
    url = readiness_address(part)
    try:
        response = await client.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return f"{url} does not answer"
    if response.status_code == 200:
        return None
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = ""
    return f"{url} answered {response.status_code}" + (f" ({detail})" if detail else "")


async def wait_ready(parts: list[Part], within: float) -> None:
    """Poll every part's readiness until all answer; raise naming those that never did."""
    # Named by address from the start: a first round of probes may not end in time.
    waiting = {p.name: f"{readiness_address(p)} has not been probed yet" for p in parts}
    try:
        async with asyncio.timeout(within), httpx.AsyncClient() as client:
            while waiting:
                reasons = await asyncio.gather(*(probe(client, p) for p in parts))
                waiting = {p.name: r for p, r in zip(parts, reasons, strict=True) if r}
                if waiting:
                    await asyncio.sleep(0.2)
    except TimeoutError:
        names = "; ".join(f"{name}: {why}" for name, why in waiting.items())
        raise NotReady(f"not ready after {within:g}s: {names}") from None


async def watch(supervisor: Supervisor) -> None:
    """Restart parts that die, for as long as the run lasts."""
    while True:
        supervisor.check()
        await asyncio.sleep(WATCH_EVERY)


async def keep_bus_set_up(stack: Stack) -> None:
    """Set up the streams and the consumer as the administrator once NATS answers, and again
    whenever nats-server restarts (the services' users may not)."""
    set_up_for: int | None = None
    while True:
        current = stack.nats.pid if stack.nats is not None else 0
        if current is not None and current != set_up_for:
            try:
                await setup_bus(stack.admin_url)
            except (nats.errors.Error, OSError, TimeoutError):
                pass  # not listening yet: the parts' readiness says so if it lasts
            else:
                set_up_for = current
        await asyncio.sleep(WATCH_EVERY)


async def stored_events(client: httpx.AsyncClient, url: str, at_least: int) -> int:
    """How many events the aggregator has stored, counting pages until ``at_least``."""
    count, cursor = 0, None
    while count < at_least:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(url + "/v1/events", params=params)).raise_for_status().json()
        count += len(page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return count


async def wait_stored(url: str, count: int, within: float = STORED_TIMEOUT) -> None:
    """Wait until the aggregator holds ``count`` events, so the first board shows the backfill.

    Best effort: the board is shown anyway after ``within`` seconds.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within), httpx.AsyncClient(timeout=5.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if await stored_events(client, url, count) >= count:
                        return
                await asyncio.sleep(0.2)


async def show_board(console: Console, url: str, interval: float = BOARD_EVERY) -> None:
    """The live board: refreshed from the aggregator; a failed refresh keeps the last one."""
    board = None
    async with httpx.AsyncClient(timeout=5.0) as client:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                note = None
                try:
                    board = board_of(await client.get(programme_url(url)))
                except (httpx.HTTPError, BoardUnavailable) as exc:
                    note = Text(f"board refresh failed: {exc}", style="yellow")
                if board is not None:
                    live.update(fit_board(console, board, note), refresh=True)
                await asyncio.sleep(interval)


def endpoints_table(stack: Stack) -> Table:
    """Where each part answers, its pid and its log."""
    table = Table(
        "part",
        "address",
        "pid",
        "log",
        title="COTN delivery monitor is running",
        title_justify="left",
    )
    for part in stack.parts:
        address = part.url if part.ready_path else stack.nats_url
        table.add_row(Text(part.name), Text(address), Text(str(part.pid)), Text(str(part.log)))
    return table


def print_endpoints(console: Console, stack: Stack, took: float) -> None:
    if stack.office is not None:
        console.print(Text(f"Web board: {stack.office.url}/", style="bold"), soft_wrap=True)
    console.print(endpoints_table(stack))
    aggregator = stack.aggregator.url
    for line in (
        f"All parts ready in {took:.1f}s. NATS {stack.nats_url}; database {stack.database_url}",
        f"Board: cotn status --url {aggregator} (read API {aggregator}/v1/programme, "
        f"docs {aggregator}/docs)",
        f"Tokens: cotn token create <authority> --data-dir {stack.data_dir}",
        "Stop with Ctrl-C.",
    ):
        console.print(Text(line), soft_wrap=True)


@contextlib.asynccontextmanager
async def _demo(catalogue: Catalogue, stack: Stack, console: Console) -> AsyncIterator[Feed]:
    """The demo feed with its own tokens (the authorities' and an office one, for its
    reviews at the aggregator), revoked when the run ends."""
    store = TokenStore.in_dir(stack.data_dir)
    with (
        demo_tokens(store, story_authorities(catalogue)) as tokens,
        demo_office_token(store) as office_token,
    ):
        endpoints = {column: part.url for column, part in stack.columns.items()}
        feed = Feed(
            catalogue=catalogue,
            endpoints=endpoints,
            tokens=tokens,
            console=console,
            aggregator=stack.aggregator.url,
            office_token=office_token,
        )
        try:
            yield feed
        finally:
            await feed.aclose()


async def session(
    *,
    catalogue: Catalogue,
    stack: Stack,
    supervisor: Supervisor,
    console: Console,
    demo: bool,
    board: bool,
    ready_timeout: float,
    started: float,
) -> None:
    """Everything after the parts are started: readiness, endpoints, demo feed, board."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(watch(supervisor))
        tasks.create_task(keep_bus_set_up(stack))
        await wait_ready(stack.parts, ready_timeout)
        print_endpoints(console, stack, time.monotonic() - started)
        async with contextlib.AsyncExitStack() as resources:
            if demo:
                feed = await resources.enter_async_context(_demo(catalogue, stack, console))
                await feed.backfill()
                await wait_stored(stack.aggregator.url, len(feed.past))
                tasks.create_task(feed.live())
            if board:
                await show_board(console, stack.aggregator.url)
            await asyncio.Event().wait()  # until Ctrl-C or SIGTERM


async def until_signalled(work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` until it ends or SIGINT / SIGTERM cancels it (a clean stop)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await work()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(
    demo: Annotated[
        bool, typer.Option("--demo", help="Also run a demo feed of authority systems.")
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65530,
            help="Aggregator port; the column services take the next ports, one per column, "
            "and the web board the port after them.",
        ),
    ] = DEFAULT_PORT,
    catalogue: CatalogueOption = DEFAULT_CATALOGUE,
    nats_url: Annotated[
        str | None,
        typer.Option(
            help="Use this NATS server (or a comma-separated list of a cluster's seeds) "
            "instead of starting one.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database URL; default: SQLite in the data dir.", show_default=False),
    ] = None,
    no_board: Annotated[
        bool, typer.Option("--no-board", help="Do not show the live board.")
    ] = False,
    ready_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds every part has to become ready.")
    ] = READY_TIMEOUT,
) -> None:
    """Start the whole pipeline on this machine: NATS, the aggregator, the column services.

    Logs go to DIR/logs/. A part that dies is reported and restarted; one that keeps dying
    stops the run. Ctrl-C stops everything.
    """
    started = time.monotonic()
    cat = open_catalogue(catalogue)
    data_dir = data_dir.resolve()
    stack = plan_stack(
        cat,
        catalogue_path=catalogue.resolve(),
        data_dir=data_dir,
        port=port,
        nats_url=nats_url,
        database_url=database_url,
    )
    busy = busy_part(stack.parts)
    if busy is not None:
        fail(
            f"port {busy.port} on {busy.host} is busy (needed by {busy.name}): stop what uses "
            f"it or choose another --port"
        )
    console = Console(highlight=False)
    if stack.office is not None:
        console.print(Text(f"Web board: {stack.office.url}/ (starting)", style="bold"))
    supervisor = Supervisor(stack.parts, report=lambda line: _report(console, line))
    # SIGTERM before the event loop takes over stops the run as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        supervisor.start_all()
        asyncio.run(
            until_signalled(
                lambda: session(
                    catalogue=cat,
                    stack=stack,
                    supervisor=supervisor,
                    console=console,
                    demo=demo,
                    board=not no_board,
                    ready_timeout=ready_timeout,
                    started=started,
                )
            )
        )
    except* (NotReady, RestartLimitExceeded) as group:
        code = EXIT_FAILED
        for exc in group.exceptions:
            _report(console, f"stopping: {exc}", err=True)
    except* KeyboardInterrupt:
        pass
    finally:
        _stop(console, supervisor)
    raise typer.Exit(code)


def _stop(console: Console, supervisor: Supervisor) -> None:
    """Stop every part; further Ctrl-C or SIGTERM cannot interrupt the stop half-way."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _report(console, "stopping " + ", ".join(p.name for p in supervisor.stop_order()))
    supervisor.stop_all()
    _report(console, "stopped; nothing left running")


def _report(console: Console, line: str, err: bool = False) -> None:
    """One timestamped line, never wrapped by Rich (the terminal wraps it, a log keeps it whole)."""
    text = Text(f"{datetime.now():%H:%M:%S} {line}", style="red" if err else "")
    (Console(stderr=True, highlight=False) if err else console).print(text, soft_wrap=True)
