"""HTTP routes: decode the request, call a use case, render a page or a fragment.

Pages are server-rendered (Jinja2); htmx (a static file) boosts forms and swaps the rows that
the event stream (`/eventos`, server-sent events) pushes when health publishes a state change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from zapgate.console import domain, security
from zapgate.console.adapters.live import LiveHub, LiveUpdate
from zapgate.console.domain import SHOWN_LABELS, InstanceCard, Shown
from zapgate.console.ports import ApiUnavailableError
from zapgate.console.service import ActionResult, ConsoleService, unavailable_text
from zapgate.runtime.db import ping

_log = structlog.get_logger("zapgate.console.http")
_errors_log = structlog.get_logger("zapgate.console.app")
_FLASH = "flash"
_INSTANCE_ID_MAX = 100
SSE_PING_S = 15


@dataclass(frozen=True, slots=True)
class Pages:
    """What every route needs: the use cases, the live hub and the templates."""

    service: ConsoleService
    hub: LiveHub
    templates: Jinja2Templates
    audit_rows: int


def pages(request: Request) -> Pages:
    found: Pages = request.app.state.pages
    return found


def live_event(instance_id: str) -> str:
    """The event name a page listens to for one instance (ids are `[A-Za-z0-9_-]`)."""
    return f"instancia-{instance_id}"


def render_row(templates: Jinja2Templates, card: InstanceCard) -> str:
    """The instance's table row, as pages and the event stream both send it."""
    template = templates.get_template("_row.html")
    return template.render(card=card, live_event=live_event(card.instance_id))


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:  # noqa: ANN401 - template context
    found = pages(request)
    context.setdefault("operator", request.session.get("operator"))
    context["csrf"] = security.csrf_token(request)
    context["flash"] = request.session.pop(_FLASH, None)
    context["labels"] = SHOWN_LABELS
    context["live_event"] = live_event
    return found.templates.TemplateResponse(request, name, context, status_code=status_code)


def _flash(request: Request, result: ActionResult) -> None:
    request.session[_FLASH] = {"ok": result.ok, "text": result.message}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _instance_id(request: Request) -> str:
    value = str(request.path_params["instance_id"])
    if not value or len(value) > _INSTANCE_ID_MAX:
        raise HTTPException(404)
    return value


async def _form(request: Request) -> FormData:
    form = await request.form()
    security.check_csrf(request, form)
    return form


# --- login ------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return _render(request, "login.html", error=None, login="")


async def login(request: Request) -> Response:
    form = await _form(request)
    login_name = str(form.get("login", "")).strip()[:100]
    password = str(form.get("password", ""))
    if not await pages(request).service.authenticate(login_name, password):
        return _render(
            request,
            "login.html",
            status_code=401,
            error="Usuário ou senha incorretos.",
            login=login_name,
        )
    security.start_session(request, login_name)
    return _see_other("/")


async def logout(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    await pages(request).service.logout(who)
    security.end_session(request)
    return _see_other("/login")


# --- pages ------------------------------------------------------------------------------------


async def instances_page(request: Request) -> Response:
    security.operator(request)
    found = pages(request)
    selected = domain.parse_filter(request.query_params.get("estado"))
    page = await found.service.instances(selected)
    audit = await found.service.recent_actions(limit=found.audit_rows)
    return _render(request, "instances.html", page=page, states=list(Shown), audit=audit)


async def instance_page(request: Request) -> Response:
    security.operator(request)
    instance_id = _instance_id(request)
    found = pages(request)
    card = await found.service.instance_card(instance_id)
    if card is None:
        raise HTTPException(404)
    audit = await found.service.recent_actions(instance_id, limit=found.audit_rows)
    timeline, sends, webhooks = await asyncio.gather(
        found.service.timeline(instance_id),
        found.service.sends(instance_id),
        found.service.webhooks(instance_id),
    )
    return _render(
        request,
        "instance.html",
        card=card,
        audit=audit,
        timeline=timeline,
        sends=sends,
        webhooks=webhooks,
    )


async def reconnect_page(request: Request) -> Response:
    """QR code (refreshed until connected) and the pairing-code form, with the live card."""
    who = security.operator(request)
    instance_id = _instance_id(request)
    found = pages(request)
    card = await found.service.instance_card(instance_id)
    if card is None:
        raise HTTPException(404)
    qr = await found.service.qr_code(who, instance_id, audit=True)
    return _render(request, "reconnect.html", card=card, qr=qr, pairing=None, phone="")


async def qr_fragment(request: Request) -> Response:
    """The QR block alone: htmx swaps it every few seconds until the session is connected."""
    who = security.operator(request)
    instance_id = _instance_id(request)
    qr = await pages(request).service.qr_code(who, instance_id, audit=False)
    return _render(request, "_qr.html", card_id=instance_id, qr=qr)


async def session_fragment(request: Request) -> Response:
    """After a pairing code: check the session now and say whether it is back."""
    security.operator(request)
    instance_id = _instance_id(request)
    card = await pages(request).service.watch_session(instance_id)
    if card is None:
        raise HTTPException(404)
    return _render(request, "_session.html", card=card)


async def events(request: Request) -> Response:
    """The page's only live channel: one SSE stream of rendered rows."""
    try:
        security.operator(request)
    except security.LoginRequiredError:
        return Response("login required", status_code=401)
    hub = pages(request).hub

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with hub.stream() as updates:
            # A first event tells the page (and tests) that the stream is live.
            yield ServerSentEvent(data="ao vivo", event="conectado")
            async for update in updates:
                yield ServerSentEvent(data=update.data, event=update.event)

    return EventSourceResponse(stream(), ping=SSE_PING_S, headers={"Cache-Control": "no-store"})


# --- actions (health's API) -------------------------------------------------------------------


async def _back_to_instance(request: Request, result: ActionResult, instance_id: str) -> Response:
    _flash(request, result)
    if result.card is not None:
        # Every open page sees the new state at once, not only the one that asked.
        found = pages(request)
        found.hub.publish(
            LiveUpdate(live_event(instance_id), render_row(found.templates, result.card))
        )
    return _see_other(f"/instancias/{instance_id}")


async def check_now(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    result = await pages(request).service.check_now(who, instance_id)
    return await _back_to_instance(request, result, instance_id)


async def pause(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    result = await pages(request).service.set_paused(who, instance_id, paused=True)
    return await _back_to_instance(request, result, instance_id)


async def resume(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    result = await pages(request).service.set_paused(who, instance_id, paused=False)
    return await _back_to_instance(request, result, instance_id)


async def restart(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    result = await pages(request).service.restart(who, instance_id)
    return await _back_to_instance(request, result, instance_id)


async def pairing_code(request: Request) -> Response:
    who = security.operator(request)
    form = await _form(request)
    instance_id = _instance_id(request)
    found = pages(request)
    card = await found.service.instance_card(instance_id)
    if card is None:
        raise HTTPException(404)
    phone = str(form.get("phone", ""))[:40]
    result = await found.service.pairing_code(who, instance_id, phone)
    qr = await found.service.qr_code(who, instance_id, audit=False)
    return _render(
        request,
        "reconnect.html",
        status_code=200 if result.ok else 422,
        card=card,
        qr=qr,
        pairing=result,
        phone=phone,
    )


async def retry_send(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    command_id = str(request.path_params["command_id"])[:128]
    result = await pages(request).service.retry_send(who, instance_id, command_id)
    _flash(request, result)
    return _see_other(f"/instancias/{instance_id}#envios")


async def remove(request: Request) -> Response:
    who = security.operator(request)
    await _form(request)
    instance_id = _instance_id(request)
    result = await pages(request).service.remove(who, instance_id)
    _flash(request, result)
    return _see_other("/" if result.ok else f"/instancias/{instance_id}")


async def register(request: Request) -> Response:
    who = security.operator(request)
    form = await _form(request)
    instance_id = str(form.get("instance_id", "")).strip()
    result = await pages(request).service.register(
        who,
        instance_id=instance_id,
        display_name=str(form.get("display_name", "")).strip() or instance_id,
        token=str(form.get("token", "")),
        managed=form.get("managed") is not None,
    )
    _flash(request, result)
    return _see_other("/")


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
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


def routes(static_dir: str) -> list[Route | Mount]:
    """Every route of the console (paths in Portuguese: operators read the address bar)."""
    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/sair", logout, methods=["POST"]),
        Route("/", instances_page, methods=["GET"]),
        Route("/eventos", events, methods=["GET"]),
        Route("/instancias", register, methods=["POST"]),
        Route("/instancias/{instance_id}", instance_page, methods=["GET"]),
        Route("/instancias/{instance_id}/verificar", check_now, methods=["POST"]),
        Route("/instancias/{instance_id}/pausar", pause, methods=["POST"]),
        Route("/instancias/{instance_id}/retomar", resume, methods=["POST"]),
        Route("/instancias/{instance_id}/remover", remove, methods=["POST"]),
        Route("/instancias/{instance_id}/reiniciar", restart, methods=["POST"]),
        Route("/instancias/{instance_id}/reconectar", reconnect_page, methods=["GET"]),
        Route("/instancias/{instance_id}/reconectar/qr", qr_fragment, methods=["GET"]),
        Route("/instancias/{instance_id}/reconectar/sessao", session_fragment, methods=["GET"]),
        Route("/instancias/{instance_id}/pareamento", pairing_code, methods=["POST"]),
        Route(
            "/instancias/{instance_id}/envios/{command_id}/tentar-novamente",
            retry_send,
            methods=["POST"],
        ),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]


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
    _errors_log.warning("api_unavailable", service=service, path=request.url.path)
    return _error_page(request, 503, unavailable_text(ApiUnavailableError(service)))


async def _server_error(request: Request, exc: Exception) -> Response:
    _errors_log.error("request_failed", path=request.url.path, error=type(exc).__name__)
    return _error_page(request, 500)


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    security.LoginRequiredError: _login_required,
    ApiUnavailableError: _api_unavailable,
    HTTPException: _http_error,
    Exception: _server_error,
}
"""The pages' answers to what a route raises: a login redirect or a pt-BR error page."""
