"""The simulator as an ASGI app: W-API's paths under `/v1`, test control under `/_sim`."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from pydantic import JsonValue
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from zapgate.wapi.simulator.control_routes import control_routes
from zapgate.wapi.simulator.engine import ProviderReply, ProviderRequest, SimulatorEngine
from zapgate.wapi.simulator.protocol import connection_closer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def create_app(
    engine: SimulatorEngine | None = None, *, on_ready: Callable[[], None] | None = None
) -> Starlette:
    """The simulator app around `engine` (a fresh one by default)."""
    sim = engine or SimulatorEngine()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await sim.stop()

    async def provider(request: Request) -> Response:
        body: JsonValue = None
        if request.method in _BODY_METHODS:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", errors="replace")

        async def client_gone() -> None:
            # After the body is read, the next ASGI message is the disconnect: a hanging
            # request ends when the client gives up instead of lingering until shutdown.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        reply = await sim.handle(
            ProviderRequest(
                method=request.method,
                operation=request.path_params["operation"],
                path=request.url.path,
                query=dict(request.query_params),
                authorization=request.headers.get("authorization"),
                body=body,
            ),
            client_gone,
        )
        return await _respond(reply, request, client_gone)

    return Starlette(
        routes=[
            Route(
                "/v1/{group}/{operation}",
                provider,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
            Mount("/_sim", routes=control_routes(sim)),
        ],
        lifespan=lifespan,
    )


async def _respond(
    reply: ProviderReply, request: Request, client_gone: Callable[[], Awaitable[None]]
) -> Response:
    if reply.close_connection:
        close = connection_closer(request.scope)
        if close is None:
            # Served without ClosableHttpProtocol: a 500 would be a different fault.
            raise RuntimeError("dropping a connection needs ClosableHttpProtocol")
        close()
        await client_gone()  # uvicorn then sends nothing: the cycle is disconnected
        return Response(status_code=500)
    if reply.html is not None:
        return HTMLResponse(reply.html, status_code=reply.status_code)
    return JSONResponse(reply.json, status_code=reply.status_code)
