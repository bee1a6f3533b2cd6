"""The API's settings (env prefix `ZAPGATE_API_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zapgate.api.domain import RETRY_SCHEDULE
from zapgate.runtime.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_API_", extra="ignore", frozen=True)

    http_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - the API answers other systems from outside
        description="Interface the HTTP API listens on.",
    )
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP API.")
    rate_limit_requests: float = Field(
        default=20, gt=0, description="Requests one API key may make per `rate_limit_period`."
    )
    rate_limit_period: timedelta = Field(default=timedelta(seconds=1), gt=timedelta(0))
    key_cache_ttl: timedelta = Field(
        default=timedelta(seconds=60),
        ge=timedelta(0),
        description="How long a verified key is remembered (a revocation takes this long).",
    )
    request_timeout: timedelta = Field(
        default=timedelta(seconds=5),
        gt=timedelta(0),
        description="Wait for the sender's or health's NATS answer (outcome, cancel, health).",
    )
    webhook_retry_for: timedelta = Field(
        default=timedelta(hours=26),
        gt=timedelta(0),
        description="How long an outbound event is retried after its first attempt (keep >= 24 h).",
    )
    webhook_retry_schedule: tuple[float, ...] = Field(
        default=RETRY_SCHEDULE,
        description="Seconds between attempts (Standard Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h); the last repeats until `webhook_retry_for`.",
    )
    webhook_timeout: timedelta = Field(
        default=timedelta(seconds=10), gt=timedelta(0), description="One outbound POST."
    )
    webhook_concurrency: int = Field(default=16, ge=1, description="Outbound POSTs at once.")
    consumer_prefix: str = Field(default="api", pattern=r"^[A-Za-z0-9_\-]+$")
    retry_timeout: timedelta = Field(
        default=timedelta(seconds=35),
        gt=timedelta(0),
        description="Wait for the sender to decide a retry (it runs the preflight again).",
    )
