"""NATS least privilege: the project's users and permissions on a real nats-server.

The server runs with :func:`shared.natsauth.bus_users` (what ``cotn run`` and
``deploy/nats/nats.conf`` use) on a free port. The administrator sets up the streams; then
each service's user can do what the service needs and nothing more: the collaboration
column service publishes its own column's events but not another column's, the aggregator
consumes its durable consumer but cannot publish events, and neither can manage streams or
read another user's inbox. The real services, run as those users, work end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from pydantic import ValidationError
from typer.testing import CliRunner

from services.aggregator.settings import AggregatorSettings
from services.cli.common import EXIT_BAD_INPUT
from services.cli.main import app as cotn
from services.cli.nats import DEPLOY_CONFIG, deployment_config, setup_bus
from services.cli.run import plan_stack
from services.cli.supervisor import Part, Supervisor
from services.ingest.claims import Claim, claim, claim_key, withdraw
from services.ingest.locks import LockWatcher
from services.ingest.settings import IngestSettings
from shared.bus import (
    AGGREGATOR_DURABLE,
    CLAIMS_BUCKET,
    CLAIMS_STREAM,
    EVENTS_STREAM,
    STATUS_STREAM,
)
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue
from shared.natsauth import (
    ADMIN_USER,
    AGGREGATOR_USER,
    PLACEHOLDER_SECRET,
    USERS_FILE,
    bus_users,
    generate_passwords,
    inbox_prefix,
    ingest_user,
    password_variable,
    user_names,
    with_credentials,
    without_credentials,
)
from shared.natsserver import NatsServer, free_port, nats_server_binary
from shared.reviews import LOCKS_BUCKET, LOCKS_STREAM, Lock, kpi_target, milestone_target
from shared.tokens import TokenStore
from tests.aggregator.harness import eventually
from tests.aggregator.harness import settings_for as aggregator_settings_for
from tests.ingest.support import milestone, running, settings_for

COLUMNS = ["collaboration", "devolution", "business"]
REFUSAL_WAIT = 0.3
"""Seconds to wait for the acknowledgement a refused publish never gets."""


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return generate_passwords(COLUMNS)


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> AsyncIterator[NatsServer]:
    """A nats-server with the project's users, its streams set up by the administrator."""
    users = bus_users(COLUMNS, passwords.__getitem__)
    running_server = NatsServer(store_dir=tmp_path_factory.mktemp("perm") / "nats", users=users)
    running_server.start()
    try:
        await setup_bus(url_as(running_server, ADMIN_USER, passwords))
        yield running_server
    finally:
        running_server.stop()


def url_as(server: NatsServer, user: str, passwords: dict[str, str]) -> str:
    return with_credentials(server.url, user, passwords[user])


class Session:
    """A connection as one user, with the errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.client: Client | None = None

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def violation(self, subject: str) -> str:
        """The permissions violation the server reported for ``subject``."""
        # nats-py reports the subject lower-cased.
        wanted = subject.lower()
        async with asyncio.timeout(5):
            while True:
                found = [
                    e for e in self.errors if "permissions violation" in e and wanted in e.lower()
                ]
                if found:
                    return found[0]
                await asyncio.sleep(0.02)


@asynccontextmanager
async def connected(
    server: NatsServer, user: str, passwords: dict[str, str]
) -> AsyncIterator[tuple[Client, Session]]:
    session = Session()
    client = await nats.connect(
        url_as(server, user, passwords),
        inbox_prefix=inbox_prefix(user),
        error_cb=session.on_error,
        allow_reconnect=False,
    )
    try:
        yield client, session
    finally:
        await client.close()


async def last_seq(server: NatsServer, passwords: dict[str, str], stream: str) -> int:
    async with connected(server, ADMIN_USER, passwords) as (client, _):
        return int((await client.jetstream().stream_info(stream)).state.last_seq)


async def assert_publish_refused(
    client: Client, session: Session, subject: str, stream: str = EVENTS_STREAM
) -> None:
    """A JetStream publish to ``subject`` gets no acknowledgement and a violation."""
    with pytest.raises(TimeoutError):
        await client.jetstream().publish(subject, b"{}", stream=stream, timeout=REFUSAL_WAIT)
    assert "publish" in await session.violation(subject)


# -- the column service's user ----------------------------------------------------------------


async def test_a_column_service_publishes_its_own_column_but_not_another(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    before = await last_seq(server, passwords, EVENTS_STREAM)
    async with connected(server, ingest_user("collaboration"), passwords) as (client, session):
        js = client.jetstream(timeout=5)
        ack = await js.publish(
            "cotn.events.collaboration.2a.milestone", b"{}", stream=EVENTS_STREAM
        )
        assert ack.stream == EVENTS_STREAM and ack.seq == before + 1

        await assert_publish_refused(client, session, "cotn.events.devolution.1a.milestone")
        await assert_publish_refused(client, session, "cotn.status.collaboration.2a", STATUS_STREAM)

        # Its readiness probe is allowed: the events stream's info.
        assert (await js.stream_info(EVENTS_STREAM)).config.name == EVENTS_STREAM
    assert await last_seq(server, passwords, EVENTS_STREAM) == before + 1


async def test_a_column_service_claims_reads_and_withdraws_ids(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    identity = "greater-manchester:perm-1"
    first, other = Claim("a" * 64, "2025-06-01T09:00:00Z"), Claim("b" * 64, "2025-06-02T09:00:00Z")
    async with connected(server, ingest_user("collaboration"), passwords) as (client, _):
        bucket = await client.jetstream(timeout=5).key_value(CLAIMS_BUCKET)
        made = await claim(bucket, identity, first)
        assert made.revision is not None
        assert (await claim(bucket, identity, other)).held == first  # read back (direct get)
        await withdraw(bucket, identity, made.revision)
        assert (await claim(bucket, identity, other)).revision is not None


async def test_the_aggregator_cannot_claim_ids(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    async with connected(server, AGGREGATOR_USER, passwords) as (client, session):
        await assert_publish_refused(
            client, session, f"$KV.{CLAIMS_BUCKET}.{claim_key('np11:x')}", CLAIMS_STREAM
        )


MANAGEMENT = [
    f"$JS.API.STREAM.DELETE.{CLAIMS_STREAM}",
    f"$JS.API.STREAM.PURGE.{CLAIMS_STREAM}",
    f"$JS.API.STREAM.UPDATE.{CLAIMS_STREAM}",
    f"$JS.API.STREAM.DELETE.{EVENTS_STREAM}",
    f"$JS.API.STREAM.PURGE.{EVENTS_STREAM}",
    f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}",
    f"$JS.API.STREAM.CREATE.{EVENTS_STREAM}",
    f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.{AGGREGATOR_DURABLE}",
    f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}",
    f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}",
    f"$JS.API.STREAM.MSG.DELETE.{EVENTS_STREAM}",
]


@pytest.mark.parametrize("user", [ingest_user("collaboration"), AGGREGATOR_USER])
async def test_services_cannot_manage_or_read_the_stream(
    server: NatsServer, passwords: dict[str, str], user: str
) -> None:
    async with connected(server, user, passwords) as (client, session):

        async def refused(subject: str) -> None:
            with pytest.raises(nats.errors.TimeoutError):
                await client.request(subject, b"{}", timeout=REFUSAL_WAIT)
            await session.violation(subject)

        await asyncio.gather(*(refused(subject) for subject in MANAGEMENT))


@pytest.mark.parametrize(
    "subject", ["cotn.events.>", "_INBOX.>", f"{inbox_prefix(AGGREGATOR_USER)}.>", ">"]
)
async def test_a_column_service_cannot_listen_to_events_or_other_inboxes(
    server: NatsServer, passwords: dict[str, str], subject: str
) -> None:
    # The aggregator's pull deliveries arrive on its inbox: reading it would read every column.
    async with connected(server, ingest_user("business"), passwords) as (client, session):
        await client.subscribe(subject)
        await client.flush()
        assert "subscription" in await session.violation(subject)


# -- the locks bucket ------------------------------------------------------------------------

LOCK = Lock(
    kpi_target("early-stage-finance", "2019-Q4", "northern-gritstone"),
    "approve",
    "office/jane",
    "2026-07-10T09:00:00Z",
    "perm-review-1",
)


async def test_the_aggregator_puts_reads_and_deletes_locks(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    target = milestone_target("1a", "joint-position")
    async with connected(server, AGGREGATOR_USER, passwords) as (client, session):
        bucket = await client.jetstream(timeout=5).key_value(LOCKS_BUCKET)  # stream info
        revision = await bucket.put(target, LOCK._replace(target=target).encode())
        assert Lock.decode((await bucket.get(target)).value or b"").target == target  # direct
        await bucket.delete(target, last=revision)  # a reopen
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await bucket.get(target)
    assert not [e for e in session.errors if "permissions violation" in e]


async def test_a_column_service_watches_the_locks_but_cannot_put_one(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    async with connected(server, AGGREGATOR_USER, passwords) as (client, _):
        locks = await client.jetstream(timeout=5).key_value(LOCKS_BUCKET)
        await locks.put(LOCK.target, LOCK.encode())
    async with connected(server, ingest_user("collaboration"), passwords) as (client, session):
        watcher = LockWatcher(timeout=5, retry_wait=0.1)
        watching = asyncio.create_task(watcher.run(client))

        async def watched() -> Lock | None:
            return watcher.lock_of(LOCK.target)

        try:
            assert await eventually(watched, "the lock, watched") == LOCK
            assert watcher.loaded
        finally:
            watching.cancel()
        assert not [e for e in session.errors if "permissions violation" in e]

        await assert_publish_refused(
            client, session, f"$KV.{LOCKS_BUCKET}.{LOCK.target}", LOCKS_STREAM
        )
        # Nor may it read the aggregator's way (direct get) or manage the bucket.
        for subject in (
            f"$JS.API.DIRECT.GET.{LOCKS_STREAM}.$KV.{LOCKS_BUCKET}.{LOCK.target}",
            f"$JS.API.STREAM.PURGE.{LOCKS_STREAM}",
            f"$JS.API.CONSUMER.DELETE.{LOCKS_STREAM}.x",
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await client.request(subject, b"{}", timeout=REFUSAL_WAIT)
            await session.violation(subject)


# -- the aggregator's user -----------------------------------------------------------------


async def test_the_aggregator_publishes_reviews_but_no_column_event(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    before = await last_seq(server, passwords, EVENTS_STREAM)
    async with connected(server, AGGREGATOR_USER, passwords) as (client, session):
        await assert_publish_refused(client, session, "cotn.events.collaboration.2a.milestone")
        await assert_publish_refused(client, session, "cotn.events.business.3a.kpi")
        # What it is for: status events (and dead letters) are acknowledged.
        ack = await client.jetstream(timeout=5).publish(
            "cotn.status.business.3a", b"{}", stream=STATUS_STREAM
        )
        assert ack.stream == STATUS_STREAM
        # And the office's reviews, of the review kind only.
        review = await client.jetstream(timeout=5).publish(
            "cotn.events.business.3a.review", b"{}", stream=EVENTS_STREAM
        )
        assert review.stream == EVENTS_STREAM and review.seq == before + 1
    assert await last_seq(server, passwords, EVENTS_STREAM) == before + 1


async def test_the_aggregator_reads_and_acks_only_its_durable_consumer(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    async with connected(server, ingest_user("devolution"), passwords) as (client, _):
        await client.jetstream(timeout=5).publish(
            "cotn.events.devolution.1a.milestone", b"{}", stream=EVENTS_STREAM
        )
    async with connected(server, AGGREGATOR_USER, passwords) as (client, session):
        js = client.jetstream(timeout=5)
        pull = await js.pull_subscribe(
            "cotn.events.>", durable=AGGREGATOR_DURABLE, stream=EVENTS_STREAM
        )
        messages = await pull.fetch(100, timeout=5)
        assert messages
        for message in messages:
            await message.ack_sync()
        # Another consumer of its own making would bypass the durable one: refused.
        with pytest.raises(TimeoutError):
            await client.jetstream(timeout=REFUSAL_WAIT).pull_subscribe(
                "cotn.events.>", durable="sneaky", stream=EVENTS_STREAM
            )
        await session.violation(f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.sneaky")


async def test_without_the_right_password_nobody_connects(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    for url in (
        server.url,
        with_credentials(server.url, AGGREGATOR_USER, passwords[ADMIN_USER]),
        with_credentials(server.url, "cotn-intruder", "guess"),
    ):
        with pytest.raises(nats.errors.Error):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)


# -- the real services, as these users -------------------------------------------------------


async def test_the_services_run_as_their_users_end_to_end(
    server: NatsServer, passwords: dict[str, str], tmp_path: Path, sqlite_url: str
) -> None:
    from services.aggregator.app import create_app

    token = TokenStore.in_dir(tmp_path).create("greater-manchester")[0]
    ingest = settings_for(
        url_as(server, ingest_user("devolution"), passwords),
        tmp_path,
        column="devolution",
        manage_streams=False,
    )
    aggregator = create_app(
        aggregator_settings_for(
            url_as(server, AGGREGATOR_USER, passwords), sqlite_url, manage_streams=False
        ),
        clock=lambda: datetime.now(UTC),
    )
    event = milestone(source="greater-manchester", proposal="1a", milestone="joint-position")
    async with (
        aggregator.router.lifespan_context(aggregator),
        running(ingest, token) as devolution,
    ):
        assert (await devolution.post(event)).status_code == 202
        transport = httpx.ASGITransport(aggregator)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg") as read:

            async def stored() -> list[dict] | None:
                answer = await read.get("/v1/events", params={"proposal": "1a"})
                if answer.status_code == 503:  # the schema is still being migrated
                    return None
                found = [e for e in answer.json()["events"] if e["id"] == event["id"]]
                return found or None

            await eventually(stored, "the event in the aggregator's store")
            assert (await read.get("/readyz")).status_code == 200


# -- the configurations that carry these permissions ------------------------------------------


def test_the_deployment_config_is_generated_from_the_code(catalogue: Catalogue) -> None:
    columns = [c.id for c in catalogue.columns]
    committed = DEPLOY_CONFIG.read_text(encoding="utf-8")
    assert committed == deployment_config(columns), (
        "run `cotn nats config --out deploy/nats/nats.conf`"
    )
    for user in user_names(columns):
        assert f"${password_variable(user)}" in committed  # from the environment, never inline


def test_nats_server_accepts_the_deployment_config(tmp_path: Path, catalogue: Catalogue) -> None:
    env = {password_variable(u): "x" for u in user_names(c.id for c in catalogue.columns)} | {
        "PATH": os.environ.get("PATH", "")
    }
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(DEPLOY_CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_cotn_run_gives_each_service_its_own_user_out_of_argv(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    stack = plan_stack(
        catalogue,
        catalogue_path=DEFAULT_CATALOGUE,
        data_dir=tmp_path,
        port=18000,
        nats_url=None,
        database_url=None,
    )
    assert stack.nats is not None
    users_file = json.loads(stack.nats.files[tmp_path / USERS_FILE])
    assert set(users_file) == set(user_names(catalogue.column_by_id))
    config = next(text for path, text in stack.nats.files.items() if path.suffix == ".conf")
    assert "authorization {" in config
    for name, part in [("aggregator", stack.aggregator), *stack.columns.items()]:
        user = AGGREGATOR_USER if name == "aggregator" else ingest_user(name)
        prefix = "COTN_AGGREGATOR_" if name == "aggregator" else "COTN_INGEST_"
        url = part.env[f"{prefix}NATS_URL"]
        assert url.startswith(f"nats://{user}:{users_file[user]}@127.0.0.1:")
        assert part.env[f"{prefix}MANAGE_STREAMS"] == "false"
        assert not any(users_file[user] in arg for arg in part.argv)
    assert stack.admin_url.startswith(f"nats://{ADMIN_USER}:{users_file[ADMIN_USER]}@")
    assert users_file[ADMIN_USER] not in stack.nats_url


def test_the_run_writes_its_secrets_for_the_owner_only(tmp_path: Path) -> None:
    secret = tmp_path / "nats" / "nats-server.conf"
    part = Part(
        name="stand-in",
        argv=[sys.executable, "-c", "pass"],
        log=tmp_path / "stand-in.log",
        port=0,
        ready_path=None,
        files={secret: "password: x"},
    )
    supervisor = Supervisor([part], report=lambda line: None)
    supervisor.start_all()
    supervisor.stop_all()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


# -- the placeholder password ---------------------------------------------------------------


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("COTN_ENV", raising=False)
    yield


PLACEHOLDER_URL = f"nats://{AGGREGATOR_USER}:{PLACEHOLDER_SECRET}@nats:4222"


@pytest.mark.usefixtures("production")
def test_the_placeholder_password_is_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        AggregatorSettings(nats_url=PLACEHOLDER_URL)
    with pytest.raises(ValidationError, match="placeholder"):
        IngestSettings(column="business", nats_url=PLACEHOLDER_URL)
    started = CliRunner().invoke(cotn, ["serve", "aggregator", "--nats-url", PLACEHOLDER_URL])
    assert started.exit_code == EXIT_BAD_INPUT and "placeholder" in started.stderr
    monkeypatch.setenv("COTN_ENV", "staging")
    with pytest.raises(ValidationError, match="placeholder"):
        IngestSettings(column="business", nats_url=PLACEHOLDER_URL)

    monkeypatch.setenv("COTN_ENV", "development")
    assert IngestSettings(column="business", nats_url=PLACEHOLDER_URL).environment == "development"
    assert str(AggregatorSettings(nats_url=PLACEHOLDER_URL).nats_url) == PLACEHOLDER_URL


@pytest.mark.usefixtures("production")
def test_real_passwords_and_no_password_are_fine() -> None:
    real = f"nats://{AGGREGATOR_USER}:{generate_passwords([])[ADMIN_USER]}@nats:4222"
    assert AggregatorSettings(nats_url=real).nats_inbox_prefix == f"_INBOX_{AGGREGATOR_USER}"
    assert AggregatorSettings().nats_inbox_prefix == "_INBOX"


# -- a list of servers -----------------------------------------------------------------------


@pytest.mark.usefixtures("production")
def test_each_url_of_a_server_list_is_checked_and_shown_without_its_password() -> None:
    real = f"nats://{AGGREGATOR_USER}:{generate_passwords([])[ADMIN_USER]}@nats-1:4222"
    seeds = f"{real},{PLACEHOLDER_URL}"
    with pytest.raises(ValidationError, match="placeholder"):
        AggregatorSettings(nats_url=seeds)  # the placeholder of the second seed counts too
    listed = AggregatorSettings(nats_url=f"{real}, nats://{AGGREGATOR_USER}:pw2@nats-2:4222")
    assert listed.nats_servers == [real, f"nats://{AGGREGATOR_USER}:pw2@nats-2:4222"]
    assert listed.nats_inbox_prefix == f"_INBOX_{AGGREGATOR_USER}"
    assert without_credentials(listed.nats_url) == "nats://nats-1:4222,nats://nats-2:4222"
    # One inbox prefix for the connection: every seed must log in as the same user.
    with pytest.raises(ValidationError, match="same user"):
        IngestSettings(column="business", nats_url=f"{real},nats://other:pw@nats-2:4222")
    with pytest.raises(ValidationError):
        IngestSettings(column="business", nats_url="nats://nats-1:4222,http://nats-2:80")


def test_cotn_nats_setup_uses_the_next_seed_when_the_first_is_down(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    admin = url_as(server, ADMIN_USER, passwords)
    down = with_credentials(f"nats://127.0.0.1:{free_port()}", ADMIN_USER, passwords[ADMIN_USER])
    seeds = f"{down},{admin}"

    result = CliRunner().invoke(cotn, ["nats", "setup", "--nats-url", seeds])

    assert result.exit_code == 0, result.output
    assert passwords[ADMIN_USER] not in result.output


# -- cotn nats setup --------------------------------------------------------------------------


def test_cotn_nats_setup_makes_the_streams_as_the_administrator(
    server: NatsServer, passwords: dict[str, str]
) -> None:
    admin = url_as(server, ADMIN_USER, passwords)

    result = CliRunner().invoke(cotn, ["nats", "setup", "--nats-url", admin])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Streams {EVENTS_STREAM}, ")
    assert passwords[ADMIN_USER] not in result.output  # the URL is shown without it


def test_cotn_nats_setup_refuses_the_placeholder(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COTN_ENV", raising=False)
    placeholder = with_credentials(server.url, ADMIN_USER, PLACEHOLDER_SECRET)
    refused = CliRunner().invoke(cotn, ["nats", "setup", "--nats-url", placeholder])
    assert refused.exit_code == EXIT_BAD_INPUT
    assert "placeholder" in refused.stderr
