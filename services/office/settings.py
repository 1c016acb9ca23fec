"""Settings of the office web board: from ``COTN_OFFICE_*``; the defaults run on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import AnyHttpUrl, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.natsauth import DEVELOPMENT, ENVIRONMENT_VARIABLE, PLACEHOLDER_SECRET

DEFAULT_PORT = 8004
"""``cotn run``'s default: after the aggregator (8000) and the three column services."""


class OfficeSettings(BaseSettings):
    """How the office board reads the aggregator and who may see it."""

    model_config = SettingsConfigDict(env_prefix="COTN_OFFICE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    aggregator_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="Base URL of the aggregator's read API",
    )
    data_dir: Path = Field(
        default=Path(".cotn"), description="Where tokens.json lives (for the login)"
    )
    catalogue: Path | None = Field(
        default=None,
        description="Catalogue file, for the programme's start only (the quarters the "
        "exports page offers); None uses $COTN_CATALOGUE or the shipped one",
    )
    secret_key: str = Field(
        default=PLACEHOLDER_SECRET,
        min_length=8,
        description="Signs the session cookie; the placeholder is refused outside development",
    )
    poll_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often the board is read from the aggregator"
    )
    stale_after_seconds: float = Field(
        default=10.0, gt=0, description="A board older than this is shown as stale"
    )
    request_timeout_seconds: float = Field(default=5.0, gt=0)
    export_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long an export may take the aggregator (seconds each, at scale)",
    )
    session_max_age_seconds: int = Field(default=8 * 3600, ge=60)
    environment: str = Field(
        default="production",
        validation_alias=ENVIRONMENT_VARIABLE,
        description="`development` opens the read pages to loopback clients without a login "
        "and accepts the placeholder secret key",
    )

    @property
    def development(self) -> bool:
        return self.environment == DEVELOPMENT

    @property
    def aggregator(self) -> str:
        """The aggregator's base URL without a trailing slash."""
        return str(self.aggregator_url).rstrip("/")

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> Self:
        if self.secret_key == PLACEHOLDER_SECRET and not self.development:
            raise ValueError(
                f"the secret key is the placeholder {PLACEHOLDER_SECRET!r}: set a real one "
                f"(COTN_OFFICE_SECRET_KEY), or {ENVIRONMENT_VARIABLE}={DEVELOPMENT} on a "
                "development machine"
            )
        return self
