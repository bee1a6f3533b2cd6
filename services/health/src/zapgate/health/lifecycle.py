"""Startup and shutdown of the health app: streams and the tick schedule, probes, closing."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import nats
import structlog
from faststream import FastStream
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.contracts import subjects
from zapgate.contracts.health import HealthTick
from zapgate.health.adapters.bus import HealthEventPublisher
from zapgate.health.adapters.db import PostgresHealthRepository
from zapgate.health.service import HealthService
from zapgate.health.settings import HealthSettings
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


def wire(  # noqa: PLR0913 - what startup and shutdown touch, keyword-only
    broker: NatsBroker,
    service: HealthService,
    settings: HealthSettings,
    *,
    publisher: HealthEventPublisher,
    engine: AsyncEngine,
    closing: Sequence[WapiClient | httpx.AsyncClient],
    serve_probe: bool,
) -> FastStream:
    """The FastStream app over `broker` with health's startup and shutdown hooks."""
    probe: list[ProbeServer] = []

    async def provision() -> None:
        nc = await nats.connect(
            settings.nats_url,
            connect_timeout=5,
            max_reconnect_attempts=3,
            **settings.nats_connect_options(),
        )
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
        await publisher.start()

    async def after_startup() -> None:
        # Tokens in clear (from before encryption) or under an old key (a rotation) are
        # encrypted under the newest key here, once per start.
        changed = await PostgresHealthRepository(engine, settings.token_cipher()).reencrypt_tokens()
        if changed:
            _log.info("tokens re-encrypted under the newest key", count=changed)
        await service.flush_outbox()  # anything a previous run stored but could not publish
        if serve_probe:
            checks = {"nats": nats_check(broker.connection), "database": database_check(engine)}
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
        await publisher.close()
        for client in closing:
            await client.aclose()
        await engine.dispose()

    return FastStream(
        broker,
        on_startup=[provision],
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        after_shutdown=[after_shutdown],
    )
