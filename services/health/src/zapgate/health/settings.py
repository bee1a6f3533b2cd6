"""Health's settings (env prefix `ZAPGATE_HEALTH_`). Built in `create_app`, never at import.

Durations are `timedelta` in code and ISO 8601 in the environment (`PT3S`, `PT2M`; the runtime's
`Duration`: bare seconds are refused, they read differently to different people).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from zapgate.health.domain import Policy
from zapgate.runtime import signing
from zapgate.runtime.settings import Duration, PositiveDuration
from zapgate.runtime.token_crypto import ProviderTokenSettings
from zapgate.wapi.client import DEFAULT_BASE_URL


class HealthSettings(ProviderTokenSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_HEALTH_", extra="ignore", frozen=True)

    wapi_base_url: str = DEFAULT_BASE_URL
    tick_interval: PositiveDuration = Field(default=timedelta(minutes=5))
    install_schedule: bool = Field(
        default=True, description="Install the tick's message schedule on startup."
    )
    restart_cooldown: Duration = timedelta(minutes=30)
    provider_concurrency: int = Field(default=32, ge=1, le=1024)
    phone_max_age: Duration = Field(
        default=timedelta(hours=1),
        description="Look the phone up again (fetch-instance) at the latest when the provider "
        "or a webhook last showed it this long ago (ISO 8601, e.g. PT1H); each instance's lookup "
        "comes at an age fixed per instance between half of this and all of it, so phones seen "
        "in one tick are not all looked up again in one tick. Status-only checks never refresh "
        "the phone's age, so a phone changed without a drop shows within this.",
    )
    check_min_gap: Duration | None = Field(
        default=None,
        description="An instance is not re-checked by a tick sooner than this "
        "(default: half the tick interval); protects against redelivered ticks.",
    )
    confirm_delay: Duration = Field(
        ge=timedelta(0),
        default=timedelta(seconds=3),
        description="A connected instance that looks bad is checked again this much later; "
        "only a second bad look changes its state (else the first was a blip).",
    )
    settle_window: Duration = Field(
        ge=timedelta(0),
        default=timedelta(minutes=2),
        description="An outage episode closes (one recovery notice) after the session stayed "
        "good this long; drops inside it are flaps of the same episode.",
    )
    instability_threshold: int = Field(
        default=3, ge=1, description="Flaps in one episode that send the instability notice."
    )
    stall_recheck_after: PositiveDuration = Field(
        default=timedelta(minutes=10),
        description="A DELIVERY_STALLED instance older than this is re-checked live with a "
        "phone lookup; a complete session lifts the stall.",
    )
    apply_batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="Check results decided and saved in one transaction (rows locked at once).",
    )
    apply_batch_linger: Duration = Field(
        default=timedelta(seconds=1),
        ge=timedelta(0),
        description="A partly filled batch of check results is written once its oldest result "
        "has waited this long (the round's end writes the rest at once).",
    )
    operator_webhook_url: str | None = None
    operator_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks secret (`whsec_<base64>`) that signs operator notices; "
        "required with operator_webhook_url.",
    )
    operator_webhook_attempts: int = Field(
        default=3, ge=1, le=20, description="POST attempts per delivery round (backoff between)."
    )
    operator_webhook_backoff: PositiveDuration = Field(default=timedelta(seconds=0.5))
    operator_webhook_max_attempts: int = Field(
        default=15,
        ge=1,
        le=200,
        description="Attempts over all rounds before a notice is given up.",
    )
    operator_webhook_retry_after: PositiveDuration = Field(
        default=timedelta(minutes=1),
        description="Wait before the next round after a failed one (doubling, up to 1 hour).",
    )
    consumer_prefix: str = Field(default="health", pattern=r"^[A-Za-z0-9_\-]+$")
    consumer_max_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failures of a message itself (never a database or NATS outage) before a "
        "consumer keeps it in health_dead_letters and goes on with the next.",
    )
    consumer_retry_delay: PositiveDuration = Field(
        default=timedelta(seconds=1),
        description="Delay before a failed message is tried again (doubling per failure, up "
        "to one minute).",
    )

    @model_validator(mode="after")
    def _operator_webhook_is_signed(self) -> HealthSettings:
        if self.operator_webhook_url is None:
            return self
        if self.operator_webhook_secret is None:
            raise ValueError(
                "operator_webhook_url needs operator_webhook_secret (whsec_<base64>): "
                "notices are signed"
            )
        signing.check_secret(self.operator_webhook_secret.get_secret_value())
        return self

    def log_secrets(self) -> list[str]:
        """The common ones, the operator URL (it may carry a token) and the secret that signs
        notices."""
        secret = self.operator_webhook_secret
        own = [self.operator_webhook_url, secret.get_secret_value() if secret else None]
        return super().log_secrets() + [value for value in own if value]

    @property
    def effective_check_min_gap(self) -> timedelta:
        return self.check_min_gap if self.check_min_gap is not None else self.tick_interval / 2

    @property
    def policy(self) -> Policy:
        return Policy(
            settle_window=self.settle_window,
            instability_threshold=self.instability_threshold,
            stall_recheck_after=self.stall_recheck_after,
        )
