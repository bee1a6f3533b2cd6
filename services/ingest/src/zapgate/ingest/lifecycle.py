"""What runs beside the webhook endpoint, started and stopped by the app's lifespan.

`start` connects NATS in the background (a NATS outage at start only means spooling), declares
the streams and the body bucket on every (re)connect, opens the spool, and starts the spool
drainer, the archiver (the runtime's pull consumer, `handlers.WebhookArchiver`), the
instance-state follower and the probe server (`/healthz`, `/readyz`, `/metrics`). `stop` ends
them in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from nats.errors import MaxPayloadError
from prometheus_client import CollectorRegistry

from zapgate.ingest import tables
from zapgate.ingest.adapters.bodies import ObjectStoreBodies, ensure_bodies_bucket
from zapgate.ingest.adapters.bus import BusPublisher
from zapgate.ingest.adapters.consumers import archiver_consumer, follow_instance_states
from zapgate.ingest.adapters.counts import PostgresWebhookCounts
from zapgate.ingest.adapters.db import PostgresArchive
from zapgate.ingest.domain.states import KnownStates
from zapgate.ingest.handlers import WebhookArchiver, webhook_counts_server
from zapgate.ingest.service import archive_batch
from zapgate.runtime.clock import SystemClock
from zapgate.runtime.connection import InvalidPublishError, NatsConnection
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.probes import (
    ProbeServer,
    create_probe_app,
    database_check,
    nats_check,
    serve_probes,
)
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.contracts.webhooks import WebhookCountsReply
    from zapgate.ingest.adapters.child_metrics import ChildMetrics
    from zapgate.ingest.adapters.metrics import IngestMetrics
    from zapgate.ingest.adapters.spool import FileSpool
    from zapgate.ingest.ports import SpoolRecord
    from zapgate.ingest.service import Gateway
    from zapgate.ingest.settings import IngestSettings
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.consumer import BatchPullConsumer
    from zapgate.runtime.requests import RequestServer

log = structlog.get_logger("zapgate.ingest.lifecycle")


@dataclass
class IngestRuntime:
    """What the running app holds; on `app.state.ingest` for tests and the CLI."""

    settings: IngestSettings
    clock: Clock
    connection: NatsConnection
    gateway: Gateway
    spool: FileSpool
    metrics: IngestMetrics
    registry: CollectorRegistry
    bodies: ObjectStoreBodies | None = None
    states: KnownStates = field(default_factory=KnownStates)
    archiver: WebhookArchiver | None = None
    consumer: BatchPullConsumer[bytes] | None = None
    probes: ProbeServer | None = None
    engine: AsyncEngine | None = None
    read_api: RequestServer[WebhookCountsReply] | None = None
    child_metrics: ChildMetrics | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    spool_progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_spool_empty(self, timeout: float) -> None:
        """Return once every spooled webhook was published (tests, shutdown)."""
        async with asyncio.timeout(timeout), self.spool_progress:
            await self.spool_progress.wait_for(lambda: self.spool.pending == 0)

    @property
    def probe_port(self) -> int | None:
        return self.probes.port if self.probes is not None else None


async def start(runtime: IngestRuntime) -> None:
    """Start everything but the HTTP server (which is already serving); see the module doc."""
    settings = runtime.settings
    runtime.spool.open()
    runtime.metrics.spool_pending.set_function(lambda: runtime.spool.pending)
    drain_now = asyncio.Event()

    async def declare_streams(client: Client) -> None:
        await ensure_streams(client, all_streams(settings.stream_replicas))
        await ensure_bodies_bucket(client, replicas=settings.stream_replicas)
        drain_now.set()

    runtime.connection.on_connect(declare_streams)
    await runtime.connection.start()
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=4, max_overflow=2)
    runtime.engine = engine
    runtime.read_api = webhook_counts_server(
        runtime.connection, PostgresWebhookCounts(engine), runtime.clock
    )
    await runtime.read_api.start()
    runtime.tasks.append(
        asyncio.create_task(_drain_forever(runtime, drain_now), name="spool-drainer")
    )
    if settings.archiver_enabled:
        await _start_archiver(runtime, engine)

    def nats_ready() -> Awaitable[None]:
        return nats_check(runtime.connection.require())()

    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "nats": nats_ready,
        "database": database_check(engine),
    }
    child_metrics = runtime.child_metrics
    runtime.probes = await serve_probes(
        create_probe_app(
            checks,
            registry=runtime.registry,
            exposition=child_metrics.exposition if child_metrics is not None else None,
        ),
        settings.probe_host,
        settings.probe_port,
    )
    freeze_startup_objects()
    log.info(
        "ingest_started",
        probe_port=runtime.probe_port,
        spool_pending=runtime.spool.pending,
        archiver=settings.archiver_enabled,
    )


def freeze_startup_objects() -> None:
    """Move every object alive after startup (modules, classes, pydantic schemas, SQLAlchemy
    metadata: over 100,000 of them) out of the garbage collector's reach (`gc.freeze`).

    Requests in flight survive the young collections and reach the oldest generation, so full
    collections keep coming under load, and each one walked the whole startup heap: a stall of
    tens of milliseconds (over 100 ms on a busy 2-core machine) for every request in flight.
    What startup made lives as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


async def _start_archiver(runtime: IngestRuntime, engine: AsyncEngine) -> None:
    parts = await start_archiver(
        runtime.settings,
        runtime.connection,
        engine,
        states=runtime.states,
        bodies=runtime.bodies,
        clock=runtime.clock,
        registry=runtime.registry,
    )
    runtime.archiver, runtime.consumer = parts.archiver, parts.consumer
    runtime.tasks.append(parts.follower)


@dataclass
class ArchiverParts:
    """The archiver's running pieces: its handler, its consumer, the state follower's task."""

    archiver: WebhookArchiver
    consumer: BatchPullConsumer[bytes]
    follower: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop consuming (the batch in flight finishes first), then the follower."""
        await self.consumer.stop()
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.follower


async def start_archiver(  # noqa: PLR0913 - collaborators, keyword-only past the essentials
    settings: IngestSettings,
    connection: NatsConnection,
    engine: AsyncEngine,
    *,
    states: KnownStates,
    bodies: ObjectStoreBodies | None,
    clock: Clock,
    registry: CollectorRegistry,
) -> ArchiverParts:
    """Start the archiver's consumer and the instance-state follower it reads."""
    archive = PostgresArchive(engine)
    # Off the request path a publish (proof of life, content update) is retried, same id.
    publisher = BusPublisher(connection, timeout=settings.publish_timeout, attempts=3)

    async def archive_deliveries(messages: Sequence[tuple[str, bytes]]) -> int:
        return await archive_batch(messages, archive, publisher, states, bodies)

    archiver = WebhookArchiver(archive_deliveries, max_batch=settings.archiver_batch)
    consumer = archiver_consumer(
        connection,
        archiver,
        settings,
        dead_letters=SqlDeadLetterStore(engine, tables.dead_letters),
        publisher=JetStreamPublisher(connection, timeout=settings.publish_timeout),
        clock=clock,
        registry=registry,
    )
    await consumer.start()
    follower = asyncio.create_task(
        follow_instance_states(connection, states), name="state-follower"
    )
    return ArchiverParts(archiver, consumer, follower)


async def run_archiver(settings: IngestSettings, stop: asyncio.Event) -> None:
    """The archiver alone (`zapgate-ingest archive`, the child process of `zapgate-ingest run`):
    its own NATS connection, database pool, consumer, state follower and probe server
    (`archiver_probe_port`), until `stop` is set."""
    clock = SystemClock()
    registry = CollectorRegistry()
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-ingest-archiver")
    )
    await connection.start()
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=2, max_overflow=2)
    body_timeout = max(timedelta(seconds=10), settings.publish_timeout)
    bodies = ObjectStoreBodies(connection, timeout=body_timeout.total_seconds())
    parts = await start_archiver(
        settings,
        connection,
        engine,
        states=KnownStates(),
        bodies=bodies,
        clock=clock,
        registry=registry,
    )

    def nats_ready() -> Awaitable[None]:
        return nats_check(connection.require())()

    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "nats": nats_ready,
        "database": database_check(engine),
    }
    probes = await serve_probes(
        create_probe_app(checks, registry=registry),
        settings.probe_host,
        settings.archiver_probe_port,
    )
    freeze_startup_objects()
    log.info("archiver_started", probe_port=probes.port, batch=settings.archiver_batch)
    try:
        await stop.wait()
    finally:
        await parts.stop()
        await probes.stop()
        await connection.close()
        await engine.dispose()
        log.info("archiver_stopped", archived=parts.archiver.archived)


async def _drain_forever(runtime: IngestRuntime, drain_now: asyncio.Event) -> None:
    interval = runtime.settings.spool_drain_interval.total_seconds()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain_now.wait(), timeout=interval)
        drain_now.clear()
        if runtime.spool.pending == 0 or not runtime.connection.connected.is_set():
            continue
        try:
            drained = await runtime.spool.drain(_skip_oversized(runtime.gateway))
        except Exception as error:  # noqa: BLE001 - NATS dropped again: retry next round
            log.warning("spool_drain_interrupted", reason=repr(error), left=runtime.spool.pending)
            continue
        if drained:
            log.info("spool_drained", published=drained, left=runtime.spool.pending)
        async with runtime.spool_progress:
            runtime.spool_progress.notify_all()


def _skip_oversized(gateway: Gateway) -> Callable[[SpoolRecord], Awaitable[None]]:
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


async def stop(runtime: IngestRuntime) -> None:
    """Stop the archiver (deliveries in flight finish first), the loops, the probes, NATS."""
    if runtime.consumer is not None:
        await runtime.consumer.stop()
    for task in reversed(runtime.tasks):
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if runtime.probes is not None:
        await runtime.probes.stop()
    if runtime.child_metrics is not None:
        await runtime.child_metrics.aclose()
    if runtime.read_api is not None:
        await runtime.read_api.stop()
    await runtime.connection.close()
    if runtime.engine is not None:
        await runtime.engine.dispose()
    runtime.spool.close()
    log.info("ingest_stopped", spool_pending=runtime.spool.pending)
