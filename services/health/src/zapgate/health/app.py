"""Composition root: `create_app()` wires settings, database, provider, broker and handlers.

Run: `faststream run zapgate.health.app:create_app --factory` or `zapgate-health run`.
Nothing is built at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import nats
import structlog
from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.js.api import ConsumerConfig
from pydantic import BaseModel, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    DeliverySignalled,
    GetInstanceHealth,
    HealthReply,
    HealthTick,
    InstanceListReply,
    InstanceStateChanged,
    ListInstances,
    PauseInstance,
    ReconnectRequested,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import InstanceConnected, InstanceDisconnected, WebhookKind
from zapgate.health import observations
from zapgate.health.notify import OperatorWebhook
from zapgate.health.ports import SessionProvider
from zapgate.health.repository import AlreadyRegisteredError, HealthRepository, NotRegisteredError
from zapgate.health.service import HealthEvent, HealthService, RoundReport
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import configure_logging
from zapgate.runtime.probes import (
    ProbeServer,
    create_probe_app,
    database_check,
    nats_check,
    serve_probes,
)
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import all_streams
from zapgate.wapi.client import WapiClient

_log = structlog.get_logger("zapgate.health.app")
_API_QUEUE = "health-api"
M = TypeVar("M", bound=BaseModel)
_Decorator = Callable[[Callable[..., Awaitable[Any]]], object]


class JetStreamPublisher:
    """Publishes health events with `stream=` (PubAck awaited) and `Nats-Msg-Id` = event id."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, event: HealthEvent) -> None:
        if isinstance(event, InstanceStateChanged):
            subject = subjects.state_changed_subject(event.instance_id)
        else:
            subject = subjects.notification_subject(event.instance_id)
        await self._broker.publish(
            event,
            subject,
            stream=subjects.STREAM_HEALTH,
            headers={subjects.MSG_ID_HEADER: str(event.event_id)},
            timeout=5.0,
        )


def _decode(model: type[M], msg: NatsMessage) -> M | Problem:
    try:
        return model.model_validate_json(msg.body)
    except ValidationError as exc:
        return Problem.of(
            ErrorCode.INVALID_COMMAND, detail=str(exc.errors(include_url=False))[:500]
        )


def create_app(  # noqa: C901, PLR0913, PLR0915 - the composition root wires every handler here
    settings: HealthSettings | None = None,
    *,
    clock: Clock | None = None,
    provider: SessionProvider | None = None,
    configure_logs: bool = True,
    serve_probe: bool = True,
    on_tick: Callable[[RoundReport], None] | None = None,
) -> FastStream:
    """Build the health service. Tests pass settings, a ManualClock and their own provider."""
    # Env-provided settings: pydantic-settings fills the required fields from the environment.
    settings = settings or HealthSettings()
    clock = clock or SystemClock()
    if configure_logs:
        configure_logging(json=settings.log_json, level=settings.log_level)
    engine = create_engine(settings.database_url.get_secret_value())
    repository = HealthRepository(engine)
    wapi: WapiClient | None = None
    if provider is None:
        wapi = WapiClient(base_url=settings.wapi_base_url)
        provider = wapi
    operator_http: httpx.AsyncClient | None = None
    operator = None
    if settings.operator_webhook_url:
        operator_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        operator = OperatorWebhook(
            settings.operator_webhook_url,
            operator_http,
            attempts=settings.operator_webhook_attempts,
        )
    broker = NatsBroker(
        settings.nats_url, max_reconnect_attempts=-1, connect_timeout=5, graceful_timeout=15
    )
    service = HealthService(
        repository=repository,
        provider=provider,
        publisher=JetStreamPublisher(broker),
        clock=clock,
        settings=settings,
        operator=operator,
        on_tick=on_tick,
    )
    prefix = settings.consumer_prefix

    def durable_pull(subject: str, stream: str, name: str, **config: Any) -> _Decorator:  # noqa: ANN401 - ConsumerConfig fields
        return broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=f"{prefix}-{name}",
            pull_sub=PullSub(batch_size=config.pop("batch_size", 16), timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            config=ConsumerConfig(**config) if config else None,
        )

    # --- the tick ------------------------------------------------------------------------------

    tick_ack_wait = max(settings.tick_interval.total_seconds(), 60.0)

    @durable_pull(
        subjects.HEALTH_TICK, subjects.STREAM_TICKS, "tick", batch_size=1, ack_wait=tick_ack_wait
    )
    async def on_health_tick(msg: NatsMessage) -> None:
        async def heartbeat() -> None:
            # Long ticks (thousands of instances) must not be redelivered to another replica.
            await msg.in_progress()

        sequence = msg.raw_message.metadata.sequence.stream
        with structlog.contextvars.bound_contextvars(tick_sequence=sequence):
            await service.tick(heartbeat=heartbeat)

    # --- observations --------------------------------------------------------------------------

    @durable_pull(subjects.PROOF_OF_LIFE_ALL, subjects.STREAM_HEALTH, "proof-of-life")
    async def on_proof_of_life(event: SessionProofOfLife) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            await service.observe(event.instance_id, observations.from_proof_of_life(event))

    @durable_pull(subjects.SESSION_OBSERVED_ALL, subjects.STREAM_HEALTH, "session-observed")
    async def on_session_observed(event: SessionObserved) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            observation = observations.from_session_observed(event)
            if observation is None:
                _log.info("session observation says nothing", instance_id=event.instance_id)
                return
            await service.observe(event.instance_id, observation)

    @durable_pull(subjects.DELIVERY_STALL_ALL, subjects.STREAM_HEALTH, "delivery-signal")
    async def on_delivery_signalled(event: DeliverySignalled) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            await service.observe(event.instance_id, observations.from_delivery_signal(event))

    @durable_pull(subjects.RECONNECT_REQUESTED_ALL, subjects.STREAM_HEALTH, "reconnect")
    async def on_reconnect_requested(event: ReconnectRequested) -> None:
        with _bound(event.instance_id, str(event.event_id)):
            await service.reconnect_requested(event.instance_id, event.requested_by)

    @durable_pull(
        subjects.webhook_subject(WebhookKind.INSTANCE_CONNECTED),
        subjects.STREAM_WEBHOOKS,
        "webhook-connected",
    )
    async def on_instance_connected(event: InstanceConnected) -> None:
        await _on_connection_webhook(event)

    @durable_pull(
        subjects.webhook_subject(WebhookKind.INSTANCE_DISCONNECTED),
        subjects.STREAM_WEBHOOKS,
        "webhook-disconnected",
    )
    async def on_instance_disconnected(event: InstanceDisconnected) -> None:
        await _on_connection_webhook(event)

    async def _on_connection_webhook(event: InstanceConnected | InstanceDisconnected) -> None:
        if event.instance_id is None:
            _log.info("connection webhook without instance id ignored", kind=event.kind.value)
            return
        with _bound(event.instance_id, str(event.event_id)):
            await service.observe(event.instance_id, observations.from_connection_webhook(event))

    # --- request-reply API (queue group: one replica answers each request) -----------------------

    def api(subject: str) -> _Decorator:
        return broker.subscriber(subject, queue=_API_QUEUE)

    async def answering(reply_type: Callable[..., M], call: Callable[[], Awaitable[M]]) -> M:
        try:
            return await call()
        except AlreadyRegisteredError:
            return reply_type(ok=False, error=Problem.of(ErrorCode.INSTANCE_EXISTS))
        except NotRegisteredError:
            return reply_type(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        except Exception as exc:  # noqa: BLE001 - the caller gets a coded answer, not a timeout
            _log.exception("health API request failed")
            return reply_type(
                ok=False, error=Problem.of(ErrorCode.INTERNAL, detail=type(exc).__name__)
            )

    @api(subjects.API_HEALTH_REGISTER)
    async def register_instance(msg: NatsMessage) -> RegistryReply:
        command = _decode(RegisterInstance, msg)
        if isinstance(command, Problem):
            return RegistryReply(ok=False, error=command)

        async def run() -> RegistryReply:
            summary = await service.register(
                instance_id=command.instance_id,
                display_name=command.display_name,
                token=command.token.get_secret_value(),
                managed=command.managed,
                replace=command.replace,
            )
            return RegistryReply(ok=True, instance=summary)

        return await answering(RegistryReply, run)

    @api(subjects.API_HEALTH_PAUSE)
    async def pause_instance(msg: NatsMessage) -> RegistryReply:
        command = _decode(PauseInstance, msg)
        if isinstance(command, Problem):
            return RegistryReply(ok=False, error=command)

        async def run() -> RegistryReply:
            summary = await service.set_paused(command.instance_id, paused=command.paused)
            return RegistryReply(ok=True, instance=summary)

        return await answering(RegistryReply, run)

    @api(subjects.API_HEALTH_REMOVE)
    async def remove_instance(msg: NatsMessage) -> RegistryReply:
        command = _decode(RemoveInstance, msg)
        if isinstance(command, Problem):
            return RegistryReply(ok=False, error=command)

        async def run() -> RegistryReply:
            return RegistryReply(ok=True, instance=await service.remove(command.instance_id))

        return await answering(RegistryReply, run)

    @api(subjects.API_HEALTH_LIST)
    async def list_instances(msg: NatsMessage) -> InstanceListReply:
        command = _decode(ListInstances, msg)
        if isinstance(command, Problem):
            return InstanceListReply(ok=False, error=command)

        async def run() -> InstanceListReply:
            return InstanceListReply(ok=True, instances=await service.repository.list_instances())

        return await answering(InstanceListReply, run)

    @api(subjects.API_HEALTH_GET)
    async def get_instance_health(msg: NatsMessage) -> HealthReply:
        query = _decode(GetInstanceHealth, msg)
        if isinstance(query, Problem):
            return HealthReply(ok=False, error=query)

        async def run() -> HealthReply:
            found = await service.repository.health(query.instance_id)
            if query.instance_id is not None and not found:
                return HealthReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
            return HealthReply(ok=True, instances=found)

        return await answering(HealthReply, run)

    @api(subjects.API_HEALTH_CHECK_NOW)
    async def check_now(msg: NatsMessage) -> CheckNowReply:
        command = _decode(CheckNow, msg)
        if isinstance(command, Problem):
            return CheckNowReply(ok=False, error=command)

        async def run() -> CheckNowReply:
            checked = await service.check_now(command.instance_id)
            if command.instance_id is not None and not checked:
                return CheckNowReply(ok=False, error=Problem.of(ErrorCode.INSTANCE_UNKNOWN))
            return CheckNowReply(ok=True, checked=checked)

        return await answering(CheckNowReply, run)

    # --- lifecycle -----------------------------------------------------------------------------

    probe: list[ProbeServer] = []

    async def provision() -> None:
        nc = await nats.connect(settings.nats_url, connect_timeout=5, max_reconnect_attempts=3)
        try:
            await ensure_streams(nc, all_streams(settings.stream_replicas))
            if settings.install_schedule:
                installed = await ensure_schedule(
                    nc,
                    stream=subjects.STREAM_TICKS,
                    schedule_subject=subjects.HEALTH_TICK_SCHEDULE,
                    target_subject=subjects.HEALTH_TICK,
                    every=settings.tick_interval,
                    body=HealthTick().model_dump_json().encode(),
                )
                _log.info(
                    "tick schedule",
                    every_s=settings.tick_interval.total_seconds(),
                    installed=installed,
                )
        finally:
            await nc.close()

    async def after_startup() -> None:
        await service.flush_outbox()  # anything a previous run stored but could not publish
        if serve_probe:
            checks = {
                "nats": nats_check(broker.connection),
                "database": database_check(engine),
            }
            probe.append(
                await serve_probes(
                    create_probe_app(checks), settings.probe_host, settings.probe_port
                )
            )
        _log.info("health started", nats_url=settings.nats_url)

    async def on_shutdown() -> None:
        for server in probe:
            await server.stop()

    async def after_shutdown() -> None:
        if wapi is not None:
            await wapi.aclose()
        if operator_http is not None:
            await operator_http.aclose()
        await engine.dispose()

    app = FastStream(
        broker,
        on_startup=[provision],
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        after_shutdown=[after_shutdown],
    )
    app.context.set_global("health_service", service)
    return app


@contextlib.contextmanager
def _bound(instance_id: str, event_id: str) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(instance_id=instance_id, event_id=event_id):
        yield


def health_service(app: FastStream) -> HealthService:
    """The service wired into `app` (tests drive ticks and read state through it)."""
    service = app.context.get("health_service")
    if not isinstance(service, HealthService):
        raise TypeError("not a health app")
    return service
