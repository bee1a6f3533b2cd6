"""Health's subjects and API verbs: decode, bind ids for the log, call one use case, reply.

Durable pull consumers (JetStream, NACK on error so a failed message comes back):
the tick, proof of life, the sender's looks and delivery signals, reconnect requests, and the
connected / disconnected / message-status webhooks. Request-reply verbs (queue group
`health-api`, one replica answers each request) for the registry, health and check-now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.js.api import ConsumerConfig
from pydantic import BaseModel

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    DeliverySignalled,
    GetInstanceHealth,
    HealthReply,
    InstanceListReply,
    ListInstances,
    PauseInstance,
    ReconnectRequested,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import (
    InstanceConnected,
    InstanceDisconnected,
    MessageStatusReported,
    WebhookKind,
)
from zapgate.health import observations
from zapgate.health.ports import AlreadyRegisteredError, NotRegisteredError
from zapgate.health.service import HealthService
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import Clock
from zapgate.runtime.requests import request_handler

_log = structlog.get_logger("zapgate.health.handlers")
_API_QUEUE = "health-api"
_Decorator = Callable[[Callable[..., Awaitable[Any]]], object]


@contextlib.contextmanager
def _bound(instance_id: str, event_id: str) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(instance_id=instance_id, event_id=event_id):
        yield


def register_consumers(  # noqa: C901 - one small handler per subject
    broker: NatsBroker, service: HealthService, settings: HealthSettings, clock: Clock
) -> None:
    """Declare health's durable pull consumers on `broker`."""
    prefix = settings.consumer_prefix

    def durable(subject: str, stream: str, name: str, **config: Any) -> _Decorator:  # noqa: ANN401 - ConsumerConfig fields
        return broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=f"{prefix}-{name}",
            pull_sub=PullSub(batch_size=config.pop("batch_size", 16), timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            config=ConsumerConfig(**config) if config else None,
            # FastStream pulls into `_INBOX.` unless told; health may only read its own inbox.
            inbox_prefix=f"{settings.nats_inbox_prefix}.".encode(),
        )

    tick_ack_wait = max(settings.tick_interval.total_seconds(), 60.0)

    @durable(
        subjects.HEALTH_TICK, subjects.STREAM_TICKS, "tick", batch_size=1, ack_wait=tick_ack_wait
    )
    async def on_health_tick(msg: NatsMessage) -> None:
        sequence = msg.raw_message.metadata.sequence.stream
        with structlog.contextvars.bound_contextvars(tick_sequence=sequence):
            # Long ticks (thousands of instances) must not be redelivered to another replica.
            await service.tick(heartbeat=msg.in_progress)

    @durable(subjects.PROOF_OF_LIFE_ALL, subjects.STREAM_HEALTH, "proof-of-life")
    async def on_proof_of_life(event: SessionProofOfLife) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_proof_of_life(event, now=clock.now())
            await service.observe(event.instance_id, observation)

    @durable(subjects.SESSION_OBSERVED_ALL, subjects.STREAM_HEALTH, "session-observed")
    async def on_session_observed(event: SessionObserved) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_session_observed(event, now=clock.now())
            if observation is None:
                _log.info("session observation says nothing", why="connected is unknown")
                return
            await service.observe(event.instance_id, observation)

    @durable(subjects.DELIVERY_STALL_ALL, subjects.STREAM_HEALTH, "delivery-signal")
    async def on_delivery_signalled(event: DeliverySignalled) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_delivery_signal(event, now=clock.now())
            await service.observe(event.instance_id, observation)

    @durable(subjects.RECONNECT_REQUESTED_ALL, subjects.STREAM_HEALTH, "reconnect")
    async def on_reconnect_requested(event: ReconnectRequested) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            await service.reconnect_requested(event.instance_id, event.requested_by)

    async def on_connection_webhook(event: InstanceConnected | InstanceDisconnected) -> None:
        if event.instance_id is None:
            _log.info("connection webhook ignored", kind=event.kind.value, why="no instance id")
            return
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_connection_webhook(event, now=clock.now())
            await service.observe(event.instance_id, observation)

    @durable(
        subjects.webhook_subject(WebhookKind.INSTANCE_CONNECTED),
        subjects.STREAM_WEBHOOKS,
        "webhook-connected",
    )
    async def on_instance_connected(event: InstanceConnected) -> None:
        await on_connection_webhook(event)

    @durable(
        subjects.webhook_subject(WebhookKind.INSTANCE_DISCONNECTED),
        subjects.STREAM_WEBHOOKS,
        "webhook-disconnected",
    )
    async def on_instance_disconnected(event: InstanceDisconnected) -> None:
        await on_connection_webhook(event)

    @durable(
        subjects.webhook_subject(WebhookKind.MESSAGE_STATUS),
        subjects.STREAM_WEBHOOKS,
        "webhook-status",
        batch_size=64,
    )
    async def on_message_status(event: MessageStatusReported) -> None:
        if event.instance_id is None:
            return
        observation = observations.from_receipt(event, now=clock.now())
        if observation is not None:
            with _bound(event.instance_id, str(event.event_id)):
                await service.delivery_evidence(event.instance_id, observation)


def register_api(broker: NatsBroker, service: HealthService) -> None:
    """Declare health's request-reply verbs on `broker` (decode, call, coded reply: the
    runtime's `request_handler`; unknown ids and duplicates are coded refusals)."""
    refusals = {
        AlreadyRegisteredError: ErrorCode.INSTANCE_EXISTS,
        NotRegisteredError: ErrorCode.INSTANCE_UNKNOWN,
    }

    async def register(command: RegisterInstance) -> RegistryReply:
        summary = await service.register(
            instance_id=command.instance_id,
            display_name=command.display_name,
            token=command.token.get_secret_value(),
            managed=command.managed,
            replace=command.replace,
        )
        return RegistryReply(ok=True, instance=summary)

    async def pause(command: PauseInstance) -> RegistryReply:
        summary = await service.set_paused(command.instance_id, paused=command.paused)
        return RegistryReply(ok=True, instance=summary)

    async def remove(command: RemoveInstance) -> RegistryReply:
        return RegistryReply(ok=True, instance=await service.remove(command.instance_id))

    async def listing(_: ListInstances) -> InstanceListReply:
        return InstanceListReply(ok=True, instances=await service.list_instances())

    async def health(query: GetInstanceHealth) -> HealthReply:
        found = await service.health(query.instance_id)
        if query.instance_id is not None and not found:
            raise NotRegisteredError(query.instance_id)
        return HealthReply(ok=True, instances=found)

    async def check(command: CheckNow) -> CheckNowReply:
        checked = await service.check_now(command.instance_id)
        if command.instance_id is not None and not checked:
            raise NotRegisteredError(command.instance_id)
        return CheckNowReply(ok=True, checked=checked)

    verbs: list[tuple[str, str, type[BaseModel], Callable[[bytes], Awaitable[BaseModel]]]] = [
        (subjects.API_HEALTH_REGISTER, "register_instance", RegistryReply,
         request_handler(RegisterInstance, RegistryReply, register, refusals=refusals)),
        (subjects.API_HEALTH_PAUSE, "pause_instance", RegistryReply,
         request_handler(PauseInstance, RegistryReply, pause, refusals=refusals)),
        (subjects.API_HEALTH_REMOVE, "remove_instance", RegistryReply,
         request_handler(RemoveInstance, RegistryReply, remove, refusals=refusals)),
        (subjects.API_HEALTH_LIST, "list_instances", InstanceListReply,
         request_handler(ListInstances, InstanceListReply, listing, refusals=refusals)),
        (subjects.API_HEALTH_GET, "get_instance_health", HealthReply,
         request_handler(GetInstanceHealth, HealthReply, health, refusals=refusals)),
        (subjects.API_HEALTH_CHECK_NOW, "check_now", CheckNowReply,
         request_handler(CheckNow, CheckNowReply, check, refusals=refusals)),
    ]  # fmt: skip
    for subject, name, reply, handle in verbs:
        _subscribe_verb(broker, subject, name, reply, handle)


def _subscribe_verb(
    broker: NatsBroker,
    subject: str,
    name: str,
    reply: type[BaseModel],
    handle: Callable[[bytes], Awaitable[BaseModel]],
) -> None:
    async def answer(msg: NatsMessage) -> BaseModel:
        return await handle(msg.body)

    # FastStream names the subscriber after the function and serialises by its return type.
    answer.__name__ = answer.__qualname__ = name
    answer.__annotations__ = {"msg": NatsMessage, "return": reply}
    broker.subscriber(subject, queue=_API_QUEUE)(answer)
