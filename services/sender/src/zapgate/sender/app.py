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
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import configure_logging
from zapgate.runtime.probes import create_probe_app, database_check, nats_check, serve_probes
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import all_streams
from zapgate.sender.adapters.bus import JetStreamOutcomeLog, JetStreamPublisher, PullLoop
from zapgate.sender.adapters.db import PostgresCommandStore, PostgresInstanceDirectory
from zapgate.sender.adapters.provider import WapiProvider
from zapgate.sender.handlers import HandlerOptions, SenderHandlers
from zapgate.sender.lanes import Pacer
from zapgate.sender.service import SenderDeps, SendPolicy
from zapgate.sender.settings import SenderSettings
from zapgate.wapi.client import WapiClient

if TYPE_CHECKING:
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
    """The sender application. `wapi` and `clock` replace the real ones (tests, benchmarks)."""
    settings = settings or SenderSettings()
    if configure_logs:
        # Before FastStream logs its first line ("FastStream app starting..."), so that is JSON.
        configure_logging(json=settings.log_json, level=settings.log_level)
    broker = NatsBroker(settings.nats_url, max_reconnect_attempts=-1)
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

    app = FastStream(broker)

    @app.after_startup
    async def start_service() -> None:
        nc = broker.connection
        engine = create_engine(settings.database_url.get_secret_value())
        resources.push_async_callback(engine.dispose)
        provider = wapi or WapiClient(base_url=settings.wapi_base_url)
        if wapi is None:
            resources.push_async_callback(provider.aclose)
        store = PostgresCommandStore(engine)
        deps = SenderDeps(
            store=store,
            directory=PostgresInstanceDirectory(engine, settings.token_cipher()),
            provider=WapiProvider(provider, live_check_timeout=settings.live_check_timeout),
            publisher=JetStreamPublisher(nc),
            outcomes=JetStreamOutcomeLog(nc),
            clock=clock or SystemClock(),
            pacer=Pacer(clock or SystemClock(), settings.min_send_gap.total_seconds()),
            policy=SendPolicy.from_settings(settings),
        )
        handlers = SenderHandlers(deps, HandlerOptions.from_settings(settings), store)
        resources.push_async_callback(handlers.stop)
        await ensure_streams(nc, all_streams(settings.stream_replicas))
        if settings.sweep_every is not None:
            await ensure_schedule(
                nc,
                stream=subjects.STREAM_TICKS,
                schedule_subject=subjects.SENDER_TICK_SCHEDULE,
                target_subject=subjects.SENDER_TICK,
                every=settings.sweep_every,
            )
        specs = handlers.consumers(settings)
        for spec, handle in specs:
            loop = PullLoop(nc, spec, handle)
            await loop.start()
            resources.push_async_callback(loop.stop)
        checks = {"nats": nats_check(nc), "database": database_check(engine)}
        probes = await serve_probes(
            create_probe_app(checks), settings.probe_host, settings.probe_port
        )
        resources.push_async_callback(probes.stop)
        running.append(handlers)
        _log.info("sender_started", consumers=[spec.durable for spec, _ in specs])

    @app.on_shutdown
    async def stop_service() -> None:
        running.clear()
        await resources.aclose()
        _log.info("sender_stopped")

    return app
