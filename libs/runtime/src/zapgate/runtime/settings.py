"""The settings base every service subclasses with its own `env_prefix`.

Never instantiate at import: build settings in the service's `create_app`, or in tests directly.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from zapgate.runtime.connection import ConnectionOptions

Environment = Literal["dev", "test", "prod"]
"""`prod` (the default) refuses weak secrets; `test` refuses placeholders; `dev` accepts all."""

MIN_SECRET_LENGTH = 32
"""Characters a secret needs in prod (`secrets.token_urlsafe(32)` gives 43)."""
_MIN_DISTINCT_CHARACTERS = 8
_GENERATE_HINT = 'Gere um com: python -c "import secrets; print(secrets.token_urlsafe(32))".'

# ISO 8601 durations without years and months (their length varies): P[nW][nD][T[nH][nM][nS]].
_ISO_DURATION = re.compile(r"^-?P(?!$)(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def _iso_8601_only(value: object) -> object:
    # One convention: timedelta in code, ISO 8601 in the environment. pydantic alone would
    # also take "300" (seconds) or "00:05:00", which read differently to different people.
    if isinstance(value, str) and not _ISO_DURATION.fullmatch(value.strip().upper()):
        raise ValueError(
            f"{value!r} is not an ISO 8601 duration; write e.g. PT30S, PT5M, PT1H30M or P1D"
        )
    if isinstance(value, str):
        return value.strip().upper()
    if not isinstance(value, timedelta):
        # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
        raise ValueError(  # noqa: TRY004
            "a duration is a timedelta in code or an ISO 8601 string (e.g. PT5M)"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_iso_8601_only)]
"""A settings field holding a duration: `timedelta` in code, ISO 8601 (`PT5M`) in the env."""
PositiveDuration = Annotated[timedelta, BeforeValidator(_iso_8601_only), Field(gt=timedelta(0))]
"""A `Duration` that must be longer than zero."""


def iso_duration(value: timedelta) -> str:
    """`value` as ISO 8601, the form the environment takes (`timedelta(minutes=5)` -> `PT5M`)."""
    rendered: str = _TIMEDELTA.dump_python(value, mode="json")
    return rendered


_PLACEHOLDERS = frozenset({"changeme", "change-me", "change_me", "placeholder", "secret", "todo"})
_PLACEHOLDER_PREFIXES = ("dev-secret", "dev_secret", "changeme", "change-me", "change_me")
# Markers of a value copied from an example; long enough never to occur by chance in a random
# secret.
_PLACEHOLDER_MARKERS = ("changeme", "placeholder", "replaceme", "yoursecret", "example")
# The most common passwords and the words people reach for first (English and Portuguese),
# compared after lower-casing and dropping everything but letters and digits.
_COMMON_SECRETS = frozenset(
    {
        "password", "password1", "password123", "passw0rd", "p4ssw0rd", "123456", "1234567",
        "12345678", "123456789", "1234567890", "12345", "1234", "111111", "000000", "654321",
        "qwerty", "qwerty123", "abc123", "letmein", "welcome", "monkey", "dragon", "iloveyou",
        "admin", "admin123", "administrator", "root", "toor", "master", "login", "guest",
        "default", "test", "test123", "testing", "secret", "secret123", "topsecret", "token",
        "senha", "senha123", "senha1234", "mudar", "mudar123", "trocar", "troqueme",
        "segredo", "teste", "teste123", "brasil", "zapgate", "postgres", "nats", "wapi",
        "whatsapp", "a", "aaaaaaaa", "x", "xxxxxxxx", "dummy", "sample", "foobar", "foo", "bar",
    }
)  # fmt: skip


def is_placeholder_secret(value: str) -> bool:
    normalised = value.strip().lower()
    return (
        not normalised
        or normalised in _PLACEHOLDERS
        or normalised.startswith(_PLACEHOLDER_PREFIXES)
        or any(
            marker in normalised.replace("-", "").replace("_", "")
            for marker in _PLACEHOLDER_MARKERS
        )
    )


_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "3": "e", "1": "i", "$": "s", "5": "s"})


def _is_common_secret(value: str) -> bool:
    lowered = value.lower()
    plain = "".join(char for char in lowered if char.isalnum())
    unleet = "".join(char for char in lowered.translate(_LEET) if char.isalnum())
    return plain in _COMMON_SECRETS or unleet in _COMMON_SECRETS


def secret_problem(value: str, environment: str) -> tuple[str, str] | None:
    """`(code, pt-BR message)` of what makes `value` unfit as a secret in `environment`.

    dev: nothing is refused. test: empty values and placeholders. prod: also common passwords,
    fewer than `MIN_SECRET_LENGTH` characters, or fewer than 8 distinct characters.
    """
    if environment == "dev":
        return None
    placeholder = (
        f"o segredo é um valor de exemplo (placeholder); defina um segredo real para o "
        f"ambiente {environment!r}."
    )
    too_short = (
        f"o segredo tem {len(value)} caracteres; em produção o mínimo é {MIN_SECRET_LENGTH}."
    )
    checks = [
        (not value.strip(), "SECRET_EMPTY", "o segredo está vazio."),
        (is_placeholder_secret(value), "SECRET_PLACEHOLDER", placeholder),
    ]
    if environment == "prod":
        checks += [
            (
                _is_common_secret(value),
                "SECRET_COMMON",
                "o segredo está na lista de senhas comuns.",
            ),
            (len(value) < MIN_SECRET_LENGTH, "SECRET_TOO_SHORT", too_short),
            (
                len(set(value)) < _MIN_DISTINCT_CHARACTERS,
                "SECRET_LOW_VARIETY",
                "o segredo repete poucos caracteres; não é aleatório.",
            ),
        ]
    return next(((code, message) for failed, code, message in checks if failed), None)


def refuse_placeholder_secret(
    value: SecretStr | None, environment: str, field_name: str
) -> SecretStr | None:
    """Raise a coded `PydanticCustomError` when a secret is unfit for `environment`.

    Codes: `SECRET_EMPTY`, `SECRET_PLACEHOLDER`, `SECRET_COMMON`, `SECRET_TOO_SHORT`,
    `SECRET_LOW_VARIETY` (see `secret_problem`); the message is pt-BR and names the field,
    never the value. Use from a service's own `field_validator` on its secret fields (declare
    `environment` first).
    """
    if value is None:
        return value
    problem = secret_problem(value.get_secret_value(), environment)
    if problem is not None:
        code, message = problem
        raise PydanticCustomError(
            code, f"{code}: {{field}}: {message} {_GENERATE_HINT}", {"field": field_name}
        )
    return value


refuse_weak_secret = refuse_placeholder_secret


class ServiceSettings(BaseSettings):
    """Settings every zapgate service has. Subclass with `model_config = SettingsConfigDict(
    env_prefix="ZAPGATE_<SVC>_")`."""

    # hide_input_in_errors: a refused secret must not be echoed by the ValidationError.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Environment = Field(
        default="prod",
        description="prod refuses weak secrets and a database URL without a password; dev "
        "(local stack) accepts anything; test (test fixtures) refuses placeholders",
    )
    nats_url: str = "nats://127.0.0.1:4222"
    nats_seed: SecretStr | None = Field(
        default=None,
        description="nkey seed (`SU...`) of this service's NATS user, made by "
        "`zapgate-nats-auth keys`; unset: no credentials (a server with auth refuses them)",
    )
    nats_user: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="NATS user name, for its private inbox prefix `_INBOX_<user>` "
        "(default: the service, from the env prefix)",
    )
    database_user: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="PostgreSQL role to log in as, replacing the user in database_url "
        "(zapgate_<service>, made by the migrations; see runtime.db_roles)",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="password of the database user, kept out of the URL (replaces the URL's)",
    )
    database_url: SecretStr
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool | None = Field(
        default=None, description="None: JSON when stdout is not a terminal"
    )
    probe_host: str = Field(
        default="127.0.0.1",
        description="address /healthz, /readyz and /metrics bind: loopback unless set "
        "(containers set 0.0.0.0 so the orchestrator and Prometheus reach them)",
    )
    probe_port: int = Field(default=8080, ge=0, le=65535)
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="JetStream replicas per stream (3 on a cluster)"
    )

    @field_validator("nats_seed", mode="before")
    @classmethod
    def _empty_seed_is_none(cls, value: object) -> object:
        # `ZAPGATE_<SVC>_NATS_SEED=` (as in deploy/.env.example) means no seed.
        if value is None or (
            isinstance(value, (str, SecretStr))
            and not str(value.get_secret_value() if isinstance(value, SecretStr) else value).strip()
        ):
            return None
        return value

    @field_validator("nats_seed")
    @classmethod
    def _nats_seed_is_an_nkey(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None:
            if info.data.get("environment", "prod") == "prod":
                raise PydanticCustomError(
                    "NATS_SEED_MISSING",
                    "NATS_SEED_MISSING: nats_seed: em produção o serviço entra no NATS com o "
                    "próprio usuário nkey; gere a semente com zapgate-nats-auth keys.",
                )
            return value
        # Imported here: nats_auth imports the topology, which is not needed for settings alone.
        from zapgate.runtime.nats_auth import public_key  # noqa: PLC0415

        try:
            public_key(value.get_secret_value())
        except ValueError:
            raise PydanticCustomError(
                "NATS_SEED_INVALID",
                "NATS_SEED_INVALID: nats_seed: não é a semente de um usuário nkey (SU...); "
                "gere uma com zapgate-nats-auth keys.",
            ) from None
        return value

    @model_validator(mode="after")
    def _seed_replaces_url_credentials(self) -> Self:
        # With a seed the service logs in as its own user; a user:password in the URL (the
        # test harness's) would be ignored by nats-py and is refused by FastStream.
        if self.nats_seed is not None:
            object.__setattr__(self, "nats_url", _without_userinfo(self.nats_url))
        return self

    @property
    def nats_user_name(self) -> str:
        """This service's NATS user: `nats_user`, else the env prefix (`ZAPGATE_HEALTH_`)."""
        if self.nats_user is not None:
            return self.nats_user
        prefix = str(self.model_config.get("env_prefix", ""))
        return prefix.removeprefix("ZAPGATE_").strip("_").lower() or "zapgate"

    @property
    def nats_inbox_prefix(self) -> str:
        """`_INBOX_<user>` with a seed (the only inbox the user may read), else `_INBOX`."""
        return f"_INBOX_{self.nats_user_name}" if self.nats_seed is not None else "_INBOX"

    def nats_connect_options(self) -> dict[str, Any]:
        """Credentials for `nats.connect(**...)` / `NatsBroker(**...)`: the nkey seed and the
        user's private inbox prefix; empty without a seed. Never log the result."""
        if self.nats_seed is None:
            return {}
        return {
            "nkeys_seed_str": self.nats_seed.get_secret_value(),
            "inbox_prefix": self.nats_inbox_prefix,
        }

    def log_secrets(self) -> list[str]:
        """Values no log line may show, masked wherever they appear (`configure_service_logging`):
        the database URL and the NATS seed. A service with more secrets extends the list."""
        values = [self.database_url, self.nats_seed]
        return [value.get_secret_value() for value in values if value is not None]

    def nats_connection_options(self, name: str, **options: Any) -> ConnectionOptions:  # noqa: ANN401 - ConnectionOptions fields
        """`ConnectionOptions` for `NatsConnection` with this service's credentials."""
        from zapgate.runtime.connection import ConnectionOptions  # noqa: PLC0415 - no cycle

        if self.nats_seed is not None:
            options.setdefault("nkeys_seed", self.nats_seed)
            options.setdefault("inbox_prefix", self.nats_inbox_prefix)
        return ConnectionOptions(name=name, **options)

    @field_validator("database_password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_login_is_real(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # database_user and database_password (declared before, so validated first) win over
        # the URL's; the URL returned is the one the service connects with.
        environment = str(info.data.get("environment", "prod"))
        try:
            parsed = make_url(value.get_secret_value())
        except ArgumentError:
            # Not a URL at all: a placeholder such as `changeme` copied from an example.
            refuse_placeholder_secret(value, environment, "database_url")
            return value
        user = info.data.get("database_user")
        password = info.data.get("database_password")
        if user is not None:
            parsed = parsed.set(username=user, password=None)
        if isinstance(password, SecretStr):
            parsed = parsed.set(password=password.get_secret_value())
        if user is not None or password is not None:
            value = SecretStr(parsed.render_as_string(hide_password=False))
        if parsed.password is not None:
            # The URL is never a placeholder as a whole; its password may well be.
            refuse_placeholder_secret(
                SecretStr(parsed.password), environment, "database_url password"
            )
        elif environment == "prod":
            raise PydanticCustomError(
                "DATABASE_PASSWORD_MISSING",
                "DATABASE_PASSWORD_MISSING: database_url: a URL do banco não tem senha; em "
                "produção cada serviço entra no PostgreSQL com usuário e senha próprios.",
            )
        return value


def _without_userinfo(url: str) -> str:
    """`url` (one or several, comma-separated) without `user:password@`."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.username is None and split.password is None:
            parts.append(one.strip())
            continue
        host = split.hostname or ""
        netloc = f"{host}:{split.port}" if split.port is not None else host
        parts.append(urlunsplit(split._replace(netloc=netloc)))
    return ",".join(parts)


SETTINGS_INVALID = "SETTINGS_INVALID"
"""Exit line code of a CLI whose settings (environment variables) do not validate."""
SETTINGS_INVALID_STATUS = 2
_S = TypeVar("_S", bound=BaseSettings)
# pt-BR reasons for pydantic's built-in error types met in settings; our own checks
# (PydanticCustomError with an UPPER_CASE type) already say theirs in pt-BR.
_SETTING_REASONS_PT_BR = {
    "missing": "obrigatória e não definida",
    "int_parsing": "deve ser um número inteiro",
    "float_parsing": "deve ser um número",
    "bool_parsing": "deve ser true ou false",
    "literal_error": "valor não permitido",
    "enum": "valor não permitido",
    "json_invalid": "não é um JSON válido",
    "url_parsing": "deve ser uma URL",
}


def load_settings(settings_class: type[_S], err: IO[str] | None = None) -> _S:
    """`settings_class()` read from the environment, or the end of the process.

    Invalid settings write one line to `err` (stderr), `erro SETTINGS_INVALID: configuração
    inválida: <VAR>: <motivo>; ...` (pt-BR, each setting named by its environment variable,
    values never shown), and raise `SystemExit(2)`: no traceback for an operator to read.
    """
    try:
        return settings_class()
    except ValidationError as error:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        reasons = [
            _setting_reason(prefix, item)
            for item in error.errors(include_url=False, include_input=False)
        ]
        listed = "; ".join(reason.rstrip(".") for reason in reasons)
        (err or sys.stderr).write(f"erro {SETTINGS_INVALID}: configuração inválida: {listed}.\n")
        raise SystemExit(SETTINGS_INVALID_STATUS) from None


def _setting_reason(prefix: str, item: Any) -> str:  # noqa: ANN401 - pydantic's ErrorDetails
    field = str(item["loc"][0]) if item["loc"] else ""
    variable = f"{prefix}{field.upper()}" if field else f"{prefix}*"
    kind = str(item["type"])
    if kind == "value_error":
        return f"{variable}: {str(item['msg']).removeprefix('Value error, ')}"
    if kind.isupper():
        # "CODE: field: texto" -> "CODE: texto"
        text = str(item["msg"]).removeprefix(f"{kind}: ").removeprefix(f"{field}: ")
        return f"{variable}: {kind}: {text}"
    return f"{variable}: {_SETTING_REASONS_PT_BR.get(kind, 'valor inválido')}"
