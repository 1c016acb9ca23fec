"""Who may do what on NATS: one user per service, each with the least it needs.

The permissions are data, derived from the catalogue's columns and the stream names in
:mod:`shared.bus`, and rendered into the nats-server configuration of both the embedded
run (``cotn run``, passwords generated per run) and the deployment
(``deploy/nats/nats.conf``, passwords from the environment). Found by testing against a
real nats-server (``tests/security/test_nats_permissions.py``):

- a column service publishes its own column's events (``cotn.events.<column>.>``) and asks
  for the events stream's info (its readiness probe); a JetStream publish acknowledgement
  comes back on its own inbox;
- the aggregator reads its durable consumer (info, next batch, acks and naks) and publishes
  status events and dead letters;
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
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, NatsDsn, model_validator
from pydantic_settings import BaseSettings

from shared.bus import (
    AGGREGATOR_DURABLE,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    STATUS_SUBJECTS,
)

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


def user_of(url: str) -> str | None:
    """The user name a ``nats://user:password@host:port`` URL logs in with, if any."""
    name = urlsplit(url).username
    return unquote(name) if name else None


def password_of(url: str) -> str | None:
    secret = urlsplit(url).password
    return unquote(secret) if secret is not None else None


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user``; both are percent-encoded, as URLs require."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def without_credentials(url: str) -> str:
    """``url`` without user and password, to show or log."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


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


def ingest_permissions(column: str) -> Permissions:
    """A column service: its own column's events, and the events stream's info."""
    return Permissions(
        publish=(f"cotn.events.{column}.>", f"$JS.API.STREAM.INFO.{EVENTS_STREAM}"),
        subscribe=(f"{inbox_prefix(ingest_user(column))}.>",),
    )


def aggregator_permissions() -> Permissions:
    """The aggregator: its durable consumer, status events and dead letters."""
    consumer = f"{EVENTS_STREAM}.{AGGREGATOR_DURABLE}"
    return Permissions(
        publish=(
            f"$JS.API.CONSUMER.INFO.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{consumer}",
            f"$JS.ACK.{consumer}.>",
            STATUS_SUBJECTS,
            DLQ_SUBJECTS,
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
    """Raise unless the URL's password is a real one or this is a development deployment."""
    if password_of(url) == PLACEHOLDER_SECRET and environment != DEVELOPMENT:
        raise ValueError(
            f"the NATS password is the placeholder {PLACEHOLDER_SECRET!r}: set a real one "
            f"(or {ENVIRONMENT_VARIABLE}={DEVELOPMENT} on a development machine)"
        )


class NatsClientSettings(BaseSettings):
    """What every service needs to reach NATS; subclasses set the environment prefix.

    Credentials travel in the URL (``nats://user:password@host:4222``); the placeholder
    password of the deployment files is refused unless ``COTN_ENV=development``.
    """

    nats_url: NatsDsn = NatsDsn("nats://127.0.0.1:4222")
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
        refuse_placeholder(str(self.nats_url), self.environment)
        return self

    @property
    def nats_inbox_prefix(self) -> str:
        """This service's own inbox prefix, the only one its NATS user may subscribe to."""
        return inbox_prefix(user_of(str(self.nats_url)))
