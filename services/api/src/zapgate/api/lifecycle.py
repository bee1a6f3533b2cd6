"""What runs around the HTTP API, opened and closed by `app.running_api` in this order.

`connected` opens NATS and PostgreSQL, declares the streams and re-encrypts subscription
secrets stored in clear or under an older key; `event_pipeline` runs the outbound webhooks (the
runtime's pull consumers: three fan-outs of bus events, then the deliveries); `serving` serves
the API and its probes (`/healthz`, `/readyz`). Each closes what it opened, in reverse order.
"""

from __future__ import annotations

import contextlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import nats
import structlog

from zapgate.api.adapters.bus import HookPublisher
from zapgate.api.adapters.db import PostgresDeliveryLog, PostgresSubscriptions
from zapgate.api.adapters.destinations import GuardedTransport
from zapgate.api.adapters.http import HttpxPoster
from zapgate.api.outbound import Outbound, WebhookJob
from zapgate.api.tables import dead_letters as dead_letter_rows
from zapgate.runtime import topology
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.consumer import Delivery, PullConsumer
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.probes import create_probe_app, database_check, nats_check, serve_probes
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ConsumerSpec, ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.api.handlers import ApiRuntime
    from zapgate.api.outbound import RetryPolicy
    from zapgate.api.settings import ApiSettings
    from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.api")


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A served API: `port` is the bound HTTP port (useful with port 0)."""

    port: int
    probe_port: int
    runtime: ApiRuntime


def event_consumers(settings: ApiSettings) -> tuple[ConsumerSpec, ...]:
    """The API's durable consumers (declared in the topology): three fan-outs, the deliveries."""
    deliveries = replace(topology.API_WEBHOOK_DELIVERIES, ack_wait=settings.webhook_timeout * 3)
    return tuple(
        spec.with_prefix(settings.consumer_prefix)
        for spec in (
            topology.API_EVENTS_OUTCOMES,
            topology.API_EVENTS_STATUS,
            topology.API_EVENTS_RECEIVED,
            deliveries,
        )
    )


@asynccontextmanager
async def connected(settings: ApiSettings) -> AsyncIterator[tuple[Client, AsyncEngine]]:
    """NATS (request-reply and commands) and the engine, streams declared, secrets re-encrypted."""
    nc = await nats.connect(
        settings.nats_url,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        **settings.nats_connect_options(),
    )
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        await ensure_streams(nc, all_streams(settings.stream_replicas))
        # Secrets stored in clear (before encryption) or under an older key: re-encrypted.
        subscriptions = PostgresSubscriptions(engine, settings.token_cipher())
        reencrypted = await subscriptions.reencrypt_secrets()
        if reencrypted:
            _log.info("subscription_secrets_reencrypted", count=reencrypted)
        yield nc, engine
    finally:
        await nc.drain()
        await engine.dispose()
        _log.info("api_stopped")


@asynccontextmanager
async def event_pipeline(
    settings: ApiSettings, engine: AsyncEngine, *, clock: Clock, policy: RetryPolicy
) -> AsyncIterator[Outbound]:
    """The outbound webhooks: fan-out of bus events to subscriptions, then signed deliveries."""
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-api-events")
    )

    async def declare(nc: Client) -> None:
        await ensure_streams(nc, all_streams(settings.stream_replicas))

    connection.on_connect(declare)
    await connection.start()
    # Every connection of the outbound client goes through the destination check (SSRF).
    http = httpx.AsyncClient(
        timeout=settings.webhook_timeout.total_seconds(),
        transport=GuardedTransport(allow_loopback=settings.webhook_allow_loopback),
        follow_redirects=False,
    )
    try:
        await connection.wait_connected(timeout=30)
        outbound = Outbound(
            PostgresSubscriptions(engine, settings.token_cipher()),
            PostgresDeliveryLog(engine),
            HttpxPoster(http),
            jobs=HookPublisher(JetStreamPublisher(connection)),
            clock=clock,
            policy=policy,
        )

        async def on_event(data: bytes, delivery: Delivery) -> None:
            await outbound.fan_out(delivery.subject, data)

        async def on_job(job: WebhookJob, _delivery: Delivery) -> None:
            await outbound.deliver(job)

        dead_letters = SqlDeadLetterStore(engine, dead_letter_rows)
        *fan_outs, deliveries = event_consumers(settings)
        consumers: list[PullConsumer[Any]] = [
            PullConsumer(connection, spec, on_event, decode=bytes, dead_letters=dead_letters)
            for spec in fan_outs
        ]
        consumers.append(
            PullConsumer(
                connection,
                deliveries,
                on_job,
                decode=WebhookJob.model_validate_json,
                dead_letters=dead_letters,
                concurrency=settings.webhook_concurrency,
            )
        )
        for consumer in consumers:
            await consumer.start()
        try:
            yield outbound
        finally:
            for consumer in consumers:
                # nats-py can turn the fetch that stop() cancels into a TimeoutError, which
                # PullConsumer.stop does not absorb (only CancelledError): the loop is over.
                with contextlib.suppress(TimeoutError):
                    await consumer.stop()
    finally:
        await http.aclose()
        await connection.close()


@asynccontextmanager
async def serving(
    app: FastAPI, settings: ApiSettings, nc: Client, engine: AsyncEngine
) -> AsyncIterator[RunningApi]:
    """Serve `app` (its `state.runtime` set) and the probes until the end."""
    http = await serve_probes(app, settings.http_host, settings.http_port)
    probes = await serve_probes(
        create_probe_app({"nats": nats_check(nc), "database": database_check(engine)}),
        settings.probe_host,
        settings.probe_port,
    )
    _log.info("api_started", port=http.port, probe_port=probes.port)
    try:
        yield RunningApi(port=http.port, probe_port=probes.port, runtime=app.state.runtime)
    finally:
        await http.stop()
        await probes.stop()
