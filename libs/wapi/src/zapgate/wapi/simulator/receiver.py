"""A tiny webhook receiver over real HTTP: a place for simulator posts to land in tests."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Self

from pydantic import JsonValue
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from zapgate.wapi.simulator.server import BackgroundServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from starlette.requests import Request


class WebhookReceiver:
    """Records every JSON body POSTed to `url`; answers `status_code` (default 200)."""

    def __init__(self) -> None:
        self.bodies: list[JsonValue] = []
        self.status_code = 200
        self._server = BackgroundServer(self._app)

    @property
    def url(self) -> str:
        return self._server.url + "/hook"

    def clear(self) -> None:
        self.bodies.clear()
        self.status_code = 200

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _app(self, on_ready: Callable[[], None]) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            # list.append is atomic under the GIL, so the test thread may read `bodies`.
            self.bodies.append(await request.json())
            return JSONResponse({"ok": True}, status_code=self.status_code)

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            on_ready()
            yield

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])], lifespan=lifespan)
