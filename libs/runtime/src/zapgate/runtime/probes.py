"""`/healthz`, `/readyz` and `/metrics` for every service, served inside its loop (`http.py`).

The probe server binds `probe_host`, loopback unless configured (containers set `0.0.0.0`, see
deploy/docker-compose.yml). `/readyz` names each failed check with a code only
(`CHECK_TIMEOUT`, `CHECK_UNREACHABLE`, `CHECK_FAILED`): an exception's text can carry hosts,
users, instance ids or payload data, so it goes to the service's log (its type), never to the
answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import structlog
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
CHECK_TIMEOUT: Final = "CHECK_TIMEOUT"
"""The check did not answer within the timeout."""
CHECK_UNREACHABLE: Final = "CHECK_UNREACHABLE"
"""The dependency refused or dropped the connection (`OSError`, including `ConnectionError`)."""
CHECK_FAILED: Final = "CHECK_FAILED"
"""Any other failure of the check."""

_log = structlog.get_logger("zapgate.probes")


def create_probe_app(
    checks: Mapping[str, Callable[[], Awaitable[None]]],
    *,
    registry: CollectorRegistry = REGISTRY,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    exposition: Callable[[], Awaitable[bytes]] | None = None,
) -> Starlette:
    """Probe endpoints. A check passes when it returns within `check_timeout` without raising.

    `/metrics`: `registry` in the Prometheus text format, or, when `exposition` is given, the
    bytes it returns (a service that adds a child process's metrics to its own, for instance).

    `/readyz`: 200 `{"status": "ok"}`, or 503 `{"status": "unavailable", "failed": {name:
    code}}` with the codes of this module; a check that starts failing logs its name, code and
    exception type once (warning), and once more when it passes again.
    """
    failing: dict[str, str] = {}

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[name], check_timeout) for name in names))
        failed = {}
        for name, result in zip(names, results, strict=True):
            _log_change(failing, name, result)
            if result is not None:
                failed[name] = result[0]
        if failed:
            return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        body = await exposition() if exposition is not None else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


async def _run_check(
    check: Callable[[], Awaitable[None]], timeout: float
) -> tuple[str, str] | None:
    """None when the check passed, else `(code, exception type name)`."""
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return CHECK_TIMEOUT, "TimeoutError"
    except OSError as exc:
        return CHECK_UNREACHABLE, type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - any failure makes the service unready; report it
        return CHECK_FAILED, type(exc).__name__
    return None


def _log_change(failing: dict[str, str], name: str, result: tuple[str, str] | None) -> None:
    # Probes are polled every few seconds: log the transitions, not every poll.
    if result is None:
        if failing.pop(name, None) is not None:
            _log.info("readiness_check_passes_again", check=name)
        return
    code, error = result
    if failing.get(name) != code:
        failing[name] = code
        _log.warning("readiness_check_failed", check=name, code=code, error=error)


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
