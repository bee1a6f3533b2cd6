"""Pure decisions of the HTTP API: key format, scope, command ids, request fingerprints, codes.

Nothing here does I/O; the use cases in `service.py` call these and the tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

KEY_PREFIX: Final = "zgk"
KEY_ID_LENGTH: Final = 12  # hex characters: fixed, so `<key_id>-<idempotency key>` is unambiguous
ALL_INSTANCES: Final = "*"
_KEY_ID = re.compile(rf"^[0-9a-f]{{{KEY_ID_LENGTH}}}$")
_SAFE_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x21-\x7e]{1,200}$"
"""Printable ASCII without spaces, 1..200 characters (UUIDs, order ids, hashes all fit)."""


class ApiErrorCode(StrEnum):
    """Codes of the HTTP API's own refusals (the sender's and health's keep their ErrorCode)."""

    AUTH_MISSING = "AUTH_MISSING"
    AUTH_INVALID = "AUTH_INVALID"
    INSTANCE_FORBIDDEN = "INSTANCE_FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID_REQUEST = "INVALID_REQUEST"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


API_MESSAGES_PT_BR: Final[dict[ApiErrorCode, str]] = {
    ApiErrorCode.AUTH_MISSING: (
        "Chave de API ausente: envie o cabeçalho 'Authorization: Bearer <chave>'."
    ),
    ApiErrorCode.AUTH_INVALID: "Chave de API inválida ou revogada.",
    ApiErrorCode.INSTANCE_FORBIDDEN: "Esta chave de API não tem acesso a esta instância.",
    ApiErrorCode.RATE_LIMITED: (
        "Limite de requisições desta chave de API excedido. Tente novamente após o tempo "
        "indicado em 'Retry-After'."
    ),
    ApiErrorCode.INVALID_REQUEST: "A requisição tem campos inválidos; veja 'errors'.",
    ApiErrorCode.IDEMPOTENCY_KEY_REUSED: (
        "Esta Idempotency-Key já foi usada com outro conteúdo. Use uma chave nova para uma "
        "mensagem diferente."
    ),
    ApiErrorCode.NOT_FOUND: "Recurso não encontrado.",
    ApiErrorCode.METHOD_NOT_ALLOWED: "Método não permitido para este endereço.",
    ApiErrorCode.UNAVAILABLE: (
        "O zapgate não conseguiu registrar o pedido agora (barramento indisponível). Repita "
        "com a mesma Idempotency-Key: nada será enviado duas vezes."
    ),
    ApiErrorCode.INTERNAL: "Erro interno do zapgate.",
}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (never the secret): its id, name and the instances it may use."""

    key_id: str
    name: str
    instances: frozenset[str]
    secret_hash: str
    revoked: bool = False

    def may_use(self, instance_id: str) -> bool:
        return ALL_INSTANCES in self.instances or instance_id in self.instances


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the key's id and its scope."""

    key_id: str
    name: str
    instances: frozenset[str]

    def may_use(self, instance_id: str) -> bool:
        return ALL_INSTANCES in self.instances or instance_id in self.instances


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: `token` is shown once to its owner and never stored."""

    key_id: str
    token: str


def new_key() -> NewKey:
    """`zgk_<12 hex key id>_<43 url-safe characters>` (256 bits of secret)."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    return NewKey(key_id=key_id, token=f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}")


def key_id_of(token: str) -> str | None:
    """The key id inside a presented token, or None when it is not shaped like one of ours."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not _KEY_ID.match(parts[1]) or not parts[2]:  # noqa: PLR2004
        return None
    return parts[1]


def command_id_for(key_id: str, idempotency_key: str) -> str:
    """The command id of a caller's idempotency key: scoped to the key, within CommandId.

    Keys of safe characters stay readable (`<key_id>-<key>`); anything else is hashed, so
    two callers can never land on one command and a command id never breaks a subject.
    """
    if _SAFE_IDEMPOTENCY_KEY.match(idempotency_key):
        return f"{key_id}-{idempotency_key}"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:48]
    return f"{key_id}-sha256-{digest}"


def owns(key_id: str, command_id: str) -> bool:
    return command_id.startswith(f"{key_id}-")


def fingerprint(value: Any) -> str:  # noqa: ANN401 - any JSON-ready value
    """SHA-256 of the canonical JSON of a request: equal requests, equal fingerprints."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- outbound events ------------------------------------------------------------------------


class EventType(StrEnum):
    """What a subscription can receive."""

    MESSAGE_OUTCOME = "message.outcome"
    """The sender decided one of the key's commands (sent, failed, uncertain, held)."""
    MESSAGE_STATUS = "message.status"
    """One of the key's sent messages moved on (delivered, read, played) or failed."""
    MESSAGE_RECEIVED = "message.received"
    """A message arrived at one of the key's instances."""


# The Standard Webhooks retry schedule (~27.6 h in total); after it, every 10 h until the end
# of the retry window.
RETRY_SCHEDULE: Final[tuple[float, ...]] = (5, 300, 1800, 7200, 18000, 36000, 36000)


def retry_delay(attempt: int, schedule: tuple[float, ...] = RETRY_SCHEDULE) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    if not schedule:
        return 0.0
    return schedule[min(max(attempt, 1), len(schedule)) - 1]


@dataclass(frozen=True, slots=True)
class Subscription:
    """Where one API key wants its events, signed with `secret` (Standard Webhooks)."""

    subscription_id: str
    key_id: str
    url: str
    secret: str
    events: frozenset[EventType]
    instances: frozenset[str] = frozenset()
    """The key's instance scope at fan-out time (filled from the key)."""


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """One event as subscribers receive it; `webhook_id` is stable across replays and retries."""

    webhook_id: str
    type: EventType
    instance_id: str | None
    command_id: str | None
    payload: dict[str, Any]

    def body(self, timestamp: str) -> bytes:
        document = {
            "id": self.webhook_id,
            "type": self.type.value,
            "timestamp": timestamp,
            "data": self.payload,
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def wants(subscription: Subscription, event: OutboundEvent) -> bool:
    """Outcomes and statuses go to the key that sent the command; received messages to every
    key whose scope has the instance."""
    if event.type not in subscription.events:
        return False
    if event.command_id is not None:
        return owns(subscription.key_id, event.command_id)
    if event.instance_id is None:
        return False
    return ALL_INSTANCES in subscription.instances or event.instance_id in subscription.instances
