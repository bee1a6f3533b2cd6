"""An ASGI app (probes, webhooks) served by uvicorn as one task of the service's own loop.

`serve_http` returns once the server listens, by waiting on an event set when uvicorn's startup
ends (never by polling `server.started` with a sleep); if startup fails (port taken, lifespan
error) it raises instead. uvicorn never installs signal handlers or exits the process here: the
service owns SIGTERM/SIGINT and its own shutdown order.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator, Mapping

    from starlette.types import ASGIApp


class HttpServerError(OSError):
    """The embedded server could not start (the reason is in the message and the cause)."""


class _EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service owns SIGTERM/SIGINT; uvicorn must not take them over.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit as exc:
            # uvicorn calls sys.exit() when it cannot bind; that must not end the service.
            raise HttpServerError(f"HTTP server could not start (exit {exc.code})") from None
        if not self.should_exit:  # a failed lifespan startup sets should_exit and returns
            self.ready.set()


@dataclass
class EmbeddedServer:
    """A running server: `port` is the bound one (useful with port 0); `stop()` waits for it."""

    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Graceful shutdown (uvicorn's `timeout_graceful_shutdown` applies)."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def serve_http(  # noqa: PLR0913 - all keyword-only past the app
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
    access_log: bool = False,
    lifespan: Literal["on", "off", "auto"] = "off",
    name: str = "http-server",
    options: Mapping[str, Any] | None = None,
) -> EmbeddedServer:
    """Start uvicorn for `app` in the running loop; return once it accepts connections.

    `sock`: an already bound and listening socket (then `host`/`port` are ignored), so early
    requests queue in the backlog while the service starts. `options`: more `uvicorn.Config`
    keywords (e.g. `timeout_keep_alive`, `limit_concurrency`, `h11_max_incomplete_event_size`).
    Logging stays ours (`log_config=None`: see `configure_logging`). Raises `HttpServerError`
    when the server exits before it listens.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan=lifespan,
        **dict(options or {}),
    )
    server = _EmbeddedServer(config)
    sockets = [sock] if sock is not None else None
    task = asyncio.create_task(server.serve(sockets=sockets), name=name)
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        await task  # re-raises why it could not start
        raise HttpServerError(f"{name} exited before it started listening")
    return EmbeddedServer(server, task)
