"""The sender's settings (env prefix `ZAPGATE_SENDER_`).

Durations are `timedelta` in code and ISO 8601 in the environment (the runtime's `Duration`).
"""

from __future__ import annotations

from datetime import timedelta

import phonenumbers
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.settings import Duration, PositiveDuration
from zapgate.runtime.token_crypto import ProviderTokenSettings


class SenderSettings(ProviderTokenSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_SENDER_", extra="ignore", frozen=True)

    wapi_base_url: str = "https://api.w-api.app/v1"
    min_send_gap: Duration = Field(
        ge=timedelta(0),
        default=timedelta(seconds=1),
        description="Minimum time between two provider sends of one instance.",
    )
    live_check_timeout: PositiveDuration = Field(default=timedelta(seconds=3))
    provider_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries when the provider certainly did not accept."
    )
    provider_backoff: Duration = Field(default=timedelta(milliseconds=500), ge=timedelta(0))
    provider_backoff_cap: Duration = Field(default=timedelta(seconds=5), ge=timedelta(0))
    sending_lease: Duration = Field(
        default=timedelta(minutes=2),
        description="A command left `sending` longer than this was abandoned mid-call.",
    )
    stuck_window: PositiveDuration = Field(default=timedelta(minutes=10))
    stall_threshold: int = Field(default=3, ge=1)
    stall_lookback: PositiveDuration = Field(default=timedelta(hours=1))
    max_in_flight: int = Field(
        default=512,
        ge=1,
        description=(
            "Commands being worked on at once; each send partition this replica holds takes "
            "at most its share (max_in_flight / 8) of deliveries off the server."
        ),
    )
    command_ack_wait: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description=(
            "How soon JetStream gives the commands of a crashed sender to another; work in "
            "progress sends a heartbeat every third of it, so it bounds no provider call."
        ),
    )
    early_receipt_keep: PositiveDuration = Field(
        default=timedelta(minutes=10),
        description=(
            "How long a receipt that came before its send's answer is kept for that answer "
            "(must exceed the provider call timeout times the attempts, plus a margin)."
        ),
    )
    default_country: str | None = Field(
        default=None,
        description=(
            "ISO 3166 code (e.g. BR) given to bare numbers without a country code; unset, such "
            "numbers are refused with PHONE_COUNTRY_CODE_MISSING."
        ),
    )
    sweep_every: Duration | None = Field(
        default=timedelta(seconds=30),
        description="Interval of the stuck/held sweep tick; None installs no schedule.",
    )
    consumer_prefix: str = Field(default="sender", pattern=r"^[A-Za-z0-9_\-]+$")

    @field_validator("default_country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = value.strip().upper()
        if code not in phonenumbers.SUPPORTED_REGIONS:
            msg = f"unknown country code {value!r} (use ISO 3166 alpha-2, e.g. BR)"
            raise ValueError(msg)
        return code
