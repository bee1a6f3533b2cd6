"""Settings fail closed: prod is the default and refuses weak secrets with a coded message."""

from __future__ import annotations

import secrets

import pytest
from pydantic import SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.nats_auth import new_user_seed
from zapgate.runtime.settings import MIN_SECRET_LENGTH, ServiceSettings, refuse_weak_secret

pytestmark = pytest.mark.unit

STRONG = secrets.token_urlsafe(32)
SEED = new_user_seed()


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_FAILCLOSED_")


class _Webhook(_Settings):
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _strong(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        refuse_weak_secret(value, str(info.data["environment"]), "webhook secret")
        return value


def _url(password: str | None) -> str:
    auth = "zapgate" if password is None else f"zapgate:{password}"
    return f"postgresql+psycopg://{auth}@db:5432/zapgate"


def test_the_default_environment_is_prod() -> None:
    """Nothing set means prod: a weak database password is refused without being asked."""
    with pytest.raises(ValidationError, match="SECRET_TOO_SHORT"):
        _Settings(database_url=SecretStr(_url("Xq8-short-pass")))
    settings = _Settings(database_url=SecretStr(_url(STRONG)), nats_seed=SecretStr(SEED))
    assert settings.environment == "prod"


def test_prod_refuses_to_start_without_its_nats_credentials() -> None:
    """No nkey seed in prod: NATS_SEED_MISSING; an empty one counts as none."""
    for seed in (None, SecretStr(""), "  "):
        with pytest.raises(ValidationError, match="NATS_SEED_MISSING"):
            _Settings.model_validate({"database_url": _url(STRONG), "nats_seed": seed})
    settings = _Settings(environment="test", database_url=SecretStr(_url(STRONG)))
    assert settings.nats_seed is None


@pytest.mark.parametrize(
    ("secret", "code"),
    [
        ("a", "SECRET_COMMON"),
        ("password", "SECRET_COMMON"),
        ("12345", "SECRET_COMMON"),
        ("Senha@123", "SECRET_COMMON"),
        ("P@ssw0rd", "SECRET_COMMON"),
        ("   ", "SECRET_EMPTY"),
        ("changeme-webhook-secret", "SECRET_PLACEHOLDER"),
        ("your-secret-here-replace-me-please-0123456789", "SECRET_PLACEHOLDER"),
        ("example-secret-that-is-long-enough-0123456789", "SECRET_PLACEHOLDER"),
        ("Xq8-jT2v9LmP4wRz7KcN1bYh6DsF3g", "SECRET_TOO_SHORT"),  # 30 random characters
        ("ab" * 20, "SECRET_LOW_VARIETY"),
        ("0123" * 10, "SECRET_LOW_VARIETY"),
    ],
)
def test_a_weak_secret_is_refused_in_prod_with_its_code(secret: str, code: str) -> None:
    """Each kind of weak secret gets its own stable code and a pt-BR message naming the field;
    the value itself never appears in the error."""
    with pytest.raises(ValidationError) as caught:
        _Webhook(environment="prod", database_url=SecretStr(_url(STRONG)), secret=SecretStr(secret))
    text = str(caught.value)
    assert f"[type={code}" in text
    assert f"{code}: webhook secret:" in text
    assert "Gere um com" in text
    if len(secret.strip()) > 3:
        assert secret not in text


def test_a_weak_database_password_is_refused_in_prod() -> None:
    """The password inside the database URL is held to the same rules."""
    with pytest.raises(ValidationError, match="SECRET_COMMON: database_url password"):
        _Settings(environment="prod", database_url=SecretStr(_url("postgres")))


def test_a_random_secret_of_the_minimum_length_passes_in_prod() -> None:
    """`secrets.token_urlsafe(32)` (43 characters) and any 32 random characters pass."""
    assert len(STRONG) >= MIN_SECRET_LENGTH
    assert refuse_weak_secret(SecretStr(STRONG), "prod", "x") is not None
    exact = secrets.token_hex(16)
    assert refuse_weak_secret(SecretStr(exact), "prod", "x") is not None


def test_test_refuses_placeholders_only_and_dev_accepts_anything() -> None:
    """Test fixtures may use short secrets but never placeholders; dev takes what it gets."""
    assert refuse_weak_secret(SecretStr("s3cret-short"), "test", "x") is not None
    with pytest.raises(ValueError, match="SECRET_PLACEHOLDER"):
        refuse_weak_secret(SecretStr("changeme"), "test", "x")
    assert refuse_weak_secret(SecretStr("changeme"), "dev", "x") is not None
    assert refuse_weak_secret(SecretStr("a"), "dev", "x") is not None


def test_a_database_url_without_a_password_is_refused_in_prod_only() -> None:
    """Prod connects to PostgreSQL with a role and a password; test and dev may use trust."""
    with pytest.raises(ValidationError, match="DATABASE_PASSWORD_MISSING"):
        _Settings(environment="prod", database_url=SecretStr(_url(None)))
    for environment in ("test", "dev"):
        settings = _Settings(environment=environment, database_url=SecretStr(_url(None)))
        assert settings.environment == environment
