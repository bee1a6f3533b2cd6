"""The console's settings (env prefix `ZAPGATE_CONSOLE_`). Built in `create_app`, not at import."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.settings import Duration, ServiceSettings, refuse_weak_secret

_ARGON2_PREFIX = "$argon2"


class ConsoleSettings(ServiceSettings):
    """Where the console listens, who may log in, and how long it waits for the other APIs.

    `operators` maps a login to an Argon2id hash made by `zapgate-console hash-password`
    (JSON in `ZAPGATE_CONSOLE_OPERATORS`, e.g. `{"ana": "$argon2id$v=19$..."}`); plain-text
    passwords are refused.
    """

    model_config = SettingsConfigDict(env_prefix="ZAPGATE_CONSOLE_", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8090, ge=0, le=65535)
    session_secret: SecretStr = Field(
        description="Signs the session cookie; at least 32 characters outside dev."
    )
    operators: dict[str, SecretStr] = Field(
        default={},
        description='Login -> Argon2id hash, as JSON: {"ana": "$argon2id$..."} '
        "(make one with `zapgate-console hash-password`).",
    )
    cookie_secure: bool = Field(
        default=True, description="Send the session cookie over HTTPS only (off for localhost)."
    )
    session_max_age: Duration = Field(
        default=timedelta(hours=8),
        ge=timedelta(minutes=1),
        le=timedelta(days=7),
        description="How long a login lasts (ISO 8601, e.g. PT8H).",
    )
    request_timeout: Duration = Field(
        default=timedelta(seconds=10),
        gt=timedelta(0),
        le=timedelta(minutes=2),
        description="How long to wait for health's, the sender's and ingest's APIs.",
    )
    timezone: str = Field(default="America/Sao_Paulo", description="Zone times are shown in.")
    audit_rows: int = Field(default=20, ge=1, le=500)

    @field_validator("session_secret")
    @classmethod
    def _session_secret_is_real(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        environment = str(info.data.get("environment", "prod"))
        refuse_weak_secret(value, environment, "session_secret")
        if environment != "dev" and len(value.get_secret_value()) < 32:  # noqa: PLR2004 - bytes of entropy
            raise ValueError("session_secret must have at least 32 characters outside dev")
        return value

    @field_validator("operators")
    @classmethod
    def _operators_hold_hashes(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for login, secret in value.items():
            if not secret.get_secret_value().startswith(_ARGON2_PREFIX):
                raise ValueError(
                    f"operator {login!r}: give an Argon2 hash (zapgate-console hash-password), "
                    "never a plain password"
                )
        return value
