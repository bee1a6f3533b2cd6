"""Health's settings (env prefix `ZAPGATE_HEALTH_`). Built in `create_app`, never at import."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.settings import ServiceSettings
from zapgate.wapi.client import DEFAULT_BASE_URL


class HealthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_HEALTH_", extra="ignore", frozen=True)

    wapi_base_url: str = DEFAULT_BASE_URL
    tick_interval: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))
    install_schedule: bool = Field(
        default=True, description="Install the tick's message schedule on startup."
    )
    restart_cooldown: timedelta = timedelta(minutes=30)
    provider_concurrency: int = Field(default=32, ge=1, le=1024)
    phone_max_age: timedelta = Field(
        default=timedelta(hours=1), description="Look the phone up again when older than this."
    )
    check_min_gap: timedelta | None = Field(
        default=None,
        description="An instance is not re-checked by a tick sooner than this "
        "(default: half the tick interval); protects against redelivered ticks.",
    )
    apply_batch_size: int = Field(default=200, ge=1, le=5000)
    operator_webhook_url: str | None = None
    operator_webhook_attempts: int = Field(default=3, ge=1, le=20)
    consumer_prefix: str = Field(default="health", pattern=r"^[A-Za-z0-9_\-]+$")

    @property
    def effective_check_min_gap(self) -> timedelta:
        return self.check_min_gap if self.check_min_gap is not None else self.tick_interval / 2
