"""`/healthz`, `/readyz` and `/metrics` for every service, served by uvicorn inside its loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.runtime.db import ping

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.requests import Request

DEFAULT_CHECK_TIMEOUT = 2.0


def create_probe_app(
    checks: Mapping[str, Callable[[], Awaitable[None]]],
    *,
    registry: CollectorRegistry = REGISTRY,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
) -> Starlette:
    """Probe endpoints. A check passes when it returns within `check_timeout` without raising."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[name], check_timeout) for name in names))
        failed = {name: reason for name, reason in zip(names, results, strict=True) if reason}
        if failed:
            return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


async def _run_check(check: Callable[[], Awaitable[None]], timeout: float) -> str | None:
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return f"timed out after {timeout:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure makes the service unready; report it
        return f"{type(exc).__name__}: {exc}"
    return None


def nats_check(nc: Client) -> Callable[[], Awaitable[None]]:
    """Ready when the NATS connection is up and the server answers a flush (PING/PONG)."""

    async def check() -> None:
        if not nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await nc.flush(timeout=1)

    return check


def database_check(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """Ready when the database answers `SELECT 1`."""

    async def check() -> None:
        await ping(engine)

    return check


class _EmbeddedServer(uvicorn.Server):
    """uvicorn as one task of a service's loop: no signal handlers, no process exit."""

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
            raise OSError(f"probe server could not start (exit {exc.code})") from None
        self.ready.set()


@dataclass
class ProbeServer:
    """A running probe server; `port` is the bound one (useful with port 0)."""

    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def serve_probes(app: Starlette, host: str, port: int) -> ProbeServer:
    """Start uvicorn for `app` as a task of the running loop; returns once it listens."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # logging is ours (configure_logging), not uvicorn's
        access_log=False,  # probes are polled every few seconds: no line per poll
        lifespan="off",
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name="probe-server")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        await task  # re-raises why it could not start
        raise OSError("probe server exited before it started")
    return ProbeServer(server, task)
