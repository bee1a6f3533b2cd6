"""Composition root: `create_app(runtime)` builds the FastAPI app; `running_api(settings)` wires
NATS, PostgreSQL and the key hasher and serves it (`zapgate-api run`).

Nothing is built at import: the OpenAPI document comes from `create_app()` without a runtime.
What runs around the app (connections, outbound webhooks, probes) is in lifecycle.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from pwdlib import PasswordHash

from zapgate.api import lifecycle
from zapgate.api.adapters.bus import NatsHealth, NatsSender
from zapgate.api.adapters.db import PostgresKeyStore, PostgresRequestLog, PostgresSubscriptions
from zapgate.api.adapters.destinations import CheckedDestinations, DestinationGuard
from zapgate.api.errors import EXCEPTION_HANDLERS
from zapgate.api.handlers import ApiRuntime, canonical_line, router
from zapgate.api.outbound import RetryPolicy, Subscriptions
from zapgate.api.service import ApiService, Authenticator, RateLimits
from zapgate.runtime.clock import Clock, SystemClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from zapgate.api.settings import ApiSettings

TITLE = "zapgate API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Send WhatsApp messages through zapgate and follow them: honest outcomes, idempotent sends, "
    "instance health. Errors carry a stable `code` and a `message` in Brazilian Portuguese."
)


def create_app(runtime: ApiRuntime | None = None) -> FastAPI:
    """The HTTP API. `runtime` is what its routes use; None only to render the OpenAPI document."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        # operationId = the route function's name (send_text, get_message, ...): stable and
        # readable in generated clients.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.runtime = runtime
    app.include_router(router)
    for kind, answer in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(kind, answer)
    app.middleware("http")(canonical_line)
    return app


@asynccontextmanager
async def running_api(
    settings: ApiSettings, *, hasher: PasswordHash | None = None, clock: Clock | None = None
) -> AsyncIterator[lifecycle.RunningApi]:
    """Connect, build and serve the API, its probes and its outbound events until the end."""
    clock = clock or SystemClock()
    policy = RetryPolicy(
        schedule=tuple(settings.webhook_retry_schedule), retry_for=settings.webhook_retry_for
    )
    timeout = settings.request_timeout.total_seconds()
    guard = DestinationGuard(allow_loopback=settings.webhook_allow_loopback)
    async with (
        lifecycle.connected(settings) as (nc, engine),
        lifecycle.event_pipeline(settings, engine, clock=clock, policy=policy) as outbound,
    ):
        sender = NatsSender(
            nc, request_timeout=timeout, retry_timeout=settings.retry_timeout.total_seconds()
        )
        runtime = ApiRuntime(
            service=ApiService(
                sender, NatsHealth(nc, request_timeout=timeout), PostgresRequestLog(engine), clock
            ),
            auth=Authenticator(
                PostgresKeyStore(engine),
                hasher or PasswordHash.recommended(),
                clock,
                cache_ttl=settings.key_cache_ttl.total_seconds(),
            ),
            limits=RateLimits(
                settings.rate_limit_requests, settings.rate_limit_period.total_seconds()
            ),
            subscriptions=Subscriptions(
                PostgresSubscriptions(engine, settings.token_cipher()),
                clock,
                outbound,
                CheckedDestinations(guard),
            ),
        )
        async with lifecycle.serving(create_app(runtime), settings, nc, engine) as running:
            yield running
