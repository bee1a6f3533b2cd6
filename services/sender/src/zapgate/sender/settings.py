"""The sender's settings (env prefix `ZAPGATE_SENDER_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.settings import ServiceSettings


class SenderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_SENDER_", extra="ignore", frozen=True)

    wapi_base_url: str = "https://api.w-api.app/v1"
    min_send_gap: timedelta = Field(
        default=timedelta(seconds=1),
        ge=timedelta(0),
        description="Minimum time between two provider sends of one instance.",
    )
    live_check_timeout: timedelta = Field(default=timedelta(seconds=3), gt=timedelta(0))
    provider_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries when the provider certainly did not accept."
    )
    provider_backoff: timedelta = Field(default=timedelta(milliseconds=500), ge=timedelta(0))
    provider_backoff_cap: timedelta = Field(default=timedelta(seconds=5), ge=timedelta(0))
    sending_lease: timedelta = Field(
        default=timedelta(minutes=2),
        description="A command left `sending` longer than this was abandoned mid-call.",
    )
    stuck_window: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))
    stall_threshold: int = Field(default=3, ge=1)
    stall_lookback: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0))
    max_in_flight: int = Field(default=512, ge=1, description="Commands being worked on at once.")
    command_ack_wait: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))
    status_match_attempts: int = Field(
        default=5, ge=1, description="Deliveries of a receipt whose messageId is not known yet."
    )
    status_retry_delay: timedelta = Field(default=timedelta(seconds=1), ge=timedelta(0))
    sweep_every: timedelta | None = Field(
        default=timedelta(seconds=30),
        description="Interval of the stuck/held sweep tick; None installs no schedule.",
    )
    consumer_prefix: str = Field(default="sender", pattern=r"^[A-Za-z0-9_\-]+$")
