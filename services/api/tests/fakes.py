"""In-memory implementations of every port of the API, recording what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zapgate.api.ports import Attempt, BusUnavailableError, StoredRequest
from zapgate.api.service import Refusal, RefusalKind
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import HealthReply, InstanceHealth
from zapgate.contracts.sending import (
    SendMessage,
    SendOutcome,
    SendOutcomeReply,
    SendStatus,
)

if TYPE_CHECKING:
    from datetime import datetime

    from zapgate.api.domain import ApiKey, Subscription
    from zapgate.api.outbound import WebhookJob


def outcome_of(command: SendMessage, status: SendStatus = SendStatus.SENT) -> SendOutcome:
    return SendOutcome(
        command_id=command.command_id,
        instance_id=command.instance_id,
        phone=command.phone,
        kind=command.body.kind,
        status=status,
        provider_message_id="MSG-1" if status is SendStatus.SENT else None,
        attempts=1,
    )


@dataclass
class FakeSender:
    """Decides every command `status`; stores one outcome per command id (like the sender)."""

    status: SendStatus = SendStatus.SENT
    down: bool = False
    submitted: list[SendMessage] = field(default_factory=list)
    decided: dict[str, SendOutcome] = field(default_factory=dict)

    def _decide(self, command: SendMessage) -> SendOutcome:
        if self.down:
            raise BusUnavailableError("nats down")
        self.submitted.append(command)
        return self.decided.setdefault(command.command_id, outcome_of(command, self.status))

    async def submit(self, command: SendMessage) -> None:
        self._decide(command)

    async def send_and_wait(self, command: SendMessage, timeout: float) -> SendOutcome | None:
        del timeout
        return self._decide(command)

    async def outcome(self, command_id: str) -> SendOutcomeReply:
        found = self.decided.get(command_id)
        if found is None:
            return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_FOUND))
        return SendOutcomeReply(ok=True, outcome=found)

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcomeReply:
        del command_id, new_command_id
        return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_RETRYABLE))

    async def cancel(self, command_id: str) -> SendOutcomeReply:
        del command_id
        return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_CANCELLABLE))


@dataclass
class FakeHealth:
    instances: list[InstanceHealth] = field(default_factory=list)

    async def health(self, instance_id: str | None) -> HealthReply:
        found = [i for i in self.instances if instance_id in {None, i.instance_id}]
        if instance_id is not None and not found:
            return HealthReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        return HealthReply(ok=True, instances=found)


@dataclass
class FakeKeyStore:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    lookups: int = 0

    async def get(self, key_id: str) -> ApiKey | None:
        self.lookups += 1
        return self.keys.get(key_id)

    async def add(self, key: ApiKey, now: datetime) -> None:
        del now
        self.keys[key.key_id] = key

    async def revoke(self, key_id: str, now: datetime) -> bool:
        del key_id, now
        return False

    async def list_keys(self) -> list[ApiKey]:
        return list(self.keys.values())


@dataclass
class FakeRequestLog:
    stored: dict[str, StoredRequest] = field(default_factory=dict)

    async def remember(self, request: StoredRequest, now: datetime) -> StoredRequest:
        del now
        return self.stored.setdefault(request.command_id, request)

    async def find(self, key_id: str, command_id: str) -> StoredRequest | None:
        found = self.stored.get(command_id)
        return found if found is not None and found.key_id == key_id else None


@dataclass
class FakeSubscriptions:
    subscriptions: dict[str, Subscription] = field(default_factory=dict)

    async def add(self, subscription: Subscription, now: datetime) -> None:
        del now
        self.subscriptions[subscription.subscription_id] = subscription

    async def of_key(self, key_id: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.key_id == key_id]

    async def get(self, subscription_id: str) -> Subscription | None:
        return self.subscriptions.get(subscription_id)

    async def remove(self, key_id: str, subscription_id: str, now: datetime) -> bool:
        del now
        found = self.subscriptions.get(subscription_id)
        if found is None or found.key_id != key_id:
            return False
        del self.subscriptions[subscription_id]
        return True

    async def active(self) -> list[Subscription]:
        return list(self.subscriptions.values())


@dataclass
class FakeDeliveryLog:
    rows: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)

    async def start(self, subscription_id: str, webhook_id: str, now: datetime) -> Attempt:
        row = self.rows.setdefault(
            (subscription_id, webhook_id),
            {"first": now, "attempts": 0, "delivered": False, "gave_up": False},
        )
        row["attempts"] = int(str(row["attempts"])) + 1
        return Attempt(
            first_attempt_at=row["first"],  # type: ignore[arg-type]
            attempts=int(str(row["attempts"])),
            delivered=bool(row["delivered"]),
            gave_up=bool(row["gave_up"]),
        )

    async def finish(
        self,
        subscription_id: str,
        webhook_id: str,
        *,
        delivered: bool,
        status: int | None,
        now: datetime,
    ) -> None:
        del status, now
        row = self.rows[(subscription_id, webhook_id)]
        row["delivered" if delivered else "gave_up"] = True


@dataclass
class FakePoster:
    """Answers `statuses` in order (then 204), recording every POST."""

    statuses: list[int | None] = field(default_factory=list)
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        self.posts.append((url, body, headers))
        return self.statuses.pop(0) if self.statuses else 204


@dataclass
class FakeJobs:
    jobs: list[WebhookJob] = field(default_factory=list)

    async def publish_job(self, job: WebhookJob) -> None:
        self.jobs.append(job)


@dataclass
class FakeDestinations:
    """`DestinationCheck` refusing the URLs in `refused` (with the guard's code), recording every
    URL checked."""

    refused: set[str] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)

    async def check(self, url: str) -> None:
        self.checked.append(url)
        if url in self.refused:
            raise Refusal(
                RefusalKind.UNPROCESSABLE,
                Problem(
                    code="WEBHOOK_DESTINATION_FORBIDDEN",
                    message="A URL do webhook aponta para um endereço interno.",
                ),
            )
