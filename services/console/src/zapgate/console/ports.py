"""Everything the console's use cases need from outside, as Protocols.

The console owns only its audit table. It reads instance state through health's NATS request
API, sends through the sender's and counts webhooks through ingest's; it never reads another
service's tables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from zapgate.contracts.errors import Problem
from zapgate.contracts.health import (
    InstanceHealth,
    InstanceStateChanged,
    InstanceSummary,
    QrCodeReply,
    RestartReply,
)
from zapgate.contracts.sending import SendOutcome, SendStatus, SendSummary
from zapgate.contracts.webhooks import WebhookCountsReply


class ApiUnavailableError(Exception):
    """The service behind an API did not answer in time (no responders or a timeout)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} did not answer")
        self.service = service


class ApiRefusedError(Exception):
    """The API answered with a coded refusal; `problem.message` is pt-BR."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.code)
        self.problem = problem


class HealthApi(Protocol):
    """Health's request API (`zg.api.health.*`). Raises ApiUnavailableError/ApiRefusedError."""

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]: ...

    async def check_now(self, instance_id: str) -> list[InstanceHealth]: ...

    async def set_paused(self, instance_id: str, *, paused: bool) -> InstanceSummary: ...

    async def register(
        self, *, instance_id: str, display_name: str, token: str, managed: bool
    ) -> InstanceSummary: ...

    async def remove(self, instance_id: str) -> InstanceSummary: ...

    async def restart(self, instance_id: str, *, requested_by: str) -> RestartReply:
        """Restart now under health's cooldown (`restarted` False: refused by it)."""
        ...

    async def qr_code(self, instance_id: str) -> QrCodeReply: ...

    async def pairing_code(self, instance_id: str, phone: str) -> str: ...

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]: ...


class SenderApi(Protocol):
    """The sender's request API (`zg.api.sender.*`). Raises ApiUnavailableError/ApiRefusedError."""

    async def sends(
        self, instance_id: str, *, statuses: list[SendStatus], stuck: bool, limit: int
    ) -> list[SendSummary]: ...

    async def stuck_counts(self) -> dict[str, int]: ...

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcome:
        """A new attempt of a failed send (through the preflight again)."""
        ...


class IngestApi(Protocol):
    """Ingest's read API (`zg.api.ingest.*`). Raises ApiUnavailableError/ApiRefusedError."""

    async def webhook_counts(self, instance_id: str) -> WebhookCountsReply:
        """The instance's archived webhooks of the last hour, per kind and disposition."""
        ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action: who, what, on which instance, when, and how it ended."""

    at: datetime
    operator: str
    action: str
    instance_id: str | None
    outcome: str
    detail: str | None = None


class AuditLog(Protocol):
    """The console's own table of operator actions (append-only)."""

    async def record(self, entry: AuditEntry) -> None: ...

    async def recent(self, *, limit: int, instance_id: str | None = None) -> list[AuditEntry]: ...


class PasswordVerifier(Protocol):
    """Checks a password against a stored hash (Argon2id through pwdlib)."""

    async def verify(self, password: str, stored_hash: str | None) -> bool: ...


StateListener = Callable[[str], Awaitable[None]]
"""Called with the instance id of every state change health publishes."""


class StateFeed(Protocol):
    """Tells the console which instance changed state (health's state subjects)."""

    async def start(self, listener: StateListener) -> None: ...

    async def stop(self) -> None: ...
