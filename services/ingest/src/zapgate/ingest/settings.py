"""Ingest settings (`ZAPGATE_INGEST_*`). Built in `create_app` or by tests, never at import.

Durations are `timedelta` in code and ISO 8601 in the environment (`PT10S`, `PT0.5S`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from zapgate.runtime.settings import (
    Duration,
    PositiveDuration,
    ServiceSettings,
    refuse_placeholder_secret,
)

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
    header_read_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description="Time a client may take to send a request's headers.",
    )
    body_read_timeout: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="Time a client may take to send a request's body.",
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
    publish_timeout: PositiveDuration = Field(
        default=timedelta(seconds=2),
        description="Wait for JetStream's ack of one publish; past it the webhook is spooled.",
    )
    spool_drain_interval: PositiveDuration = Field(
        default=timedelta(milliseconds=500),
        description="How often the spool is retried while NATS is away.",
    )
    archiver_enabled: bool = True
    archiver_process: bool = Field(
        default=True,
        description="`zapgate-ingest run` runs the archiver in a child process of its own "
        "(`zapgate-ingest archive`: own event loop and core, restarted if it exits, stopped with "
        "the gateway), so archiving never stalls the webhook route; false: on the gateway's loop.",
    )
    archiver_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Scheduling niceness added to the archiver process (`archiver_process`): "
        "on a busy machine the webhook route gets the CPU first and the archiver catches up "
        "from JetStream when there is room (0: same priority as the gateway).",
    )
    archiver_probe_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Probe port (`/healthz`, `/readyz`, `/metrics` with the archiver's consumer "
        "and dead-letter counters) of the archiver process; 0: `zapgate-ingest run` picks a "
        "free port on `probe_host` (logged in `archiver_started`). The gateway's own `/metrics` "
        "reads it on every scrape and serves the archiver's samples too, labelled "
        '`process="archiver"`: scrape the gateway only.',
    )
    archiver_batch: int = Field(
        default=256, ge=1, le=10_000, description="Most webhooks stored in one transaction."
    )
    archiver_retry_delay: PositiveDuration = Field(
        default=timedelta(seconds=1),
        description="Redelivery delay while the database is down, and after a message's first "
        "failure (doubling per failure).",
    )
    archiver_ack_wait: PositiveDuration = Field(
        default=timedelta(seconds=15),
        description="Time before an unacknowledged delivery is redelivered.",
    )
    archiver_linger: Duration = Field(
        default=timedelta(milliseconds=200),
        description="After a fetch of fewer than `archiver_batch` webhooks, how long the "
        "archiver waits for more before storing them (one transaction, one line, for all): "
        "when webhooks trickle in, fewer and fuller batches cost less CPU per webhook; each "
        "webhook reaches the database at most this much later. PT0S: no wait. At most a quarter "
        "of `archiver_ack_wait`.",
    )
    archiver_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failures of a message itself (never database or NATS outages) before it "
        "is dead-lettered to `ingest_dead_letters` and `zg.deadletter.ingest.archiver`.",
    )
    access_log: bool = True

    @field_validator("archiver_linger")
    @classmethod
    def _linger_below_ack_wait(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        ack_wait = info.data.get("archiver_ack_wait")
        if value < timedelta(0):
            raise ValueError("archiver_linger cannot be negative")
        if isinstance(ack_wait, timedelta) and value > ack_wait / 4:
            raise ValueError("archiver_linger must be at most a quarter of archiver_ack_wait")
        return value

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
