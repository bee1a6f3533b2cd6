"""Composition root: `create_app(settings)` builds the ingest ASGI app; nothing runs at import.

Run it with `zapgate-ingest run` (or `uvicorn zapgate.ingest.app:create_app --factory`). Its
lifespan connects NATS (in the background, so a NATS outage at start only means spooling),
declares the streams, opens the spool, and starts the spool drainer, the archiver, the
instance-state follower and the probe server (`/healthz`, `/readyz`, `/metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from nats.errors import MaxPayloadError
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from zapgate.ingest.adapters.bodies import ObjectStoreBodies, ensure_bodies_bucket
from zapgate.ingest.adapters.bus import BusPublisher
from zapgate.ingest.adapters.consumers import Archiver, follow_instance_states
from zapgate.ingest.adapters.db import PostgresArchive
from zapgate.ingest.adapters.http_server import (
    HttpLimits,
    hygienic_protocol,
    install_secret_masking,
)
from zapgate.ingest.adapters.metrics import IngestMetrics
from zapgate.ingest.adapters.spool import FileSpool
from zapgate.ingest.domain.states import KnownStates
from zapgate.ingest.handlers import SecretCheck, webhook_routes
from zapgate.ingest.ports import SpoolRecord
from zapgate.ingest.service import Gateway
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import InvalidPublishError, NatsConnection
from zapgate.runtime.db import create_engine
from zapgate.runtime.probes import (
    ProbeServer,
    create_probe_app,
    database_check,
    nats_check,
    serve_probes,
)
from zapgate.runtime.streams import ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("zapgate.ingest.app")


@dataclass
class IngestRuntime:
    """What the running app holds; on `app.state.ingest` for tests and the CLI."""

    settings: IngestSettings
    connection: NatsConnection
    gateway: Gateway
    spool: FileSpool
    states: KnownStates
    metrics: IngestMetrics
    registry: CollectorRegistry
    bodies: ObjectStoreBodies | None = None
    archiver: Archiver | None = None
    probes: ProbeServer | None = None
    engine: AsyncEngine | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    spool_progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_spool_empty(self, timeout: float) -> None:
        """Return once every spooled webhook was published (tests, shutdown)."""
        async with asyncio.timeout(timeout), self.spool_progress:
            await self.spool_progress.wait_for(lambda: self.spool.pending == 0)

    @property
    def probe_port(self) -> int | None:
        return self.probes.port if self.probes is not None else None


def create_app(settings: IngestSettings | None = None, *, clock: Clock | None = None) -> Starlette:
    """The ingest ASGI app. Settings come from `ZAPGATE_INGEST_*` when not given."""
    # Required fields come from the environment when no settings are passed.
    settings = settings or IngestSettings()
    clock = clock or SystemClock()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry, max_instances=settings.metrics_max_instances)
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-ingest")
    )
    publish_timeout = timedelta(seconds=settings.publish_timeout)
    publisher = BusPublisher(connection, timeout=publish_timeout)  # request path: fail fast
    retrying = BusPublisher(connection, timeout=publish_timeout, attempts=3)
    # A body is many chunks, each acked: give it more than one publish's time.
    bodies = ObjectStoreBodies(connection, timeout=max(10.0, settings.publish_timeout))
    spool = FileSpool(settings.spool_dir)
    gateway = Gateway(publisher, spool, bodies, inline_event_bytes=settings.inline_event_bytes)
    states = KnownStates()
    metrics.spool_pending.set_function(lambda: spool.pending)
    runtime = IngestRuntime(
        settings, connection, gateway, spool, states, metrics, registry, bodies=bodies
    )
    install_secret_masking()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.ingest = runtime
        await _start(runtime, retrying)
        try:
            yield
        finally:
            await _stop(runtime)

    routes = webhook_routes(
        gateway,
        SecretCheck(settings.webhook_secrets),
        metrics,
        clock,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout=settings.body_read_timeout,
    )
    app = Starlette(routes=routes, lifespan=lifespan)
    limits = HttpLimits(
        header_read_timeout=settings.header_read_timeout,
        max_connections=settings.max_connections,
    )
    app.state.http_protocol = hygienic_protocol(
        limits, lambda reason: metrics.connections_refused.labels(reason).inc()
    )
    return app


async def _start(runtime: IngestRuntime, publisher: BusPublisher) -> None:
    settings = runtime.settings
    runtime.spool.open()
    drain_now = asyncio.Event()

    async def declare_streams(client: Client) -> None:
        await ensure_streams(client, all_streams(settings.stream_replicas))
        await ensure_bodies_bucket(client, replicas=settings.stream_replicas)
        drain_now.set()

    runtime.connection.on_connect(declare_streams)
    await runtime.connection.start()
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=4, max_overflow=2)
    runtime.engine = engine
    archive = PostgresArchive(engine)
    runtime.tasks.append(
        asyncio.create_task(_drain_forever(runtime, drain_now), name="spool-drainer")
    )
    if settings.archiver_enabled:
        runtime.archiver = Archiver(
            connection=runtime.connection,
            archive=archive,
            publisher=publisher,
            states=runtime.states,
            bodies=runtime.bodies,
            durable=settings.archiver_durable,
            batch=settings.archiver_batch,
            retry_delay=settings.archiver_retry_delay,
            ack_wait=settings.archiver_ack_wait,
        )
        runtime.tasks.append(asyncio.create_task(runtime.archiver.run(), name="archiver"))
        runtime.tasks.append(
            asyncio.create_task(
                follow_instance_states(runtime.connection, runtime.states), name="state-follower"
            )
        )

    def nats_ready() -> Awaitable[None]:
        return nats_check(runtime.connection.require())()

    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "nats": nats_ready,
        "database": database_check(engine),
    }
    runtime.probes = await serve_probes(
        create_probe_app(checks, registry=runtime.registry),
        settings.probe_host,
        settings.probe_port,
    )
    log.info(
        "ingest_started",
        probe_port=runtime.probe_port,
        spool_pending=runtime.spool.pending,
        archiver=settings.archiver_enabled,
    )


async def _drain_forever(runtime: IngestRuntime, drain_now: asyncio.Event) -> None:
    interval = runtime.settings.spool_drain_interval
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain_now.wait(), timeout=interval)
        drain_now.clear()
        if runtime.spool.pending == 0 or not runtime.connection.connected.is_set():
            continue
        try:
            drained = await runtime.spool.drain(_skip_oversized(runtime))
        except Exception as error:  # noqa: BLE001 - NATS dropped again: retry next round
            log.warning("spool_drain_interrupted", reason=repr(error), left=runtime.spool.pending)
            continue
        if drained:
            log.info("spool_drained", published=drained, left=runtime.spool.pending)
        async with runtime.spool_progress:
            runtime.spool_progress.notify_all()


def _skip_oversized(runtime: IngestRuntime) -> Callable[[SpoolRecord], Awaitable[None]]:
    gateway = runtime.gateway

    async def publish(record: SpoolRecord) -> None:
        try:
            await gateway.publish_spooled(record)
        except (MaxPayloadError, InvalidPublishError):
            # The gateway refuses oversized events before spooling; a record that still does
            # not fit would block every later one, so it is logged whole and passed over.
            log.error(  # noqa: TRY400 - the record is the useful part, not the traceback
                "spooled_record_too_large",
                dedupe_key=record.msg_id,
                size=len(record.body),
                reason="the NATS server can never take it (size or subject)",
            )

    return publish


async def _stop(runtime: IngestRuntime) -> None:
    for task in reversed(runtime.tasks):
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if runtime.probes is not None:
        await runtime.probes.stop()
    await runtime.connection.close()
    if runtime.engine is not None:
        await runtime.engine.dispose()
    runtime.spool.close()
    log.info("ingest_stopped", spool_pending=runtime.spool.pending)
