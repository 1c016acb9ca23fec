"""Who may do what on NATS: one user per service, each with the least it needs.

The permissions are data, derived from the catalogue's columns and the stream names in
:mod:`shared.bus`, and rendered into the nats-server configuration of both the embedded
run (``cotn run``, passwords generated per run) and the deployment
(``deploy/nats/nats.conf``, passwords from the environment). Found by testing against a
real nats-server (``tests/security/test_nats_permissions.py``):

- a column service publishes its own column's events (``cotn.events.<column>.>``) and asks
  for the events stream's info (its readiness probe); a JetStream publish acknowledgement
  comes back on its own inbox; it watches the locks bucket read-only (an ordered consumer
  it creates, delivering into its own inbox, whose flow control it answers) and may not
  put a lock;
- the aggregator reads its durable consumer (info, next batch, acks and naks), publishes
  status events, dead letters and the office's reviews (``cotn.events.*.*.review``, no
  other kind), and puts and deletes locks;
- streams and the consumer are created by a separate administrator (``cotn nats setup``),
  so no service can change or purge a stream.

Every user gets an inbox prefix of its own (``_INBOX_<user>``): with the shared ``_INBOX.>``
a column service could subscribe to the aggregator's pull deliveries and read every
column's events.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, unquote, urlsplit

from pydantic import AfterValidator, Field, NatsDsn, TypeAdapter, model_validator
from pydantic_settings import BaseSettings

from shared.bus import (
    AGGREGATOR_DURABLE,
    CLAIMS_STREAM,
    CLAIMS_SUBJECTS,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    STATUS_SUBJECTS,
    event_subject,
)
from shared.kinds.review import KIND as REVIEW_KIND
from shared.reviews import LOCKS_STREAM, LOCKS_SUBJECTS

ADMIN_USER = "cotn-admin"
AGGREGATOR_USER = "cotn-aggregator"
DEFAULT_INBOX_PREFIX = "_INBOX"
USERS_FILE = "nats-users.json"

ENVIRONMENT_VARIABLE = "COTN_ENV"
DEVELOPMENT = "development"
PLACEHOLDER_SECRET = "change-me"
"""The password the deployment files carry until an operator sets real ones."""


def ingest_user(column: str) -> str:
    """The NATS user of a column service."""
    return f"cotn-ingest-{column}"


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix a client of ``user`` uses (and may subscribe to)."""
    return f"{DEFAULT_INBOX_PREFIX}_{user}" if user else DEFAULT_INBOX_PREFIX


def server_urls(urls: str) -> list[str]:
    """The URLs of ``urls``, one server or a comma-separated list of seeds of a cluster
    (``nats://a:4222,nats://b:4222``), in order; an entry without a scheme is ``nats://``."""
    entries = [entry.strip() for entry in urls.split(",") if entry.strip()]
    return [entry if "://" in entry else f"nats://{entry}" for entry in entries]


def _each(urls: str, change: Callable[[str], str]) -> str:
    return ",".join(change(url) for url in server_urls(urls))


def user_of(url: str) -> str | None:
    """The user name a ``nats://user:password@host:port`` URL (or each URL of a list) logs
    in with, if any; a list whose URLs log in as different users is refused."""
    users = {_user(u) for u in server_urls(url)}
    if len(users) > 1:
        raise ValueError("every URL of the NATS server list must log in as the same user")
    return users.pop() if users else None


def _user(url: str) -> str | None:
    name = urlsplit(url).username
    return unquote(name) if name else None


def password_of(url: str) -> str | None:
    """The password of a single ``nats://user:password@host:port`` URL, if any."""
    secret = urlsplit(url).password
    return unquote(secret) if secret is not None else None


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (or each URL of a list) logging in as ``user``; both are percent-encoded."""

    def one(entry: str) -> str:
        parts = urlsplit(entry)
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()

    return _each(url, one)


def without_credentials(url: str) -> str:
    """``url`` (or each URL of a list) without user and password, to show or log."""

    def one(entry: str) -> str:
        parts = urlsplit(entry)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()

    return _each(url, one)


# -- permissions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish to and subscribe to (nothing else)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True)
class BusUser:
    """A NATS user; ``password`` is a literal or, starting with ``$``, an environment variable."""

    name: str
    password: str
    permissions: Permissions


def admin_permissions() -> Permissions:
    """Stream and consumer administration through the JetStream API, and nothing else."""
    return Permissions(publish=("$JS.API.>",), subscribe=(f"{inbox_prefix(ADMIN_USER)}.>",))


def bucket_reads(stream: str, subjects: str) -> tuple[str, ...]:
    """A key-value bucket's info and its direct gets (how nats-py opens and reads one)."""
    return (f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}.{subjects}")


def bucket_watch(stream: str, subjects: str) -> tuple[str, ...]:
    """Watching a bucket: nats-py's ordered consumer, created unnamed (the subject nats-py
    uses) or named with its filter (nats-server 2.10+ clients), its info, and the answers
    to its flow control. Deliveries come to the watcher's own inbox."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.*.{subjects}",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    )


def ingest_permissions(column: str) -> Permissions:
    """A column service: its own column's events, the events stream's info, the claims
    bucket (claim, read and withdraw a claim; see services/ingest/claims.py) and a watch of
    the locks bucket (services/ingest/locks.py), which it may not write."""
    return Permissions(
        publish=(
            f"cotn.events.{column}.>",
            f"$JS.API.STREAM.INFO.{EVENTS_STREAM}",
            CLAIMS_SUBJECTS,
            *bucket_reads(CLAIMS_STREAM, CLAIMS_SUBJECTS),
            f"$JS.API.STREAM.INFO.{LOCKS_STREAM}",
            *bucket_watch(LOCKS_STREAM, LOCKS_SUBJECTS),
        ),
        subscribe=(f"{inbox_prefix(ingest_user(column))}.>",),
    )


def aggregator_permissions() -> Permissions:
    """The aggregator: its durable consumer, status events and dead letters, the office's
    reviews (events of the review kind only, acknowledged on its inbox) and the locks they
    set or lift (put, delete, read)."""
    consumer = f"{EVENTS_STREAM}.{AGGREGATOR_DURABLE}"
    return Permissions(
        publish=(
            f"$JS.API.CONSUMER.INFO.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{consumer}",
            f"$JS.ACK.{consumer}.>",
            STATUS_SUBJECTS,
            DLQ_SUBJECTS,
            event_subject("*", "*", REVIEW_KIND.name),
            LOCKS_SUBJECTS,
            *bucket_reads(LOCKS_STREAM, LOCKS_SUBJECTS),
        ),
        subscribe=(f"{inbox_prefix(AGGREGATOR_USER)}.>",),
    )


def user_names(columns: Iterable[str]) -> list[str]:
    """Every user of the project: the administrator, the aggregator, one per column service."""
    return [ADMIN_USER, AGGREGATOR_USER, *(ingest_user(c) for c in columns)]


def bus_users(columns: Iterable[str], password: Callable[[str], str]) -> list[BusUser]:
    """The project's users with their permissions; ``password(user)`` gives each password."""
    columns = list(columns)
    permissions = {
        ADMIN_USER: admin_permissions(),
        AGGREGATOR_USER: aggregator_permissions(),
        **{ingest_user(c): ingest_permissions(c) for c in columns},
    }
    return [BusUser(name, password(name), permissions[name]) for name in user_names(columns)]


def password_variable(user: str) -> str:
    """The environment variable the deployment reads ``user``'s password from."""
    return "COTN_NATS_" + user.removeprefix("cotn-").replace("-", "_").upper() + "_PASSWORD"


# -- configuration ----------------------------------------------------------------------------


def _subjects(subjects: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def _password(value: str) -> str:
    # A $VARIABLE is resolved by nats-server from its environment; a literal is quoted.
    return value if value.startswith("$") else json.dumps(value)


def authorization_config(users: Iterable[BusUser]) -> str:
    """The ``authorization`` block of a nats-server configuration."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        lines += [
            f"    {{user: {json.dumps(user.name)}, password: {_password(user.password)},"
            " permissions: {",
            f"      publish: {{allow: {_subjects(user.permissions.publish)}}}",
            f"      subscribe: {{allow: {_subjects(user.permissions.subscribe)}}}",
            "    }}",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def deployment_authorization(columns: Iterable[str]) -> str:
    """The block ``deploy/nats/nats.conf`` carries: each password from its variable."""
    return authorization_config(bus_users(columns, lambda u: "$" + password_variable(u)))


# -- generated passwords of an embedded run ---------------------------------------------------


def generate_passwords(columns: Iterable[str]) -> dict[str, str]:
    """A fresh random password (256 bits) for every user."""
    return {user: secrets.token_urlsafe(32) for user in user_names(columns)}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def write_passwords(data_dir: Path, passwords: Mapping[str, str]) -> Path:
    """Keep the run's passwords in ``<data dir>/nats-users.json`` (mode 0600)."""
    path = data_dir / USERS_FILE
    write_private(path, json.dumps(dict(passwords), indent=2) + "\n")
    return path


# -- settings ---------------------------------------------------------------------------------


def refuse_placeholder(url: str, environment: str) -> None:
    """Raise unless the password of ``url`` (of each URL of a list) is a real one or this is
    a development deployment."""
    if environment == DEVELOPMENT:
        return
    if any(password_of(u) == PLACEHOLDER_SECRET for u in server_urls(url)):
        raise ValueError(
            f"the NATS password is the placeholder {PLACEHOLDER_SECRET!r}: set a real one "
            f"(or {ENVIRONMENT_VARIABLE}={DEVELOPMENT} on a development machine)"
        )


def _valid_servers(value: str) -> str:
    urls = server_urls(value)
    if not urls:
        raise ValueError("no NATS server URL given")
    for url in urls:
        _NATS_URL.validate_python(url)  # raises on a URL nats-py would not accept
    user_of(value)  # one user for every server of the list
    return ",".join(urls)


_NATS_URL: TypeAdapter[NatsDsn] = TypeAdapter(NatsDsn)

NatsServers = Annotated[str, AfterValidator(_valid_servers)]
"""One NATS URL or a comma-separated list of them (the seeds of a cluster)."""


class NatsClientSettings(BaseSettings):
    """What every service needs to reach NATS; subclasses set the environment prefix.

    Credentials travel in the URL (``nats://user:password@host:4222``); the placeholder
    password of the deployment files is refused unless ``COTN_ENV=development``. A
    comma-separated list names the seeds of a cluster: the client connects to the first that
    answers, so a service starts while a seed is down.
    """

    nats_url: NatsServers = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server URL, or a comma-separated list of a cluster's seeds; "
        "credentials in each URL",
    )
    manage_streams: bool = Field(
        default=True,
        description="Create or update the streams (and the aggregator's consumer) at start-up; "
        "off when `cotn nats setup` does it with the administrator's credentials",
    )
    environment: str = Field(
        default="production",
        validation_alias=ENVIRONMENT_VARIABLE,
        description="Only `development` accepts the placeholder password of the deployment "
        "files; any other value (production, staging, ...) refuses it",
    )

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> NatsClientSettings:
        refuse_placeholder(self.nats_url, self.environment)
        return self

    @property
    def nats_servers(self) -> list[str]:
        """The URLs of ``nats_url``, as nats-py's and FastStream's ``servers`` take them."""
        return server_urls(self.nats_url)

    @property
    def nats_inbox_prefix(self) -> str:
        """This service's own inbox prefix, the only one its NATS user may subscribe to."""
        return inbox_prefix(user_of(self.nats_url))
