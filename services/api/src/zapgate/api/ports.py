"""Every port the API's use cases need: real adapters in `adapters/`, fakes in tests/fakes.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from zapgate.api.domain import ApiKey, Subscription
from zapgate.contracts.health import HealthReply
from zapgate.contracts.sending import SendMessage, SendOutcome, SendOutcomeReply

if TYPE_CHECKING:
    from zapgate.api.outbound import WebhookJob


class BusUnavailableError(RuntimeError):
    """NATS did not take the command or nobody answered the request in time."""


class SenderGateway(Protocol):
    """The sender's NATS API (commands on ZG_SEND, request-reply for outcome, retry, cancel)."""

    async def submit(self, command: SendMessage) -> None:
        """Store the command in JetStream (Nats-Msg-Id = command id). Raises BusUnavailableError."""
        ...

    async def send_and_wait(self, command: SendMessage, timeout: float) -> SendOutcome | None:
        """Submit and wait up to `timeout` s for a final outcome; the last one seen (e.g. held)
        or None when none came in time. Raises BusUnavailableError."""
        ...

    async def outcome(self, command_id: str) -> SendOutcomeReply:
        """The stored outcome and timeline (`NOT_FOUND` when the sender has no such row)."""
        ...

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcomeReply: ...

    async def cancel(self, command_id: str) -> SendOutcomeReply: ...


class HealthGateway(Protocol):
    """Health's read API: one instance's health, or every instance's with None."""

    async def health(self, instance_id: str | None) -> HealthReply: ...


class KeyStore(Protocol):
    """API keys, by key id (the secret is only ever stored hashed)."""

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def add(self, key: ApiKey, now: datetime) -> None: ...

    async def revoke(self, key_id: str, now: datetime) -> bool: ...

    async def list_keys(self) -> list[ApiKey]: ...


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """The first request seen for one (API key, idempotency key)."""

    command_id: str
    key_id: str
    instance_id: str
    fingerprint: str


class RequestLog(Protocol):
    """Idempotency keys per API key, with the fingerprint of the request that first used them."""

    async def remember(self, request: StoredRequest, now: datetime) -> StoredRequest:
        """Insert once; return what is stored (ours when new, the first request otherwise)."""
        ...

    async def find(self, key_id: str, command_id: str) -> StoredRequest | None: ...


class SubscriptionStore(Protocol):
    """Webhook subscriptions per API key."""

    async def add(self, subscription: Subscription, now: datetime) -> None: ...

    async def of_key(self, key_id: str) -> list[Subscription]: ...

    async def get(self, subscription_id: str) -> Subscription | None: ...

    async def remove(self, key_id: str, subscription_id: str, now: datetime) -> bool: ...

    async def active(self) -> list[Subscription]:
        """Every active subscription with its key's instance scope (keys not revoked)."""
        ...


class DeliveryLog(Protocol):
    """One row per (subscription, webhook id): the dedupe record and the retry clock."""

    async def start(self, subscription_id: str, webhook_id: str, now: datetime) -> Attempt:
        """Record an attempt; returns the first attempt's time and whether it was delivered."""
        ...

    async def finish(
        self,
        subscription_id: str,
        webhook_id: str,
        *,
        delivered: bool,
        status: int | None,
        now: datetime,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    first_attempt_at: datetime
    attempts: int
    delivered: bool
    gave_up: bool


class WebhookPoster(Protocol):
    """POSTs one signed body; the HTTP status, or None when no answer came (network, timeout)."""

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None: ...


class DestinationCheck(Protocol):
    """Where webhooks may go (adapters/destinations.py: public addresses only)."""

    async def check(self, url: str) -> None:
        """Return when every address of `url`'s host is allowed; raise a coded refusal (with
        `code` and a pt-BR `message`) otherwise."""
        ...


class JobPublisher(Protocol):
    """Where webhook jobs wait for their delivery (adapters/bus.py: the ZG_API_HOOKS stream)."""

    async def publish_job(self, job: WebhookJob) -> None:
        """Store the job in ZG_API_HOOKS (Nats-Msg-Id = subscription id + webhook id)."""
        ...
