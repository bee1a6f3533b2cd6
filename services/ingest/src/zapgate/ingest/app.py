"""Composition root: `create_app(settings)` builds the ingest ASGI app; nothing runs at import.

Run it with `zapgate-ingest run` (or `uvicorn zapgate.ingest.app:create_app --factory`). The
lifespan starts and stops what runs beside the endpoint (`lifecycle.start`, `lifecycle.stop`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from zapgate.ingest import lifecycle
from zapgate.ingest.adapters.bodies import ObjectStoreBodies
from zapgate.ingest.adapters.bus import BusPublisher
from zapgate.ingest.adapters.http_server import (
    HttpLimits,
    hygienic_protocol,
    install_secret_masking,
)
from zapgate.ingest.adapters.metrics import IngestMetrics
from zapgate.ingest.adapters.spool import FileSpool
from zapgate.ingest.handlers import IngestApp, SecretCheck, webhook_routes
from zapgate.ingest.service import Gateway
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import NatsConnection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def create_app(
    settings: IngestSettings | None = None,
    *,
    clock: Clock | None = None,
    archiver_metrics_url: str | None = None,
) -> Starlette:
    """The ingest ASGI app. Settings come from `ZAPGATE_INGEST_*` when not given.

    `archiver_metrics_url`: the archiver child's `/metrics` (`zapgate-ingest run`), merged into
    this app's `/metrics` with `process="archiver"` (`adapters.child_metrics`).
    """
    settings = settings or IngestSettings()
    clock = clock or SystemClock()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry, max_instances=settings.metrics_max_instances)
    options = settings.nats_connection_options("zapgate-ingest")
    connection = NatsConnection(settings.nats_url, options)
    # On the request path a publish is tried once: a failure spools the webhook at once.
    publisher = BusPublisher(connection, timeout=settings.publish_timeout)
    # A body is many chunks, each acked: more than one publish's time.
    body_timeout = max(timedelta(seconds=10), settings.publish_timeout)
    bodies = ObjectStoreBodies(connection, timeout=body_timeout.total_seconds())
    spool = FileSpool(settings.spool_dir)
    gateway = Gateway(publisher, spool, bodies, inline_event_bytes=settings.inline_event_bytes)
    runtime = lifecycle.IngestRuntime(
        settings, clock, connection, gateway, spool, metrics, registry, bodies
    )
    if archiver_metrics_url is not None:
        # httpx is imported only by a gateway with an archiver child.
        from zapgate.ingest.adapters.child_metrics import ChildMetrics  # noqa: PLC0415

        runtime.child_metrics = ChildMetrics(registry, archiver_metrics_url, name="archiver")
    install_secret_masking()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.ingest = runtime
        await lifecycle.start(runtime)
        try:
            yield
        finally:
            await lifecycle.stop(runtime)

    secrets = SecretCheck(settings.webhook_secrets)
    routes = webhook_routes(
        gateway,
        secrets,
        metrics,
        clock,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout=settings.body_read_timeout,
    )
    app = IngestApp(routes=routes, lifespan=lifespan)
    limits = HttpLimits(settings.header_read_timeout, max_connections=settings.max_connections)
    app.state.http_protocol = hygienic_protocol(
        limits, lambda reason: metrics.connections_refused.labels(reason).inc()
    )
    return app
