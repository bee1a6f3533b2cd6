"""Composition root: settings, adapters and wiring. Nothing is built at import time.

Run: `zapgate-health run` (or `faststream run zapgate.health.app:create_app --factory`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from zapgate.health import lifecycle
from zapgate.health.adapters.bus import HealthEventPublisher
from zapgate.health.adapters.db import PostgresHealthRepository
from zapgate.health.adapters.operator import SignedOperatorWebhook
from zapgate.health.adapters.timer import AsyncioTimer
from zapgate.health.handlers import HealthHandlers
from zapgate.health.operator_api import OperatorApi
from zapgate.health.service import HealthService, RoundReport
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import configure_service_logging
from zapgate.wapi.client import WapiClient

if TYPE_CHECKING:
    from collections.abc import Callable

    from faststream import FastStream

    from zapgate.health.ports import SessionProvider, Timer


def create_app(  # noqa: PLR0913 - tests hand in their clock, timer and provider
    settings: HealthSettings | None = None,
    *,
    clock: Clock | None = None,
    timer: Timer | None = None,
    provider: SessionProvider | None = None,
    configure_logs: bool = True,
    serve_probe: bool = True,
    on_tick: Callable[[RoundReport], None] | None = None,
) -> FastStream:
    """Build the health service. Tests pass settings, a ManualClock, a timer and a provider."""
    settings = settings or HealthSettings()  # pydantic-settings fills it from the environment
    clock, timer = clock or SystemClock(), timer or AsyncioTimer()
    if configure_logs:
        configure_service_logging(settings)
    engine = create_engine(settings.database_url.get_secret_value())
    closing: list[WapiClient | httpx.AsyncClient] = []
    if provider is None:
        closing.append(provider := WapiClient(base_url=settings.wapi_base_url))
    operator = None
    if settings.operator_webhook_url and settings.operator_webhook_secret:
        closing.append(http := httpx.AsyncClient(timeout=httpx.Timeout(10.0)))
        operator = SignedOperatorWebhook(
            url=settings.operator_webhook_url,
            secret=settings.operator_webhook_secret.get_secret_value(),
            http=http,
            clock=clock,
            timer=timer,
            attempts=settings.operator_webhook_attempts,
            backoff=settings.operator_webhook_backoff,
        )
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-health")
    )
    repository = PostgresHealthRepository(engine, settings.token_cipher())
    service = HealthService(
        repository=repository,
        provider=provider,
        publisher=HealthEventPublisher(connection),
        clock=clock,
        timer=timer,
        settings=settings,
        operator=operator,
        on_tick=on_tick,
    )
    cooldown = settings.restart_cooldown
    api = OperatorApi(store=repository, provider=provider, clock=clock, cooldown=cooldown)
    return lifecycle.wire(
        HealthHandlers(service, api, clock),
        settings,
        connection=connection,
        engine=engine,
        clock=clock,
        closing=closing,
        serve_probe=serve_probe,
    )


def health_handlers(app: FastStream) -> HealthHandlers:
    """The handlers wired into `app` (tests read their consumers, verbs and service)."""
    handlers = app.context.get(lifecycle.HANDLERS)
    if not isinstance(handlers, HealthHandlers):
        raise TypeError("not a health app")
    return handlers


def health_service(app: FastStream) -> HealthService:
    """The service wired into `app` (tests drive ticks and read state through it)."""
    return health_handlers(app).service
