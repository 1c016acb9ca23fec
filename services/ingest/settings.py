"""Settings of a column service: one class, three deployments that differ by ``column``."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.bus import StreamSettings
from shared.natsauth import NatsClientSettings


class IngestSettings(NatsClientSettings):
    """Read from ``COTN_INGEST_*`` environment variables; the defaults run on one machine.

    ``nats_url``, ``manage_streams`` and ``COTN_ENV`` come from
    :class:`shared.natsauth.NatsClientSettings`.
    """

    model_config = SettingsConfigDict(env_prefix="COTN_INGEST_", frozen=True, extra="ignore")

    column: str = Field(description="The catalogue column this service accepts events for")
    catalogue: Path | None = Field(
        default=None, description="Catalogue file; None uses $COTN_CATALOGUE or the shipped one"
    )
    data_dir: Path = Field(default=Path(".cotn"), description="Where tokens.json lives")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    max_body_bytes: int = Field(default=4 * 1024**2, gt=0)
    max_batch: int = Field(default=500, ge=1)

    stream_replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_seconds: float = Field(default=120.0, gt=0)
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=1000, ge=1, description="Publishes awaiting an ack")
    reconnect_wait_seconds: float = Field(default=2.0, gt=0)
    retry_after_seconds: int = Field(default=2, ge=1, description="Retry-After of a 503")

    # Counted in events, not requests: a batch of 500 costs what 500 single posts cost.
    rate_limit_per_second: float = Field(
        default=100.0, gt=0, description="Events a token may send per second, sustained"
    )
    rate_limit_burst: int = Field(
        default=5000, ge=1, description="Events a token may send at once (a backfill)"
    )
    last_used_flush_seconds: float = Field(
        default=60.0, gt=0, description="How often tokens' last use is written to disk"
    )

    @model_validator(mode="after")
    def _burst_holds_a_batch(self) -> Self:
        # Otherwise a full batch could never be accepted, however long the client waits.
        if self.rate_limit_burst < self.max_batch:
            raise ValueError(
                f"rate_limit_burst ({self.rate_limit_burst}) must be at least max_batch "
                f"({self.max_batch})"
            )
        return self

    def stream_settings(self) -> StreamSettings:
        """How this service creates or updates the project's streams at start-up."""
        return StreamSettings(
            replicas=self.stream_replicas,
            duplicate_window_seconds=self.duplicate_window_seconds,
        )
