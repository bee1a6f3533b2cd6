"""Composition root: `create_app(runtime)` builds the FastAPI app; `running_api(settings)` wires
NATS, PostgreSQL and the key hasher and serves it (`zapgate-api run`).

Nothing is built at import: the OpenAPI document comes from `create_app()` without a runtime.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import nats
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pwdlib import PasswordHash
from starlette.exceptions import HTTPException

from zapgate.api.adapters.bus import NatsHealth, NatsSender
from zapgate.api.adapters.db import (
    PostgresDeliveryLog,
    PostgresKeyStore,
    PostgresRequestLog,
    PostgresSubscriptions,
)
from zapgate.api.adapters.destinations import DestinationGuard, DestinationRefused, GuardedTransport
from zapgate.api.adapters.http import HttpxPoster
from zapgate.api.domain import API_MESSAGES_PT_BR, ApiErrorCode
from zapgate.api.errors import field_errors
from zapgate.api.handlers import router
from zapgate.api.models import ErrorBody, FieldError
from zapgate.api.outbound import Outbound, RetryPolicy, Subscriptions, WebhookJob
from zapgate.api.service import ApiService, Authenticator, RateLimits, Refusal, RefusalKind
from zapgate.api.tables import dead_letters as dead_letter_rows
from zapgate.contracts import subjects
from zapgate.contracts.errors import Problem
from zapgate.runtime import topology
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.consumer import Delivery, PullConsumer
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.probes import (
    create_probe_app,
    database_check,
    nats_check,
    serve_probes,
)
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ConsumerSpec, ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.responses import Response

    from zapgate.api.settings import ApiSettings

_log = structlog.get_logger("zapgate.api")
TITLE = "zapgate API"
VERSION = "1.0.0"
_STATUS: dict[RefusalKind, int] = {
    RefusalKind.UNAUTHORIZED: 401,
    RefusalKind.FORBIDDEN: 403,
    RefusalKind.NOT_FOUND: 404,
    RefusalKind.CONFLICT: 409,
    RefusalKind.UNPROCESSABLE: 422,
    RefusalKind.RATE_LIMITED: 429,
    RefusalKind.UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class ApiRuntime:
    """What the routes use, built once by `running_api` (or by a test)."""

    service: ApiService
    auth: Authenticator
    limits: RateLimits
    subscriptions: Subscriptions


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _api_error(code: ApiErrorCode, detail: str | None = None) -> ErrorBody:
    return ErrorBody(code=code.value, message=API_MESSAGES_PT_BR[code], detail=detail)


async def _on_refusal(_request: Request, exc: Exception) -> Response:
    refusal = exc if isinstance(exc, Refusal) else None
    if refusal is None:
        raise exc
    headers = None
    if refusal.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(refusal.retry_after)))}
    problem = refusal.problem
    body = ErrorBody(code=problem.code, message=problem.message, detail=problem.detail)
    return _error(_STATUS[refusal.kind], body, headers)


async def _on_invalid(_request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body = _api_error(ApiErrorCode.INVALID_REQUEST)
    return _error(422, body.model_copy(update={"errors": field_errors(errors)}))


_UNREADABLE_BODY = FieldError(
    location="body",
    field="body",
    code="json_invalid",
    message="O corpo não é um JSON legível (UTF-8).",
)


async def _on_http(_request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 400:  # noqa: PLR2004 - FastAPI's "error parsing the body" (bytes, not JSON)
        body = _api_error(ApiErrorCode.INVALID_REQUEST)
        return _error(422, body.model_copy(update={"errors": [_UNREADABLE_BODY]}))
    code = {404: ApiErrorCode.NOT_FOUND, 405: ApiErrorCode.METHOD_NOT_ALLOWED}.get(
        status,
        ApiErrorCode.INVALID_REQUEST if status < 500 else ApiErrorCode.INTERNAL,  # noqa: PLR2004
    )
    headers = getattr(exc, "headers", None)
    return _error(status, _api_error(code), headers)


async def _on_crash(_request: Request, exc: Exception) -> Response:
    _log.error("api_internal_error", error=repr(exc))
    return _error(500, _api_error(ApiErrorCode.INTERNAL))


async def _canonical_line(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex)
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    _log.info(
        "api_request",
        method=request.method,
        route=getattr(route, "path", None),
        status=response.status_code,
        key_id=getattr(request.state, "key_id", None),
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return response


def create_app(runtime: ApiRuntime | None = None) -> FastAPI:
    """The HTTP API. `runtime` is what its routes use; None only to render the OpenAPI document."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "Send WhatsApp messages through zapgate and follow them: honest outcomes, "
            "idempotent sends, instance health. Errors carry a stable `code` and a `message` "
            "in Brazilian Portuguese."
        ),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        # operationId = the route function's name (send_text, get_message, ...): stable and
        # readable in generated clients.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.runtime = runtime
    app.include_router(router)
    app.add_exception_handler(Refusal, _on_refusal)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(Exception, _on_crash)
    app.middleware("http")(_canonical_line)
    return app


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A served API: `port` is the bound HTTP port (useful with port 0)."""

    port: int
    probe_port: int
    runtime: ApiRuntime


class _HookPublisher:
    """`JobPublisher` over the runtime's JetStream publisher."""

    def __init__(self, publisher: JetStreamPublisher) -> None:
        self._publisher = publisher

    async def publish_job(self, job: WebhookJob) -> None:
        await self._publisher.publish(
            subjects.api_hook_subject(job.subscription_id),
            job.model_dump_json().encode(),
            stream=subjects.STREAM_API_HOOKS,
            msg_id=f"{job.subscription_id}:{job.webhook_id}",
        )


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
async def _event_pipeline(
    settings: ApiSettings, engine: AsyncEngine, outbound_args: dict[str, Any]
) -> AsyncIterator[Outbound]:
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
            jobs=_HookPublisher(JetStreamPublisher(connection)),
            **outbound_args,
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
async def running_api(
    settings: ApiSettings,
    *,
    hasher: PasswordHash | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[RunningApi]:
    """Connect, build and serve the API, its probes and its outbound events until the end."""
    clock = clock or SystemClock()
    nc = await nats.connect(
        settings.nats_url,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        **settings.nats_connect_options(),
    )
    engine = create_engine(settings.database_url.get_secret_value())
    policy = RetryPolicy(
        schedule=tuple(settings.webhook_retry_schedule), retry_for=settings.webhook_retry_for
    )
    subscriptions = PostgresSubscriptions(engine, settings.token_cipher())
    try:
        await ensure_streams(nc, all_streams(settings.stream_replicas))
        # Secrets stored in clear (before encryption) or under an older key: re-encrypted.
        reencrypted = await subscriptions.reencrypt_secrets()
        if reencrypted:
            _log.info("subscription_secrets_reencrypted", count=reencrypted)
        async with _event_pipeline(
            settings, engine, {"clock": clock, "policy": policy}
        ) as outbound:
            timeout = settings.request_timeout.total_seconds()
            runtime = ApiRuntime(
                service=ApiService(
                    NatsSender(
                        nc,
                        request_timeout=timeout,
                        retry_timeout=settings.retry_timeout.total_seconds(),
                    ),
                    NatsHealth(nc, request_timeout=timeout),
                    PostgresRequestLog(engine),
                    clock,
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
                    subscriptions,
                    clock,
                    outbound,
                    _CheckedDestinations(
                        DestinationGuard(allow_loopback=settings.webhook_allow_loopback)
                    ),
                ),
            )
            http = await serve_probes(create_app(runtime), settings.http_host, settings.http_port)
            probes = await serve_probes(
                create_probe_app({"nats": nats_check(nc), "database": database_check(engine)}),
                settings.probe_host,
                settings.probe_port,
            )
            _log.info("api_started", port=http.port, probe_port=probes.port)
            try:
                yield RunningApi(port=http.port, probe_port=probes.port, runtime=runtime)
            finally:
                await http.stop()
                await probes.stop()
    finally:
        await nc.drain()
        await engine.dispose()
        _log.info("api_stopped")


class _CheckedDestinations:
    """`DestinationCheck` answering a refused URL with a coded 422 (pt-BR message)."""

    def __init__(self, guard: DestinationGuard) -> None:
        self._guard = guard

    async def check(self, url: str) -> None:
        try:
            await self._guard.check(url)
        except DestinationRefused as exc:
            _log.info("subscription_refused", code=exc.code, reason=exc.reason)
            raise Refusal(
                RefusalKind.UNPROCESSABLE,
                Problem(code=exc.code, message=exc.message, detail=exc.reason),
            ) from None
