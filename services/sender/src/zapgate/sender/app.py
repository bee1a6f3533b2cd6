"""Composition root: `faststream run zapgate.sender.app:create_app --factory`.

Nothing is built at import. The broker connects first; the database engine, the W-API client,
the consumers and the probe server are built once it is up, and released on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.sending import GetSendOutcome, RetrySend, SendOutcomeReply
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
from zapgate.sender.lanes import Pacer
from zapgate.sender.publisher import JetStreamPublisher
from zapgate.sender.sending import SenderDeps, SendPolicy, get_outcome, retry_send
from zapgate.sender.service import SenderService, ServiceOptions
from zapgate.sender.settings import SenderSettings
from zapgate.sender.store import PostgresCommandStore, PostgresInstanceDirectory
from zapgate.sender.tracking import StuckPolicy
from zapgate.wapi.client import WapiClient

if TYPE_CHECKING:
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.wapi.port import WapiPort

_log = structlog.get_logger("zapgate.sender")
_Request = TypeVar("_Request", GetSendOutcome, RetrySend)
_NOT_READY = Problem.of(ErrorCode.INTERNAL, "sender is starting")
API_QUEUE = "sender"


def _decode(model: type[_Request], msg: NatsMessage) -> _Request | Problem:
    # Validating by hand (not through the handler's annotation) lets a malformed request get
    # a coded refusal instead of silence: FastStream would raise and never reply.
    try:
        return model.model_validate_json(msg.body)
    except ValidationError as exc:
        _log.warning("api_request_refused", code=ErrorCode.INVALID_COMMAND.value)
        return Problem.of(
            ErrorCode.INVALID_COMMAND, detail=str(exc.errors(include_url=False))[:500]
        )


@dataclass
class _Running:
    service: SenderService
    engine: AsyncEngine
    wapi: WapiPort
    owns_wapi: bool
    probes: ProbeServer


def create_app(  # noqa: C901 - the lifecycle hooks read best together, each is a few lines
    settings: SenderSettings | None = None,
    *,
    wapi: WapiPort | None = None,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastStream:
    """The sender application. `wapi` and `clock` replace the real ones (tests, benchmarks)."""
    settings = settings or SenderSettings()
    broker = NatsBroker(settings.nats_url, max_reconnect_attempts=-1)
    running: list[_Running] = []

    @broker.subscriber(subjects.API_SENDER_OUTCOME, queue=API_QUEUE)
    async def on_get_send_outcome(msg: NatsMessage) -> SendOutcomeReply:
        request = _decode(GetSendOutcome, msg)
        if isinstance(request, Problem):
            return SendOutcomeReply(ok=False, error=request)
        if not running:
            return SendOutcomeReply(ok=False, error=_NOT_READY)
        return await get_outcome(request.command_id, running[0].service.deps.store)

    @broker.subscriber(subjects.API_SENDER_RETRY, queue=API_QUEUE)
    async def on_retry_send(msg: NatsMessage) -> SendOutcomeReply:
        request = _decode(RetrySend, msg)
        if isinstance(request, Problem):
            return SendOutcomeReply(ok=False, error=request)
        if not running:
            return SendOutcomeReply(ok=False, error=_NOT_READY)
        service = running[0].service
        return await retry_send(request, service.deps, service.lanes.run)

    app = FastStream(broker)

    @app.on_startup
    def setup_logging() -> None:
        if configure_logs:
            configure_logging(json=settings.log_json, level=settings.log_level)

    @app.after_startup
    async def start_service() -> None:
        engine = create_engine(settings.database_url.get_secret_value())
        provider = wapi or WapiClient(base_url=settings.wapi_base_url)
        nc = broker.connection
        service = build_service(settings, nc, engine, provider, clock or SystemClock())
        await service.start()
        probe_app = create_probe_app({"nats": nats_check(nc), "database": database_check(engine)})
        probes = await serve_probes(probe_app, settings.probe_host, settings.probe_port)
        running.append(_Running(service, engine, provider, wapi is None, probes))

    @app.on_shutdown
    async def stop_service() -> None:
        while running:
            current = running.pop()
            await current.service.stop()
            await current.probes.stop()
            if current.owns_wapi:
                await current.wapi.aclose()
            await current.engine.dispose()
        _log.info("sender_stopped")

    return app


def build_service(
    settings: SenderSettings, nc: Client, engine: AsyncEngine, wapi: WapiPort, clock: Clock
) -> SenderService:
    """The sender's object graph from its settings (not started)."""
    deps = SenderDeps(
        store=PostgresCommandStore(engine),
        directory=PostgresInstanceDirectory(engine),
        wapi=wapi,
        publisher=JetStreamPublisher(nc),
        clock=clock,
        pacer=Pacer(clock, settings.min_send_gap.total_seconds()),
        policy=SendPolicy(
            live_check_timeout=settings.live_check_timeout,
            provider_attempts=settings.provider_attempts,
            backoff=settings.provider_backoff,
            backoff_cap=settings.provider_backoff_cap,
            sending_lease=settings.sending_lease,
        ),
    )
    options = ServiceOptions(
        consumer_prefix=settings.consumer_prefix,
        max_in_flight=settings.max_in_flight,
        command_ack_wait=settings.command_ack_wait,
        status_match_attempts=settings.status_match_attempts,
        status_retry_delay=settings.status_retry_delay,
        sweep_every=settings.sweep_every,
        stream_replicas=settings.stream_replicas,
        stuck=StuckPolicy(
            window=settings.stuck_window,
            stall_threshold=settings.stall_threshold,
            stall_lookback=settings.stall_lookback,
        ),
    )
    return SenderService(nc, deps, options)
