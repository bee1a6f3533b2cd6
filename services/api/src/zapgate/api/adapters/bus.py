"""The sender and health over NATS (JetStream for commands, request-reply for everything else),
and the outbound webhook jobs on ZG_API_HOOKS."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from zapgate.api.ports import BusUnavailableError
from zapgate.contracts import subjects
from zapgate.contracts.client import CommandNotAcceptedError, SenderClient, SendTimeoutError
from zapgate.contracts.health import GetInstanceHealth, HealthReply
from zapgate.contracts.sending import (
    CancelSend,
    GetSendOutcome,
    RetrySend,
    SendMessage,
    SendOutcome,
    SendOutcomeReply,
)
from zapgate.runtime.requests import NoAnswer, ask

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.api.outbound import WebhookJob
    from zapgate.runtime.publisher import JetStreamPublisher

_Reply = TypeVar("_Reply", bound=BaseModel)


async def _request(
    nc: Client, subject: str, request: BaseModel, reply: type[_Reply], timeout: float
) -> _Reply:
    try:
        return await ask(nc, subject, request, reply, timeout=timeout)
    except NoAnswer as error:
        raise BusUnavailableError(str(error)) from error


class NatsSender:
    """`SenderGateway` over the typed SenderClient and the sender's request-reply subjects."""

    def __init__(self, nc: Client, *, request_timeout: float, retry_timeout: float) -> None:
        self._nc = nc
        self._client = SenderClient(nc)
        self._request_timeout = request_timeout
        self._retry_timeout = retry_timeout

    async def submit(self, command: SendMessage) -> None:
        try:
            await self._client.submit(command)
        except CommandNotAcceptedError as error:
            raise BusUnavailableError(str(error)) from error

    async def send_and_wait(self, command: SendMessage, timeout: float) -> SendOutcome | None:
        try:
            return await self._client.send(command, timeout=timeout, wait_while_held=True)
        except SendTimeoutError as waited:
            return waited.last_seen
        except CommandNotAcceptedError as error:
            raise BusUnavailableError(str(error)) from error

    async def outcome(self, command_id: str) -> SendOutcomeReply:
        return await _request(
            self._nc,
            subjects.API_SENDER_OUTCOME,
            GetSendOutcome(command_id=command_id),
            SendOutcomeReply,
            self._request_timeout,
        )

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcomeReply:
        return await _request(
            self._nc,
            subjects.API_SENDER_RETRY,
            RetrySend(command_id=command_id, new_command_id=new_command_id),
            SendOutcomeReply,
            self._retry_timeout,
        )

    async def cancel(self, command_id: str) -> SendOutcomeReply:
        return await _request(
            self._nc,
            subjects.API_SENDER_CANCEL,
            CancelSend(command_id=command_id),
            SendOutcomeReply,
            self._request_timeout,
        )


class NatsHealth:
    """`HealthGateway` over health's `zg.api.health.instances.health` request-reply."""

    def __init__(self, nc: Client, *, request_timeout: float) -> None:
        self._nc = nc
        self._timeout = request_timeout

    async def health(self, instance_id: str | None) -> HealthReply:
        return await _request(
            self._nc,
            subjects.API_HEALTH_GET,
            GetInstanceHealth(instance_id=instance_id),
            HealthReply,
            self._timeout,
        )


class HookPublisher:
    """`JobPublisher` over the runtime's JetStream publisher."""

    def __init__(self, publisher: JetStreamPublisher) -> None:
        self._publisher = publisher

    async def publish_job(self, job: WebhookJob) -> None:
        await self._publisher.publish(
            subjects.api_hook_subject(job.subscription_id),
            job.model_dump_json().encode(),
            stream=subjects.STREAM_API_HOOKS,
            msg_id=f"{job.subscription_id}:{job.webhook_id}",
        )
