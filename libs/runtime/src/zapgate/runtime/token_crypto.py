"""Provider tokens encrypted at rest, with keys that rotate without downtime.

`cryptography`'s `MultiFernet` does the work (AES-128-CBC + HMAC-SHA256, authenticated, with a
timestamp; the library the Python ecosystem trusts for it): the first key encrypts, every key
decrypts. Rotation: put the new key first and keep the old one after it; both services that
decrypt (health, sender) accept old and new ciphertexts; `TokenCipher.rotate()` re-encrypts a
stored value under the new key; drop the old key once no row uses it (docs/runbook.md).

Stored values look like `fernet:v1:<token>`, so a plaintext left over from before encryption is
recognisable (`is_encrypted`) and a wrong key is a coded error, never a silent garbage token.

Only the services that call the provider with the token (health, sender) hold the keys; the
others never see a token in clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import NoDecode

from zapgate.runtime.settings import ServiceSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

PREFIX: Final = "fernet:v1:"
# S105: public on purpose (base64 of "zapgate-dev-only-public-tokenkey"); prod refuses it.
DEV_TOKEN_KEY: Final = "emFwZ2F0ZS1kZXYtb25seS1wdWJsaWMtdG9rZW5rZXk="  # noqa: S105
"""A public key for dev and tests only, used when no key is configured there; prod refuses it."""


class TokenDecryptError(ValueError):
    """A stored token no configured key can open (`code` = `TOKEN_KEY_UNKNOWN`), or a value
    that was never encrypted (`TOKEN_NOT_ENCRYPTED`). The message never contains the value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def generate_key() -> str:
    """A new key (url-safe base64 of 32 random bytes) for `token_keys`."""
    return Fernet.generate_key().decode()


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


class TokenCipher:
    """Encrypts with the first of `keys`, decrypts with any of them.

    `keys`: Fernet keys (url-safe base64 of 32 bytes), newest first. `ValueError` when empty
    or when one is not a Fernet key.
    """

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        if not keys:
            raise ValueError("at least one token key is required")
        plain = [key.get_secret_value() if isinstance(key, SecretStr) else key for key in keys]
        self._newest = Fernet(plain[0].encode())
        self._fernet = MultiFernet([Fernet(key.encode()) for key in plain])

    def needs_rotation(self, stored: str) -> bool:
        """True when `stored` is plaintext or not encrypted under the newest key."""
        if not is_encrypted(stored):
            return True
        try:
            self._newest.decrypt(stored.removeprefix(PREFIX).encode())
        except InvalidToken:
            return True
        return False

    def encrypt(self, token: str) -> str:
        """`fernet:v1:<ciphertext>` of `token` under the newest key (a new nonce each call)."""
        return PREFIX + self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str, *, allow_plaintext: bool = False) -> str:
        """The token in clear; `TokenDecryptError` if no key opens it or it is not encrypted.

        `allow_plaintext`: return a value stored before encryption existed as it is (health
        encrypts such rows at start; tests and benchmarks insert rows directly).
        """
        if not is_encrypted(stored):
            if allow_plaintext:
                return stored
            raise TokenDecryptError(
                "TOKEN_NOT_ENCRYPTED", "o token guardado não está criptografado."
            )
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise TokenDecryptError(
                "TOKEN_KEY_UNKNOWN",
                "nenhuma chave configurada abre o token guardado (chave removida cedo demais?).",
            ) from None

    def rotate(self, stored: str) -> str:
        """`stored` re-encrypted under the newest key; a plaintext value gets encrypted."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise TokenDecryptError(
                "TOKEN_KEY_UNKNOWN", "nenhuma chave configurada abre o token guardado."
            ) from None


class ProviderTokenSettings(ServiceSettings):
    """Settings of a service that calls the provider with instance tokens (health, sender).

    `token_keys`: Fernet keys, newest first, comma-separated in the environment
    (`ZAPGATE_<SVC>_TOKEN_KEYS`). Empty means the public dev key outside prod; prod requires
    real keys (`TOKEN_KEY_MISSING`, `TOKEN_KEY_INVALID`, `TOKEN_KEY_PUBLIC`).
    """

    token_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that encrypt instance tokens at rest, newest first (comma-separated); "
        "the first encrypts, all decrypt. Make one with `zapgate-token-key`. Required in prod.",
    )

    @field_validator("token_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("token_keys")
    @classmethod
    def _keys_are_usable(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        environment = str(info.data.get("environment", "prod"))
        if not value:
            if environment == "prod":
                raise PydanticCustomError(
                    "TOKEN_KEY_MISSING",
                    "TOKEN_KEY_MISSING: token_keys: nenhuma chave para criptografar os tokens "
                    "das instâncias; gere uma com zapgate-token-key.",
                )
            return [SecretStr(DEV_TOKEN_KEY)]
        for key in value:
            try:
                Fernet(key.get_secret_value().encode())
            except ValueError:
                raise PydanticCustomError(
                    "TOKEN_KEY_INVALID",
                    "TOKEN_KEY_INVALID: token_keys: uma das chaves não é uma chave Fernet "
                    "(base64 url-safe de 32 bytes); gere uma com zapgate-token-key.",
                ) from None
            if environment == "prod" and key.get_secret_value() == DEV_TOKEN_KEY:
                raise PydanticCustomError(
                    "TOKEN_KEY_PUBLIC",
                    "TOKEN_KEY_PUBLIC: token_keys: a chave de desenvolvimento é pública e não "
                    "vale em produção.",
                )
        return value

    def token_cipher(self) -> TokenCipher:
        return TokenCipher(self.token_keys)


def main() -> int:
    """`zapgate-token-key`: print a new token key."""
    print(generate_key())  # noqa: T201 - the key is this command's output
    return 0
