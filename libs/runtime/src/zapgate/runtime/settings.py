"""The settings base every service subclasses with its own `env_prefix`.

Never instantiate at import: build settings in the service's `create_app`, or in tests directly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

Environment = Literal["dev", "test", "prod"]

_PLACEHOLDERS = frozenset({"changeme", "change-me", "change_me", "placeholder", "secret", "todo"})
_PLACEHOLDER_PREFIXES = ("dev-secret", "dev_secret", "changeme", "change-me", "change_me")


def is_placeholder_secret(value: str) -> bool:
    normalised = value.strip().lower()
    return (
        not normalised
        or normalised in _PLACEHOLDERS
        or normalised.startswith(_PLACEHOLDER_PREFIXES)
    )


def refuse_placeholder_secret(
    value: SecretStr | None, environment: str, field_name: str
) -> SecretStr | None:
    """Raise when a secret is empty or a placeholder outside the `dev` environment.

    Use from a service's own `field_validator` on its secret fields (declare `environment` first).
    """
    if value is None or environment == "dev":
        return value
    if is_placeholder_secret(value.get_secret_value()):
        raise ValueError(
            f"{field_name} is empty or a placeholder; set a real secret for environment "
            f"{environment!r}"
        )
    return value


class ServiceSettings(BaseSettings):
    """Settings every zapgate service has. Subclass with `model_config = SettingsConfigDict(
    env_prefix="ZAPGATE_<SVC>_")`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Environment = "dev"
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: SecretStr
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool | None = Field(
        default=None, description="None: JSON when stdout is not a terminal"
    )
    probe_host: str = "0.0.0.0"  # noqa: S104 - probes must answer the orchestrator from outside
    probe_port: int = Field(default=8080, ge=0, le=65535)
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="JetStream replicas per stream (3 on a cluster)"
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_is_real(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        environment = str(info.data.get("environment", "dev"))
        checked = refuse_placeholder_secret(value, environment, "database_url")
        password = _url_password(value.get_secret_value())
        if password is not None:
            # The URL is never a placeholder as a whole; its password may well be.
            refuse_placeholder_secret(SecretStr(password), environment, "database_url password")
        return checked if checked is not None else value


def _url_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None
