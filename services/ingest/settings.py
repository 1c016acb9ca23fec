"""Settings of a column service: one class, three deployments that differ by ``column``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, NatsDsn
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus import StreamSettings


class IngestSettings(BaseSettings):
    """Read from ``COTN_INGEST_*`` environment variables; the defaults run on one machine."""

    model_config = SettingsConfigDict(env_prefix="COTN_INGEST_", frozen=True, extra="ignore")

    column: str = Field(description="The catalogue column this service accepts events for")
    nats_url: NatsDsn = NatsDsn("nats://127.0.0.1:4222")
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

    def stream_settings(self) -> StreamSettings:
        """How this service creates or updates the project's streams at start-up."""
        return StreamSettings(
            replicas=self.stream_replicas,
            duplicate_window_seconds=self.duplicate_window_seconds,
        )
