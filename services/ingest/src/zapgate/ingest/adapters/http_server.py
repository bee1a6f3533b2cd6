"""Serving the ingest app with uvicorn, inside a running loop (tests) or as the process (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import uvicorn

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from zapgate.ingest.app import IngestRuntime

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


def uvicorn_config(app: Starlette, host: str, port: int, *, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # structlog owns logging (zapgate.runtime.logging)
        access_log=access_log,
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
    app: Starlette, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = True
) -> RunningServer:
    """Start uvicorn (lifespan included) and return once it accepts connections."""
    server = uvicorn.Server(uvicorn_config(app, host, port, access_log=access_log))
    task = asyncio.create_task(server.serve(), name="ingest-http")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("ingest server exited before it started")
        # uvicorn exposes readiness only as a flag; look at it at a fine grain.
        await asyncio.sleep(0.01)
    return RunningServer(server, task, app)
