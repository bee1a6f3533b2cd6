"""Ingest settings (`ZAPGATE_INGEST_*`). Built in `create_app` or by tests, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from zapgate.runtime.settings import ServiceSettings, refuse_placeholder_secret

ONE_MIB = 1024 * 1024


class IngestSettings(ServiceSettings):
    """Where webhooks come in, which secrets open the door, and how hard to try to keep them."""

    model_config = SettingsConfigDict(env_prefix="ZAPGATE_INGEST_", extra="ignore", frozen=True)

    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        min_length=1,
        description="Valid path secrets (comma-separated in the environment); several at once "
        "let a secret be rotated without downtime.",
    )
    http_host: str = "0.0.0.0"  # noqa: S104 - W-API calls the webhook URL from outside
    http_port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=16 * ONE_MIB,
        ge=1024,
        description="Hard cap on a webhook body (bytes); above it a 413 and a quarantine entry "
        "with the ids read from its first bytes.",
    )
    inline_event_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        description="Largest event published inline; a larger body is kept whole in the "
        "JetStream Object Store and the event carries a reference.",
    )
    header_read_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client may take to send a request's headers."
    )
    body_read_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client may take to send a request's body."
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open HTTP connections per replica; more are answered 503 and counted.",
    )
    metrics_max_instances: int = Field(
        default=1000,
        ge=1,
        description="Distinct instance ids the per-instance metrics label; later ones count as "
        "`_other`, so a payload can never grow /metrics without bound.",
    )
    spool_dir: Path = Path("var/ingest-spool")
    publish_timeout: float = Field(default=2.0, gt=0)
    spool_drain_interval: float = Field(default=0.5, gt=0)
    archiver_enabled: bool = True
    archiver_batch: int = Field(default=256, ge=1, le=10_000)
    archiver_durable: str = "ingest-archiver"
    archiver_retry_delay: float = Field(default=1.0, gt=0)
    archiver_ack_wait: float = Field(
        default=15.0, gt=0, description="Seconds before an unacked batch is redelivered."
    )
    access_log: bool = True

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_are_real(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        environment = str(info.data.get("environment", "dev"))
        for secret in value:
            refuse_placeholder_secret(secret, environment, "webhook_secrets")
        return value
