"""Settings of the aggregator: read from ``COTN_AGGREGATOR_*``; the defaults run on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.aggregator.snapshot import WAIT_PROPOSALS
from shared.bus import StreamSettings
from shared.natsauth import (
    DEVELOPMENT,
    ENVIRONMENT_VARIABLE,
    PLACEHOLDER_SECRET,
    NatsClientSettings,
)

PLACEHOLDER_DATABASE_PASSWORDS = (PLACEHOLDER_SECRET, "cotn")
"""The deployment files' placeholder, and ``cotn``, what they defaulted to before it."""


def async_database_url(url: str) -> str:
    """The URL with its async driver: ``postgresql://`` -> asyncpg, ``sqlite://`` -> aiosqlite."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    return url


def refuse_placeholder_database(url: str, environment: str) -> None:
    """Raise unless the database URL's password is a real one or this is development."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return  # not a URL SQLAlchemy reads: the engine says so with its own message
    if password in PLACEHOLDER_DATABASE_PASSWORDS and environment != DEVELOPMENT:
        raise ValueError(
            f"the database password is the placeholder {password!r}: set a real one "
            f"(COTN_POSTGRES_PASSWORD in docker-compose), or {ENVIRONMENT_VARIABLE}="
            f"{DEVELOPMENT} on a development machine"
        )


class AggregatorSettings(NatsClientSettings):
    """How the aggregator consumes, stores and serves.

    ``nats_url``, ``manage_streams`` and ``COTN_ENV`` come from
    :class:`shared.natsauth.NatsClientSettings`.
    """

    model_config = SettingsConfigDict(env_prefix="COTN_AGGREGATOR_", frozen=True, extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./.cotn/cotn.db",
        description="SQLAlchemy URL: SQLite (aiosqlite) embedded, PostgreSQL (asyncpg) deployed",
    )
    catalogue: Path | None = Field(
        default=None, description="Catalogue file; None uses $COTN_CATALOGUE or the shipped one"
    )
    data_dir: Path = Field(
        default=Path(".cotn"), description="Where tokens.json lives: office tokens review"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    batch_size: int = Field(default=500, ge=1, description="Messages per pull and transaction")
    batch_timeout_seconds: float = Field(
        default=0.2, gt=0, description="Longest wait to fill a batch: the latency of a quiet stream"
    )
    ack_wait_seconds: float = Field(
        default=30.0, gt=0, description="Redelivery of a message not acknowledged by then"
    )
    max_ack_pending: int = Field(
        default=2000, ge=1, description="Unacknowledged messages the consumer may hold at once"
    )
    retry_delay_min_seconds: float = Field(default=1.0, gt=0)
    retry_delay_max_seconds: float = Field(default=5.0, gt=0)
    status_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often health is re-rated for time-driven changes"
    )
    status_min_gap_seconds: float = Field(
        default=1.0, ge=0, description="Least time between two passes, however busy the stream"
    )
    board_wait_proposals: int = Field(
        default=WAIT_PROPOSALS,
        ge=0,
        description="A live read waits for the board's next build when it rates again at most "
        "this many proposals; a larger build runs while live reads are answered from the last "
        "complete board",
    )
    backlog_interval_seconds: float = Field(default=5.0, gt=0)
    office_metrics_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How old /metrics lets its reporting and review gauges grow before it "
        "reads them again, in the background",
    )
    graceful_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Time a batch in progress may take to finish on shutdown"
    )
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    migrate_on_start: bool = Field(default=True, description="Run the migrations at start-up")

    stream_replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_seconds: float = Field(default=120.0, gt=0)

    # Test-only: the fault tests (tests/faults) crash the process at an exact point.
    fault: Literal["before_commit", "after_commit", "mid_batch"] | None = Field(
        default=None,
        description="For fault tests only, never in a deployment: SIGKILL the aggregator at "
        "this point of batch number fault_batch (see consumer.FaultHook)",
    )
    fault_batch: int = Field(
        default=1, ge=1, description="For fault tests only: the batch (from 1) that `fault` hits"
    )
    # Bench-only: figure 9 (bench/design.py) times the live board against this route.
    bench_static_bytes: int | None = Field(
        default=None,
        ge=1,
        description="For the bench only, never in a deployment: serve GET /bench/static, a "
        "body of this many bytes, as the baseline of the read side's latency",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @model_validator(mode="after")
    def _room_for_batches(self) -> Self:
        # Two batches in flight (one being stored, one being redelivered after a nak) must
        # fit, or the server silently caps each fetch below batch_size.
        if self.max_ack_pending < 2 * self.batch_size:
            raise ValueError(
                f"max_ack_pending ({self.max_ack_pending}) must be at least twice "
                f"batch_size ({self.batch_size})"
            )
        if self.retry_delay_max_seconds < self.retry_delay_min_seconds:
            raise ValueError("retry_delay_max_seconds must not be below retry_delay_min_seconds")
        return self

    @model_validator(mode="after")
    def _no_placeholder_database_password(self) -> Self:
        refuse_placeholder_database(self.database_url, self.environment)
        return self

    def stream_settings(self) -> StreamSettings:
        """How the aggregator creates or updates the project's streams at start-up."""
        return StreamSettings(
            replicas=self.stream_replicas,
            duplicate_window_seconds=self.duplicate_window_seconds,
        )
