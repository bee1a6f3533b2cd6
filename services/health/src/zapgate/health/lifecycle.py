"""Startup and shutdown of the health app: logging, streams and the tick schedule, the verbs,
the consumers and the probes.

Startup: the supervised NATS connection (provisioning the streams and the tick schedule on every
new client), FastStream's broker with the request-reply verbs, then the token re-encryption,
the outbox flush, the runtime's pull consumers and the probes. Shutdown in reverse order.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker

from zapgate.contracts import subjects
from zapgate.contracts.health import HealthTick
from zapgate.health import tables
from zapgate.health.adapters.db import PostgresHealthRepository
from zapgate.health.handlers import subscribe_verbs
from zapgate.runtime.consumer import PullConsumer
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.logging import faststream_logger, url_for_log
from zapgate.runtime.probes import create_probe_app, database_check, serve_probes
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import httpx
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.health.handlers import HealthHandlers
    from zapgate.health.settings import HealthSettings
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.connection import NatsConnection
    from zapgate.wapi.client import WapiClient

_log = structlog.get_logger("zapgate.health.app")
HANDLERS = "health_handlers"
"""The key of the app's `HealthHandlers` in its FastStream context."""


def wire(  # noqa: PLR0913 - what startup and shutdown touch, keyword-only
    handlers: HealthHandlers,
    settings: HealthSettings,
    *,
    connection: NatsConnection,
    engine: AsyncEngine,
    clock: Clock,
    closing: Sequence[WapiClient | httpx.AsyncClient],
    serve_probe: bool,
) -> FastStream:
    """The FastStream app: its broker answers the verbs; the hooks start and stop the rest."""
    broker = NatsBroker(
        settings.nats_url,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        graceful_timeout=15,
        logger=faststream_logger(),
        **settings.nats_connect_options(),
    )
    subscribe_verbs(broker, handlers.verbs())
    resources = AsyncExitStack()
    connection.on_connect(lambda nc: _provision(nc, settings))

    async def connect() -> None:
        resources.push_async_callback(engine.dispose)
        for client in closing:
            resources.push_async_callback(client.aclose)
        await connection.start()
        resources.push_async_callback(connection.close)
        await connection.wait_connected(timeout=30)

    async def start() -> None:
        # Tokens in clear (from before encryption) or under an old key (a rotation) are
        # encrypted under the newest key here, once per start.
        changed = await PostgresHealthRepository(engine, settings.token_cipher()).reencrypt_tokens()
        if changed:
            _log.info("tokens_reencrypted", count=changed)
        await handlers.service.flush_outbox()  # what a previous run stored but did not publish
        dead_letters = SqlDeadLetterStore(engine, tables.dead_letters)
        publisher = JetStreamPublisher(connection)
        for consumer in handlers.consumers(settings):
            loop: PullConsumer[object] = PullConsumer(
                connection,
                consumer.spec,
                consumer.handler,
                decode=consumer.decode,
                dead_letters=dead_letters,
                publisher=publisher,
                clock=clock,
                batch=consumer.batch,
            )
            await loop.start()
            resources.push_async_callback(loop.stop)
        if serve_probe:
            checks = {"nats": _nats_check(connection), "database": database_check(engine)}
            probes = await serve_probes(
                create_probe_app(checks), settings.probe_host, settings.probe_port
            )
            resources.push_async_callback(probes.stop)
        _log.info("health_started", nats_url=url_for_log(settings.nats_url))

    async def stop() -> None:
        await resources.aclose()
        _log.info("health_stopped")

    app = FastStream(
        broker,
        logger=faststream_logger(),
        on_startup=[connect],
        after_startup=[start],
        after_shutdown=[stop],
    )
    app.context.set_global(HANDLERS, handlers)
    return app


async def _provision(nc: Client, settings: HealthSettings) -> None:
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
            "tick_schedule", every_s=settings.tick_interval.total_seconds(), installed=installed
        )


def _nats_check(connection: NatsConnection) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        await connection.require().flush(timeout=1)

    return check
