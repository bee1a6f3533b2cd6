"""Composition root: settings, adapters and wiring. Nothing is built at import time.

Run: `faststream run zapgate.health.app:create_app --factory` or `zapgate-health run`.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from faststream import FastStream
from faststream.nats import NatsBroker

from zapgate.health import lifecycle, operator_api
from zapgate.health.adapters.bus import HealthEventPublisher
from zapgate.health.adapters.db import PostgresHealthRepository
from zapgate.health.adapters.operator import SignedOperatorWebhook
from zapgate.health.adapters.timer import AsyncioTimer
from zapgate.health.handlers import register_api, register_consumers
from zapgate.health.ports import SessionProvider, Timer
from zapgate.health.service import HealthService, RoundReport
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import configure_logging
from zapgate.wapi.client import WapiClient


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
    clock = clock or SystemClock()
    timer = timer or AsyncioTimer()
    if configure_logs:
        # The operator URL may carry a token and the secret signs notices: masked in every line.
        secrets = [settings.operator_webhook_url or ""]
        if settings.operator_webhook_secret is not None:
            secrets.append(settings.operator_webhook_secret.get_secret_value())
        configure_logging(
            json=settings.log_json, level=settings.log_level, secrets=[s for s in secrets if s]
        )
    engine = create_engine(settings.database_url.get_secret_value())
    closing: list[WapiClient | httpx.AsyncClient] = []
    if provider is None:
        provider = WapiClient(base_url=settings.wapi_base_url)
        closing.append(provider)
    operator = None
    if settings.operator_webhook_url and settings.operator_webhook_secret:
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        closing.append(http)
        operator = SignedOperatorWebhook(
            url=settings.operator_webhook_url,
            secret=settings.operator_webhook_secret.get_secret_value(),
            http=http,
            clock=clock,
            timer=timer,
            attempts=settings.operator_webhook_attempts,
            backoff=settings.operator_webhook_backoff,
        )
    broker = NatsBroker(
        settings.nats_url,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        graceful_timeout=15,
        **settings.nats_connect_options(),
    )
    publisher = HealthEventPublisher(
        settings.nats_url, options=settings.nats_connection_options("zapgate-health")
    )
    repository = PostgresHealthRepository(engine, settings.token_cipher())
    service = HealthService(
        repository=repository,
        provider=provider,
        publisher=publisher,
        clock=clock,
        timer=timer,
        settings=settings,
        operator=operator,
        on_tick=on_tick,
    )
    register_consumers(broker, service, settings, clock)
    register_api(broker, service)
    # Restart now, QR code, pairing code and history for the console (operator_api.py).
    operator_api.subscribe(
        broker,
        operator_api.OperatorApi(
            store=repository,
            provider=provider,
            engine=engine,
            clock=clock,
            cooldown=settings.restart_cooldown,
        ),
        queue="health-api",
    )
    app = lifecycle.wire(
        broker,
        service,
        settings,
        publisher=publisher,
        engine=engine,
        closing=closing,
        serve_probe=serve_probe,
    )
    app.context.set_global("health_service", service)
    return app


def health_service(app: FastStream) -> HealthService:
    """The service wired into `app` (tests drive ticks and read state through it)."""
    service = app.context.get("health_service")
    if not isinstance(service, HealthService):
        raise TypeError("not a health app")
    return service
