"""A tiny webhook receiver over real HTTP, so simulator posts land somewhere observable."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from zapgate.wapi.simulator import BackgroundServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from starlette.requests import Request


class WebhookReceiver:
    """Records every POST body; answers `status_code` (change it to test receiver errors)."""

    def __init__(self) -> None:
        self.bodies: list[object] = []
        self.status_code = 200
        self._server = BackgroundServer(self._app)

    @property
    def url(self) -> str:
        return self._server.url + "/hook"

    def _app(self, on_ready: Callable[[], None]) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            self.bodies.append(await request.json())
            return JSONResponse({"ok": True}, status_code=self.status_code)

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            on_ready()
            yield

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])], lifespan=lifespan)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def _receiver_server() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook_receiver(_receiver_server: WebhookReceiver) -> WebhookReceiver:
    _receiver_server.bodies.clear()
    _receiver_server.status_code = 200
    return _receiver_server
