"""uvicorn's HTTP protocol with one addition: the app may drop the connection without answering.

A keep-alive connection the server closes just as a request arrives fails that request with
"server disconnected without sending a response". ASGI has no message for "close without a
response" (uvicorn answers 500 when an app returns without one), so the simulator serves with
this protocol, which puts the connection's `close` in the request scope's extensions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import Scope

CLOSE_CONNECTION = "zapgate.close_connection"


class ClosableHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` exposing `scope["extensions"]["zapgate.close_connection"]["close"]`."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {CLOSE_CONNECTION: {"close": self.transport.close}}


def connection_closer(scope: Scope) -> Callable[[], None] | None:
    """The function that closes this request's connection, when served by the protocol above."""
    extension = scope.get("extensions", {}).get(CLOSE_CONNECTION, {})
    close = extension.get("close")
    return close if callable(close) else None
