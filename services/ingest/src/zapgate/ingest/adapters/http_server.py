"""Serving the ingest app with uvicorn, inside a running loop (tests) or as the process (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from zapgate.contracts.webhooks import WEBHOOK_MESSAGES_PT_BR, WebhookErrorCode

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from zapgate.ingest.lifecycle import IngestRuntime

_SECRET_IN_PATH: Final = re.compile(r"(/webhooks/)[^/?\s\"]+")
MASK: Final = "***"


def mask_secret(text: str) -> str:
    """`/webhooks/<secret>` becomes `/webhooks/***`, wherever it appears in `text`."""
    return _SECRET_IN_PATH.sub(rf"\g<1>{MASK}", text)


class SecretMaskingFilter(logging.Filter):
    """Masks the path secret in every record (uvicorn's access log prints the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secret(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_secret(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install_secret_masking() -> None:
    """Attach the filter to uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, SecretMaskingFilter) for existing in logger.filters):
            logger.addFilter(SecretMaskingFilter())


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one replica allows a client: time to send headers, header bytes, open connections.

    (The body read timeout is the webhook route's: it answers 408 with its own code.)
    """

    header_read_timeout: timedelta = timedelta(seconds=10)
    max_header_bytes: int = 64 * 1024
    max_connections: int = 4096


def _raw_problem(status: bytes, code: WebhookErrorCode) -> bytes:
    body = json.dumps(
        {"code": code.value, "message": WEBHOOK_MESSAGES_PT_BR[code]}, ensure_ascii=False
    ).encode()
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nretry-after: 1\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    return head + body


_BUSY: Final = _raw_problem(b"503 Service Unavailable", WebhookErrorCode.WEBHOOK_BUSY)
_SLOW: Final = _raw_problem(b"408 Request Timeout", WebhookErrorCode.WEBHOOK_HEADER_TIMEOUT)
_HUGE: Final = _raw_problem(
    b"431 Request Header Fields Too Large", WebhookErrorCode.WEBHOOK_HEADERS_TOO_LARGE
)


def _count_nothing(_reason: str) -> None:
    return None


class HygienicHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with what it lacks: a header read timeout (408), a header
    size cap (431) and a cap on open connections (503 with Retry-After). `refused(reason)`
    counts each refusal (`connections`, `header_timeout`, `header_size`). Build a configured
    subclass with `hygienic_protocol`."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    refused: ClassVar[Callable[[str], None]] = staticmethod(_count_nothing)
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            type(self).refused("connections")
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._start_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        if getattr(self, "transport", None) is None:
            return  # refused in connection_made: uvicorn never saw it
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still in the headers after this chunk was parsed: all of it was header bytes.
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse("header_size", _HUGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:
            self._start_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_header_timer()
        super().on_headers_complete()

    def _start_headers(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(
            self.limits.header_read_timeout.total_seconds(), self._refuse, "header_timeout", _SLOW
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, reason: str, answer: bytes) -> None:
        self._stop_header_timer()
        if self.transport.is_closing():
            return
        type(self).refused(reason)
        self.transport.write(answer)
        self.transport.close()


def hygienic_protocol(
    limits: HttpLimits, refused: Callable[[str], None]
) -> type[HygienicHttpToolsProtocol]:
    """A `HygienicHttpToolsProtocol` for uvicorn's `http=` with these limits and counter."""
    return type(
        "ConfiguredHygienicProtocol",
        (HygienicHttpToolsProtocol,),
        {"limits": limits, "refused": staticmethod(refused)},
    )


def uvicorn_config(
    app: Starlette,
    host: str,
    port: int,
    *,
    access_log: bool,
    protocol: type[asyncio.Protocol] | None = None,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # structlog owns logging (zapgate.runtime.logging)
        access_log=access_log,
        # The app's own protocol (`app.state.http_protocol`, set by create_app) by default.
        http=protocol or getattr(app.state, "http_protocol", None) or "auto",
        # A webhook answered 2xx is durable, so a slow shutdown only delays; keep it short.
        timeout_graceful_shutdown=10,
    )


@dataclass
class RunningServer:
    """A uvicorn server running as a task of the current loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    app: Starlette

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> IngestRuntime:
        runtime: IngestRuntime = self.app.state.ingest
        return runtime

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def serve_in_loop(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = True,
    protocol: type[asyncio.Protocol] | None = None,
) -> RunningServer:
    """Start uvicorn (lifespan included) and return once it accepts connections."""
    server = uvicorn.Server(
        uvicorn_config(app, host, port, access_log=access_log, protocol=protocol)
    )
    task = asyncio.create_task(server.serve(), name="ingest-http")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("ingest server exited before it started")
        # uvicorn exposes readiness only as a flag; look at it at a fine grain.
        await asyncio.sleep(0.01)
    return RunningServer(server, task, app)
