"""Composition root: `faststream run zapgate.sender.app:create_app --factory`.

Nothing is built at import. The broker connects first; the database engine, the W-API client,
the consumers and the probe server are built once it is up, and released on shutdown.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.sending import SendOutcomeReply
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.logging import configure_logging, faststream_logger
from zapgate.runtime.probes import create_probe_app, database_check, serve_probes
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import all_streams
from zapgate.sender import tables
from zapgate.sender.adapters.bus import (
    HeartbeatConsumer,
    JetStreamOutcomeLog,
    RuntimeEventPublisher,
)
from zapgate.sender.adapters.db import PostgresCommandStore, PostgresInstanceDirectory
from zapgate.sender.adapters.provider import WapiProvider
from zapgate.sender.handlers import HandlerOptions, SenderHandlers
from zapgate.sender.lanes import Pacer
from zapgate.sender.service import SenderDeps, SendPolicy
from zapgate.sender.settings import SenderSettings
from zapgate.wapi.client import WapiClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client

    from zapgate.wapi.port import WapiPort

_log = structlog.get_logger("zapgate.sender")
_NOT_READY = SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.INTERNAL, "sender is starting"))
API_QUEUE = "sender"


def create_app(
    settings: SenderSettings | None = None,
    *,
    wapi: WapiPort | None = None,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastStream:
    """The sender application. `wapi` and `clock` replace the real ones (tests, benchmarks).

    `configure_logs=False` when the entrypoint configured logging already (`zapgate-sender
    run` does; `faststream run ... --factory` relies on the default)."""
    settings = settings or SenderSettings()
    if configure_logs:
        # Before FastStream logs its first line ("FastStream app starting..."), so that is JSON.
        configure_logging(
            json=settings.log_json,
            level=settings.log_level,
            secrets=[settings.database_url.get_secret_value()],
        )
    broker = NatsBroker(
        settings.nats_url,
        max_reconnect_attempts=-1,
        logger=faststream_logger(),
        **settings.nats_connect_options(),
    )
    running: list[SenderHandlers] = []
    resources = AsyncExitStack()

    @broker.subscriber(subjects.API_SENDER_OUTCOME, queue=API_QUEUE)
    async def on_get_send_outcome(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_get_send_outcome(msg.body) if running else _NOT_READY

    @broker.subscriber(subjects.API_SENDER_RETRY, queue=API_QUEUE)
    async def on_retry_send(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_retry_send(msg.body) if running else _NOT_READY

    @broker.subscriber(subjects.API_SENDER_CANCEL, queue=API_QUEUE)
    async def on_cancel_send(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_cancel_send(msg.body) if running else _NOT_READY

    app = FastStream(broker, logger=faststream_logger())

    @app.after_startup
    async def start_service() -> None:
        running.append(await _start(settings, resources, wapi=wapi, clock=clock or SystemClock()))

    @app.on_shutdown
    async def stop_service() -> None:
        running.clear()
        await resources.aclose()
        _log.info("sender_stopped")

    return app


async def _start(
    settings: SenderSettings, resources: AsyncExitStack, *, wapi: WapiPort | None, clock: Clock
) -> SenderHandlers:
    """Build the object graph and start the consumers; every resource closes on `resources`."""
    engine = create_engine(settings.database_url.get_secret_value())
    resources.push_async_callback(engine.dispose)
    provider = wapi or WapiClient(base_url=settings.wapi_base_url)
    if wapi is None:
        resources.push_async_callback(provider.aclose)
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-sender")
    )
    connection.on_connect(lambda nc: _provision(nc, settings))
    await connection.start()
    resources.push_async_callback(connection.close)
    await connection.wait_connected(timeout=30)
    publisher = JetStreamPublisher(connection)
    deps = SenderDeps(
        store=PostgresCommandStore(engine),
        directory=PostgresInstanceDirectory(engine, settings.token_cipher()),
        provider=WapiProvider(provider, live_check_timeout=settings.live_check_timeout),
        publisher=RuntimeEventPublisher(publisher),
        outcomes=JetStreamOutcomeLog(connection),
        clock=clock,
        pacer=Pacer(clock, settings.min_send_gap.total_seconds()),
        policy=SendPolicy.from_settings(settings),
    )
    options = HandlerOptions.from_settings(settings)
    handlers = SenderHandlers(deps, options)
    resources.push_async_callback(handlers.stop)
    dead_letters = SqlDeadLetterStore(engine, tables.dead_letters)
    for consumer in handlers.consumers(settings):
        loop = HeartbeatConsumer(
            connection,
            consumer.spec,
            consumer.handler,
            decode=consumer.decode,
            dead_letters=dead_letters,
            publisher=publisher,
            clock=clock,
            concurrency=settings.max_in_flight,
        )
        loop.heartbeat = options.heartbeat
        await loop.start()
        resources.push_async_callback(loop.stop)
    checks = {"nats": _nats_check(connection), "database": database_check(engine)}
    probes = await serve_probes(create_probe_app(checks), settings.probe_host, settings.probe_port)
    resources.push_async_callback(probes.stop)
    _log.info("sender_started")
    return handlers


async def _provision(nc: Client, settings: SenderSettings) -> None:
    await ensure_streams(nc, all_streams(settings.stream_replicas))
    if settings.sweep_every is not None:
        await ensure_schedule(
            nc,
            stream=subjects.STREAM_TICKS,
            schedule_subject=subjects.SENDER_TICK_SCHEDULE,
            target_subject=subjects.SENDER_TICK,
            every=settings.sweep_every,
        )


def _nats_check(connection: NatsConnection) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        await connection.require().flush(timeout=1)

    return check
