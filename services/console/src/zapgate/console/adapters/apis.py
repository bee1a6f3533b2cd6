"""Health's, the sender's and ingest's NATS request APIs, as the console's ports.

Every call is one core-NATS request with a timeout; no responders or no answer in time raise
`ApiUnavailableError`, a coded refusal raises `ApiRefusedError` with health's pt-BR message.
"""

from __future__ import annotations

from typing import TypeVar

from nats.aio.client import Client
from pydantic import BaseModel, SecretStr

from zapgate.console.ports import ApiRefusedError, ApiUnavailableError
from zapgate.contracts import subjects
from zapgate.contracts.envelope import Contract
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    GetInstanceHealth,
    GetInstanceHistory,
    GetQrCode,
    HealthReply,
    InstanceHealth,
    InstanceHistoryReply,
    InstanceStateChanged,
    InstanceSummary,
    PairingCodeReply,
    PauseInstance,
    QrCodeReply,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
    RequestPairingCode,
    RestartInstance,
    RestartReply,
)
from zapgate.contracts.sending import (
    CountStuck,
    ListSends,
    RetrySend,
    SendListReply,
    SendOutcome,
    SendOutcomeReply,
    SendStatus,
    SendSummary,
    StuckCountsReply,
)
from zapgate.contracts.webhooks import CountWebhooks, WebhookCountsReply
from zapgate.runtime.requests import NoAnswer, ask

R = TypeVar("R", bound=BaseModel)


async def request(  # noqa: PLR0913 - keyword-only, one per part of a request
    nc: Client, *, service: str, subject: str, command: Contract, reply: type[R], timeout: float
) -> R:
    """One request-reply; raises ApiUnavailableError when nobody answers in `timeout` s."""
    try:
        return await ask(nc, subject, command, reply, timeout=timeout)
    except NoAnswer as error:
        raise ApiUnavailableError(service) from error


def _refused(error: Problem | None) -> ApiRefusedError:
    return ApiRefusedError(error or Problem.of(ErrorCode.INTERNAL))


class NatsHealthApi:
    """`HealthApi` over `zg.api.health.*`."""

    def __init__(self, nc: Client, *, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def _ask(self, subject: str, command: Contract, reply: type[R]) -> R:
        return await request(
            self._nc,
            service="health",
            subject=subject,
            command=command,
            reply=reply,
            timeout=self._timeout,
        )

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        answer = await self._ask(
            subjects.API_HEALTH_GET, GetInstanceHealth(instance_id=instance_id), HealthReply
        )
        if not answer.ok:
            raise _refused(answer.error)
        return answer.instances

    async def check_now(self, instance_id: str) -> list[InstanceHealth]:
        answer = await self._ask(
            subjects.API_HEALTH_CHECK_NOW, CheckNow(instance_id=instance_id), CheckNowReply
        )
        if not answer.ok:
            raise _refused(answer.error)
        return answer.checked

    async def _registry(self, subject: str, command: Contract) -> InstanceSummary:
        answer = await self._ask(subject, command, RegistryReply)
        if not answer.ok or answer.instance is None:
            raise _refused(answer.error)
        return answer.instance

    async def set_paused(self, instance_id: str, *, paused: bool) -> InstanceSummary:
        return await self._registry(
            subjects.API_HEALTH_PAUSE, PauseInstance(instance_id=instance_id, paused=paused)
        )

    async def register(
        self, *, instance_id: str, display_name: str, token: str, managed: bool
    ) -> InstanceSummary:
        command = RegisterInstance(
            instance_id=instance_id,
            display_name=display_name,
            token=SecretStr(token),
            managed=managed,
        )
        return await self._registry(subjects.API_HEALTH_REGISTER, command)

    async def remove(self, instance_id: str) -> InstanceSummary:
        return await self._registry(
            subjects.API_HEALTH_REMOVE, RemoveInstance(instance_id=instance_id)
        )

    async def restart(self, instance_id: str, *, requested_by: str) -> RestartReply:
        command = RestartInstance(instance_id=instance_id, requested_by=requested_by)
        answer = await self._ask(subjects.API_HEALTH_RESTART, command, RestartReply)
        if not answer.ok:
            raise _refused(answer.error)
        return answer

    async def qr_code(self, instance_id: str) -> QrCodeReply:
        answer = await self._ask(
            subjects.API_HEALTH_QR_CODE, GetQrCode(instance_id=instance_id), QrCodeReply
        )
        if not answer.ok:
            raise _refused(answer.error)
        return answer

    async def pairing_code(self, instance_id: str, phone: str) -> str:
        command = RequestPairingCode(instance_id=instance_id, phone=phone)
        answer = await self._ask(subjects.API_HEALTH_PAIRING_CODE, command, PairingCodeReply)
        if not answer.ok or not answer.code:
            raise _refused(answer.error)
        return answer.code

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]:
        query = GetInstanceHistory(instance_id=instance_id, limit=limit)
        answer = await self._ask(subjects.API_HEALTH_HISTORY, query, InstanceHistoryReply)
        if not answer.ok:
            raise _refused(answer.error)
        return answer.transitions


class NatsSenderApi:
    """`SenderApi` over `zg.api.sender.*`."""

    def __init__(self, nc: Client, *, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def _ask(self, subject: str, command: Contract, reply: type[R]) -> R:
        return await request(
            self._nc,
            service="sender",
            subject=subject,
            command=command,
            reply=reply,
            timeout=self._timeout,
        )

    async def sends(
        self, instance_id: str, *, statuses: list[SendStatus], stuck: bool, limit: int
    ) -> list[SendSummary]:
        query = ListSends(instance_id=instance_id, statuses=statuses, stuck=stuck, limit=limit)
        answer = await self._ask(subjects.API_SENDER_LIST, query, SendListReply)
        if not answer.ok:
            raise _refused(answer.error)
        return answer.sends

    async def stuck_counts(self) -> dict[str, int]:
        answer = await self._ask(subjects.API_SENDER_STUCK_COUNTS, CountStuck(), StuckCountsReply)
        if not answer.ok:
            raise _refused(answer.error)
        return answer.counts

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcome:
        command = RetrySend(command_id=command_id, new_command_id=new_command_id)
        answer = await self._ask(subjects.API_SENDER_RETRY, command, SendOutcomeReply)
        if not answer.ok or answer.outcome is None:
            raise _refused(answer.error)
        return answer.outcome


class NatsIngestApi:
    """`IngestApi` over `zg.api.ingest.*`."""

    def __init__(self, nc: Client, *, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def webhook_counts(self, instance_id: str) -> WebhookCountsReply:
        answer = await request(
            self._nc,
            service="ingest",
            subject=subjects.API_INGEST_WEBHOOK_COUNTS,
            command=CountWebhooks(instance_id=instance_id),
            reply=WebhookCountsReply,
            timeout=self._timeout,
        )
        if not answer.ok:
            raise _refused(answer.error)
        return answer
