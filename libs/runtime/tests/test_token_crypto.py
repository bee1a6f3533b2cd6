"""Instance tokens at rest: encrypted, readable during a key rotation, refused when unknown."""

from __future__ import annotations

import secrets

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.nats_auth import new_user_seed
from zapgate.runtime.token_crypto import (
    DEV_TOKEN_KEY,
    ProviderTokenSettings,
    TokenCipher,
    TokenDecryptError,
    generate_key,
    is_encrypted,
)

pytestmark = pytest.mark.unit

TOKEN = "F7kQ2-instance-token-" + secrets.token_hex(8)
STRONG_DB = f"postgresql+psycopg://health:{secrets.token_urlsafe(32)}@db/zapgate"


class _Settings(ProviderTokenSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_TOKENSVC_")


def test_a_token_is_stored_encrypted_and_read_back() -> None:
    """The stored value never contains the token; each encryption differs; decrypt gives it."""
    cipher = TokenCipher([generate_key()])
    first, second = cipher.encrypt(TOKEN), cipher.encrypt(TOKEN)
    assert TOKEN not in first
    assert first != second
    assert is_encrypted(first)
    assert cipher.decrypt(first) == TOKEN
    assert cipher.decrypt(second) == TOKEN


def test_old_and_new_keys_both_open_tokens_during_a_rotation() -> None:
    """New key first, old key second: old rows still open, new rows use the new key, and
    `rotate` moves an old row to the new key so the old key can go."""
    old_key, new_key = generate_key(), generate_key()
    before = TokenCipher([old_key]).encrypt(TOKEN)
    during = TokenCipher([new_key, old_key])
    assert during.decrypt(before) == TOKEN
    written = during.encrypt(TOKEN)
    rotated = during.rotate(before)
    assert during.needs_rotation(before)
    assert not during.needs_rotation(written)
    assert not during.needs_rotation(rotated)
    assert during.needs_rotation(TOKEN)
    after = TokenCipher([new_key])
    assert after.decrypt(written) == TOKEN
    assert after.decrypt(rotated) == TOKEN
    with pytest.raises(TokenDecryptError) as caught:
        after.decrypt(before)
    assert caught.value.code == "TOKEN_KEY_UNKNOWN"
    assert TOKEN not in str(caught.value)


def test_a_plaintext_or_tampered_value_is_refused_with_a_code() -> None:
    """A value that was never encrypted, or was altered, is a coded error, never garbage."""
    cipher = TokenCipher([generate_key()])
    with pytest.raises(TokenDecryptError) as caught:
        cipher.decrypt(TOKEN)
    assert caught.value.code == "TOKEN_NOT_ENCRYPTED"
    stored = cipher.encrypt(TOKEN)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(TokenDecryptError, match="TOKEN_KEY_UNKNOWN"):
        cipher.decrypt(tampered)
    assert cipher.decrypt(cipher.rotate(TOKEN)) == TOKEN  # rotate encrypts a leftover plaintext


def test_prod_requires_real_token_keys() -> None:
    """Prod refuses no key, the public dev key and a malformed key, each with its code."""
    for keys, code in (
        ("", "TOKEN_KEY_MISSING"),
        (DEV_TOKEN_KEY, "TOKEN_KEY_PUBLIC"),
        ("not-a-key", "TOKEN_KEY_INVALID"),
    ):
        with pytest.raises(ValidationError, match=code):
            _Settings.model_validate(
                {"environment": "prod", "database_url": STRONG_DB, "token_keys": keys}
            )


def test_keys_come_from_the_environment_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ZAPGATE_<SVC>_TOKEN_KEYS=new,old`: the first encrypts, both decrypt."""
    old_key, new_key = generate_key(), generate_key()
    monkeypatch.setenv("ZAPGATE_TOKENSVC_TOKEN_KEYS", f"{new_key}, {old_key}")
    monkeypatch.setenv("ZAPGATE_TOKENSVC_DATABASE_URL", STRONG_DB)
    monkeypatch.setenv("ZAPGATE_TOKENSVC_NATS_SEED", new_user_seed())
    settings = _Settings()
    assert [key.get_secret_value() for key in settings.token_keys] == [new_key, old_key]
    assert TokenCipher([new_key]).decrypt(settings.token_cipher().encrypt(TOKEN)) == TOKEN
    assert new_key not in repr(settings)


def test_dev_and_test_fall_back_to_the_public_dev_key() -> None:
    """Without keys, dev and test still encrypt (with the dev key) so nothing is plaintext."""
    for environment in ("dev", "test"):
        settings = _Settings(environment=environment, database_url=SecretStr(STRONG_DB))
        stored = settings.token_cipher().encrypt(TOKEN)
        assert TokenCipher([DEV_TOKEN_KEY]).decrypt(stored) == TOKEN
