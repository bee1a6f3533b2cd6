"""The API's settings (env prefix `ZAPGATE_API_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import SettingsConfigDict

from zapgate.api.domain import RETRY_SCHEDULE
from zapgate.runtime.settings import Duration
from zapgate.runtime.token_crypto import ProviderTokenSettings


class ApiSettings(ProviderTokenSettings):
    """`token_keys` (`ZAPGATE_API_TOKEN_KEYS`, the API's own keys, not health's or the
    sender's) encrypt the subscriptions' signing secrets at rest, with the same mechanism and
    rotation as instance tokens (runtime.token_crypto, docs/runbook.md)."""

    model_config = SettingsConfigDict(env_prefix="ZAPGATE_API_", extra="ignore", frozen=True)

    http_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - the API answers other systems from outside
        description="Interface the HTTP API listens on.",
    )
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP API.")
    rate_limit_requests: float = Field(
        default=20, gt=0, description="Requests one API key may make per `rate_limit_period`."
    )
    rate_limit_period: Duration = Field(default=timedelta(seconds=1), gt=timedelta(0))
    key_cache_ttl: Duration = Field(
        default=timedelta(seconds=60),
        ge=timedelta(0),
        description="How long a verified key is remembered (a revocation takes this long).",
    )
    request_timeout: Duration = Field(
        default=timedelta(seconds=5),
        gt=timedelta(0),
        description="Wait for the sender's or health's NATS answer (outcome, cancel, health).",
    )
    webhook_retry_for: Duration = Field(
        default=timedelta(hours=26),
        gt=timedelta(0),
        description="How long an outbound event is retried after its first attempt (keep >= 24 h).",
    )
    webhook_retry_schedule: tuple[float, ...] = Field(
        default=RETRY_SCHEDULE,
        description="Seconds between attempts (Standard Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h); the last repeats until `webhook_retry_for`.",
    )
    webhook_timeout: Duration = Field(
        default=timedelta(seconds=10), gt=timedelta(0), description="One outbound POST."
    )
    webhook_concurrency: int = Field(default=16, ge=1, description="Outbound POSTs at once.")
    webhook_allow_loopback: bool = Field(
        default=False,
        description="Let subscriptions point at loopback addresses (dev and tests only: the "
        "simulator and test receivers run on 127.0.0.1; refused in prod). Private, link-local "
        "and metadata addresses are refused always.",
    )
    consumer_prefix: str = Field(default="api", pattern=r"^[A-Za-z0-9_\-]+$")
    retry_timeout: Duration = Field(
        default=timedelta(seconds=35),
        gt=timedelta(0),
        description="Wait for the sender to decide a retry (it runs the preflight again).",
    )

    @field_validator("webhook_allow_loopback")
    @classmethod
    def _loopback_is_dev_only(cls, value: bool, info: ValidationInfo) -> bool:  # noqa: FBT001 - pydantic's validator signature
        if value and info.data.get("environment", "prod") == "prod":
            raise PydanticCustomError(
                "WEBHOOK_LOOPBACK_IN_PROD",
                "WEBHOOK_LOOPBACK_IN_PROD: webhook_allow_loopback: em produção os webhooks "
                "nunca vão para endereços de loopback; desligue esta opção.",
            )
        return value
