"""`/healthz`, `/readyz` and `/metrics` for every service, served inside its loop (`http.py`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.runtime.db import ping
from zapgate.runtime.http import EmbeddedServer, serve_http

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

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


ProbeServer = EmbeddedServer
"""A running probe server (the embedded HTTP server of `zapgate.runtime.http`)."""


async def serve_probes(app: Starlette, host: str, port: int) -> EmbeddedServer:
    """Start the probe app in the running loop; returns once it listens. No access log: probes
    are polled every few seconds and a line per poll would drown the service's own lines."""
    return await serve_http(app, host=host, port=port, access_log=False, name="probe-server")
