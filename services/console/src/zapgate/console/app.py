"""Composition root: `create_app()` wires settings, the NATS APIs, the audit table and routes.

Run: `zapgate-console run` (uvicorn). Nothing is built at import time. The console is its own
process on purpose: login, cookies and HTML stay out of health, the owner of instance state,
and the console reads only through health's, the sender's and ingest's request APIs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import nats
import structlog
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from zapgate.console import handlers, security
from zapgate.console.adapters.apis import NatsHealthApi, NatsIngestApi, NatsSenderApi
from zapgate.console.adapters.db import SqlAuditLog
from zapgate.console.adapters.live import LiveHub, LiveUpdate, NatsStateFeed
from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.console.ports import (
    ApiUnavailableError,
    AuditLog,
    HealthApi,
    IngestApi,
    SenderApi,
    StateListener,
)
from zapgate.console.service import ConsoleService, unavailable_text
from zapgate.console.settings import ConsoleSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.db import create_engine, ping
from zapgate.runtime.logging import configure_logging

_log = structlog.get_logger("zapgate.console.app")
_HERE = Path(__file__).parent
SESSION_COOKIE = "zapgate_console"
_T = TypeVar("_T")

_ERROR_TEXTS = {
    400: ("Pedido inválido", "O pedido não pôde ser entendido."),
    401: ("Acesso negado", "Entre com seu usuário e senha."),
    403: (
        "Ação recusada",
        "O formulário expirou ou não veio desta página. Recarregue a página e tente de novo.",
    ),
    404: ("Página não encontrada", "Não há nada neste endereço (ou a instância não existe)."),
    405: ("Método não permitido", "Esta ação não pode ser feita por este caminho."),
    500: ("Erro interno", "Algo deu errado no console. O erro foi registrado."),
    503: ("Serviço indisponível", "Um serviço do zapgate não respondeu a tempo."),
}


class StateFeed(Protocol):
    """Tells the console which instance changed state (health's state subjects)."""

    async def start(self, listener: StateListener) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Ports:
    """Adapters handed in by tests; anything left None is built from settings at startup."""

    health: HealthApi | None = None
    sender: SenderApi | None = None
    audit: AuditLog | None = None
    feed: StateFeed | None = None
    ingest: IngestApi | None = None


class _SecurityHeaders:
    """No framing, no sniffing, only our own scripts and styles (htmx is served by us)."""

    _HEADERS = (
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (
            b"content-security-policy",
            (
                b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
            ),
        ),
    )

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self._HEADERS)
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, send_with_headers)


def create_app(
    settings: ConsoleSettings | None = None,
    *,
    clock: Clock | None = None,
    ports: Ports | None = None,
    configure_logs: bool = True,
) -> Starlette:
    """Build the console. Tests pass settings, a ManualClock and fakes in `ports`."""
    # Env-provided settings: pydantic-settings fills the required fields from the environment.
    settings = settings or ConsoleSettings()
    clock = clock or SystemClock()
    ports = ports or Ports()
    if configure_logs:
        configure_logging(json=settings.log_json, level=settings.log_level)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["static_version"] = "1"
    hub = LiveHub()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            nc: Client | None = None
            engine: AsyncEngine | None = None
            needs_nats = (ports.health, ports.sender, ports.feed, ports.ingest)
            if any(port is None for port in needs_nats):
                nc = await nats.connect(
                    settings.nats_url,
                    connect_timeout=5,
                    max_reconnect_attempts=-1,
                    # The console's own NATS user (nkey seed, private inbox prefix).
                    **settings.nats_connect_options(),
                )
                stack.push_async_callback(nc.drain)
            if ports.audit is None:
                engine = create_engine(settings.database_url.get_secret_value(), pool_size=5)
                stack.push_async_callback(engine.dispose)
            timeout = settings.request_timeout_s
            service = ConsoleService(
                health=ports.health or NatsHealthApi(_need(nc), timeout=timeout),
                sender=ports.sender or NatsSenderApi(_need(nc), timeout=timeout),
                audit=ports.audit or SqlAuditLog(_need(engine)),
                passwords=Argon2Passwords(),
                operators={k: v.get_secret_value() for k, v in settings.operators.items()},
                clock=clock,
                zone=ZoneInfo(settings.timezone),
                ingest=ports.ingest or NatsIngestApi(_need(nc), timeout=timeout),
            )
            app.state.pages = handlers.Pages(service, hub, templates, settings.audit_rows)
            app.state.ready = (nc, engine)

            async def on_state_changed(instance_id: str) -> None:
                card = await service.instance_card(instance_id)
                if card is not None:
                    row = handlers.render_row(templates, card)
                    hub.publish(LiveUpdate(handlers.live_event(instance_id), row))

            feed = ports.feed or NatsStateFeed(_need(nc))
            await feed.start(on_state_changed)
            stack.push_async_callback(feed.stop)
            stack.callback(hub.close)
            _log.info("console started", nats_url=settings.nats_url)
            yield

    app = Starlette(
        routes=[
            Route("/healthz", _healthz),
            Route("/readyz", _readyz),
            *handlers.routes(str(_HERE / "static")),
        ],
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=settings.session_secret.get_secret_value(),
                session_cookie=SESSION_COOKIE,
                max_age=settings.session_max_age_s,
                same_site="strict",
                https_only=settings.cookie_secure,
            ),
        ],
        exception_handlers={
            security.LoginRequiredError: _login_required,
            ApiUnavailableError: _api_unavailable,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.templates = templates
    return app


def _need(value: _T | None) -> _T:
    if value is None:  # pragma: no cover - built just above whenever a port is missing
        raise RuntimeError("adapter not built")
    return value


def _error_page(request: Request, status: int, text: str | None = None) -> Response:
    title, default_text = _ERROR_TEXTS.get(status, _ERROR_TEXTS[500])
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "title": title, "text": text or default_text, "operator": None},
        status_code=status,
    )


async def _login_required(_request: Request, _exc: Exception) -> Response:
    return RedirectResponse("/login", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error_page(request, status)


async def _api_unavailable(request: Request, exc: Exception) -> Response:
    service = exc.service if isinstance(exc, ApiUnavailableError) else "?"
    _log.warning("api unavailable", service=service, path=request.url.path)
    return _error_page(request, 503, unavailable_text(ApiUnavailableError(service)))


async def _server_error(request: Request, exc: Exception) -> Response:
    _log.error("request failed", path=request.url.path, error=type(exc).__name__)
    return _error_page(request, 500)


async def _healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
    nc, engine = getattr(request.app.state, "ready", (None, None))
    problems = {}
    if nc is not None and not nc.is_connected:
        problems["nats"] = "disconnected"
    if engine is not None:
        try:
            await ping(engine)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems["database"] = type(exc).__name__
    status = 503 if problems else 200
    return JSONResponse({"status": "fail" if problems else "ok", **problems}, status)
