"""Health's subjects and API verbs: decode, bind ids for the log, call one use case, reply.

Consumers: the runtime's `PullConsumer` over the topology's `HEALTH_*` specs (the tick, proof of
life, the sender's looks and delivery signals, reconnect requests, and the connected /
disconnected / message-status webhooks). A handler returning acks its message; a database or
NATS outage naks it without counting; a message that fails by itself `max_failures` times is
kept in `health_dead_letters` and copied to `zg.deadletter.health.<name>`, and the next flow
(see `zapgate.runtime.consumer`). The tick stays in progress while it runs (the spec's
heartbeat), so a long round is never given to another replica.

Request-reply verbs (the runtime's `request_handler`, the queue group the topology declares:
one replica answers each request): the registry, health, check-now, and the operator verbs
(restart now, QR code, pairing code, history).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from faststream.nats import NatsMessage

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    DeliverySignalled,
    GetInstanceHealth,
    GetInstanceHistory,
    GetQrCode,
    HealthReply,
    InstanceHistoryReply,
    InstanceListReply,
    ListInstances,
    PairingCodeReply,
    PauseInstance,
    QrCodeReply,
    ReconnectRequested,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
    RequestPairingCode,
    RestartInstance,
    RestartReply,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import (
    InstanceConnected,
    InstanceDisconnected,
    MessageStatusReported,
)
from zapgate.health import observations
from zapgate.health.ports import AlreadyRegisteredError, NotRegisteredError
from zapgate.runtime.consumer import Consumer
from zapgate.runtime.requests import request_handler
from zapgate.runtime.topology import (
    HEALTH_DELIVERY_SIGNAL,
    HEALTH_PROOF_OF_LIFE,
    HEALTH_RECONNECT,
    HEALTH_SESSION_OBSERVED,
    HEALTH_TICK,
    HEALTH_WEBHOOK_CONNECTED,
    HEALTH_WEBHOOK_DISCONNECTED,
    HEALTH_WEBHOOK_STATUS,
    queue_of,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from faststream.nats import NatsBroker
    from pydantic import BaseModel

    from zapgate.health.operator_api import OperatorApi
    from zapgate.health.service import HealthService
    from zapgate.health.settings import HealthSettings
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.consumer import Delivery
    from zapgate.runtime.streams import ConsumerSpec

_log = structlog.get_logger("zapgate.health.handlers")
API_QUEUE = queue_of("health")
_MIN_TICK_ACK_WAIT = timedelta(minutes=1)
_BATCH = 16  # messages per fetch of an event consumer (the tick takes one, statuses 64)


@dataclass(frozen=True, slots=True)
class Verb:
    """One request-reply verb: its subject, its name in logs and docs, its reply model and the
    `bytes -> reply` function (never raises: see `zapgate.runtime.requests`)."""

    subject: str
    name: str
    reply: type[BaseModel]
    handle: Callable[[bytes], Awaitable[BaseModel]]


@contextlib.contextmanager
def _bound(instance_id: str, event_id: str) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(instance_id=instance_id, event_id=event_id):
        yield


def _raw(data: bytes) -> bytes:
    return data


class HealthHandlers:
    """Health's entry points over its use cases (`service`, `operator`) and the clock that
    stamps when evidence was received."""

    def __init__(self, service: HealthService, operator: OperatorApi, clock: Clock) -> None:
        self.service = service
        self.operator = operator
        self._clock = clock

    def consumers(self, settings: HealthSettings) -> list[Consumer]:
        """The topology's health consumers under the settings' prefix and failure policy; the
        tick's ack wait is at least the tick interval, its heartbeat a third of that."""

        def spec(declared: ConsumerSpec) -> ConsumerSpec:
            return replace(
                declared,
                max_failures=settings.consumer_max_failures,
                retry_delay=settings.consumer_retry_delay,
            ).with_prefix(settings.consumer_prefix)

        tick_wait = max(settings.tick_interval, _MIN_TICK_ACK_WAIT)
        tick = replace(HEALTH_TICK, ack_wait=tick_wait, heartbeat=tick_wait / 3)
        return [
            Consumer(spec(tick), self.on_health_tick, _raw, batch=1),
            Consumer(
                spec(HEALTH_PROOF_OF_LIFE),
                self.on_proof_of_life,
                SessionProofOfLife.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_SESSION_OBSERVED),
                self.on_session_observed,
                SessionObserved.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_DELIVERY_SIGNAL),
                self.on_delivery_signal,
                DeliverySignalled.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_RECONNECT),
                self.on_reconnect_requested,
                ReconnectRequested.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_WEBHOOK_CONNECTED),
                self.on_instance_connected,
                InstanceConnected.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_WEBHOOK_DISCONNECTED),
                self.on_instance_disconnected,
                InstanceDisconnected.model_validate_json,
                batch=_BATCH,
            ),
            Consumer(
                spec(HEALTH_WEBHOOK_STATUS),
                self.on_message_status,
                MessageStatusReported.model_validate_json,
                batch=64,
            ),
        ]

    # --- consumers (the runtime's loop acks on return, see `zapgate.runtime.consumer`) ---------

    async def on_health_tick(self, data: bytes, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """The server-scheduled tick (its body says nothing): one round of checks."""
        with structlog.contextvars.bound_contextvars(tick_sequence=delivery.sequence):
            await self.service.tick()

    async def on_proof_of_life(self, event: SessionProofOfLife, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """Ingest saw `connectedPhone`: the session is alive and complete."""
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_proof_of_life(event, now=self._clock.now())
            await self.service.observe(event.instance_id, observation)

    async def on_session_observed(self, event: SessionObserved, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """What the sender's live pre-send check saw."""
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_session_observed(event, now=self._clock.now())
            if observation is None:
                _log.info("session_observation_says_nothing", why="connected is unknown")
                return
            await self.service.observe(event.instance_id, observation)

    async def on_delivery_signal(self, event: DeliverySignalled, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """The sender saw deliveries stall or resume."""
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_delivery_signal(event, now=self._clock.now())
            await self.service.observe(event.instance_id, observation)

    async def on_reconnect_requested(self, event: ReconnectRequested, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """Someone saw the session down and asks for a restart (under the cooldown)."""
        with _bound(event.instance_id, str(event.event_id)):
            await self.service.reconnect_requested(event.instance_id, event.requested_by)

    async def on_instance_connected(self, event: InstanceConnected, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """The `instance_connected` webhook as ingest published it."""
        await self._connection_webhook(event)

    async def on_instance_disconnected(
        self,
        event: InstanceDisconnected,
        delivery: Delivery,  # noqa: ARG002 - the runtime's handler signature
    ) -> None:
        """The `instance_disconnected` webhook as ingest published it."""
        await self._connection_webhook(event)

    async def _connection_webhook(self, event: InstanceConnected | InstanceDisconnected) -> None:
        if event.instance_id is None:
            _log.info("connection_webhook_ignored", kind=event.kind.value, why="no instance id")
            return
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_connection_webhook(event, now=self._clock.now())
            await self.service.observe(event.instance_id, observation)

    async def on_message_status(self, event: MessageStatusReported, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """A receipt is fresh delivery evidence (lifts a DELIVERY_STALLED gate)."""
        if event.instance_id is None:
            return
        observation = observations.from_receipt(event, now=self._clock.now())
        if observation is not None:
            with _bound(event.instance_id, str(event.event_id)):
                await self.service.delivery_evidence(event.instance_id, observation)

    # --- request-reply API (the runtime's helper decodes, calls and always replies) --------------

    def verbs(self) -> list[Verb]:
        """Every verb health answers; unknown ids and duplicates are coded refusals."""
        refusals = {
            AlreadyRegisteredError: ErrorCode.INSTANCE_EXISTS,
            NotRegisteredError: ErrorCode.INSTANCE_UNKNOWN,
        }
        operator = self.operator

        def verb(
            subject: str,
            name: str,
            request: type[Any],
            reply: type[Any],
            call: Callable[[Any], Awaitable[Any]],
        ) -> Verb:
            handle = request_handler(request, reply, call, refusals=refusals, name=name)
            return Verb(subject, name, reply, handle)

        return [
            verb(subjects.API_HEALTH_REGISTER, "register_instance", RegisterInstance,
                 RegistryReply, self._register),
            verb(subjects.API_HEALTH_PAUSE, "pause_instance", PauseInstance, RegistryReply,
                 self._pause),
            verb(subjects.API_HEALTH_REMOVE, "remove_instance", RemoveInstance, RegistryReply,
                 self._remove),
            verb(subjects.API_HEALTH_LIST, "list_instances", ListInstances, InstanceListReply,
                 self._list),
            verb(subjects.API_HEALTH_GET, "get_instance_health", GetInstanceHealth, HealthReply,
                 self._health),
            verb(subjects.API_HEALTH_CHECK_NOW, "check_now", CheckNow, CheckNowReply,
                 self._check),
            verb(subjects.API_HEALTH_RESTART, "restart_instance", RestartInstance, RestartReply,
                 operator.restart),
            verb(subjects.API_HEALTH_QR_CODE, "get_qr_code", GetQrCode, QrCodeReply,
                 operator.qr_code),
            verb(subjects.API_HEALTH_PAIRING_CODE, "request_pairing_code", RequestPairingCode,
                 PairingCodeReply, operator.pairing_code),
            verb(subjects.API_HEALTH_HISTORY, "get_instance_history", GetInstanceHistory,
                 InstanceHistoryReply, operator.history),
        ]  # fmt: skip

    async def _register(self, command: RegisterInstance) -> RegistryReply:
        summary = await self.service.register(
            instance_id=command.instance_id,
            display_name=command.display_name,
            token=command.token.get_secret_value(),
            managed=command.managed,
            replace=command.replace,
        )
        return RegistryReply(ok=True, instance=summary)

    async def _pause(self, command: PauseInstance) -> RegistryReply:
        summary = await self.service.set_paused(command.instance_id, paused=command.paused)
        return RegistryReply(ok=True, instance=summary)

    async def _remove(self, command: RemoveInstance) -> RegistryReply:
        return RegistryReply(ok=True, instance=await self.service.remove(command.instance_id))

    async def _list(self, _: ListInstances) -> InstanceListReply:
        return InstanceListReply(ok=True, instances=await self.service.list_instances())

    async def _health(self, query: GetInstanceHealth) -> HealthReply:
        found = await self.service.health(query.instance_id)
        if query.instance_id is not None and not found:
            raise NotRegisteredError(query.instance_id)
        return HealthReply(ok=True, instances=found)

    async def _check(self, command: CheckNow) -> CheckNowReply:
        checked = await self.service.check_now(command.instance_id)
        if command.instance_id is not None and not checked:
            raise NotRegisteredError(command.instance_id)
        return CheckNowReply(ok=True, checked=checked)


def subscribe_verbs(broker: NatsBroker, verbs: list[Verb]) -> None:
    """Answer each verb on `broker` in the topology's queue group (one replica per request)."""
    for verb in verbs:
        _subscribe_verb(broker, verb)


def _subscribe_verb(broker: NatsBroker, verb: Verb) -> None:
    handle = verb.handle

    async def answer(msg: NatsMessage) -> BaseModel:
        return await handle(msg.body)

    # FastStream names the subscriber after the function and serialises by its return type.
    answer.__name__ = answer.__qualname__ = verb.name
    answer.__annotations__ = {"msg": NatsMessage, "return": verb.reply}
    broker.subscriber(verb.subject, queue=API_QUEUE)(answer)
