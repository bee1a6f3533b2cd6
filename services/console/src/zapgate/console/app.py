"""Composition root: `create_app()` wires settings, the NATS APIs, the audit table and routes.

Run: `zapgate-console run` (uvicorn). Nothing is built at import time. The console is its own
process on purpose: login, cookies and HTML stay out of health, the owner of instance state,
and the console reads only through health's, the sender's and ingest's request APIs. The
lifespan's work (connections, use cases, live feed) is in lifecycle.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.templating import Jinja2Templates

from zapgate.console import handlers, lifecycle
from zapgate.console.adapters.live import LiveHub
from zapgate.console.lifecycle import Ports
from zapgate.console.security import SecurityHeaders
from zapgate.console.settings import ConsoleSettings
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.logging import configure_service_logging

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SESSION_COOKIE", "Ports", "create_app"]
_HERE = Path(__file__).parent
SESSION_COOKIE = "zapgate_console"


def create_app(
    settings: ConsoleSettings | None = None,
    *,
    clock: Clock | None = None,
    ports: Ports | None = None,
    configure_logs: bool = True,
) -> Starlette:
    """Build the console. Tests pass settings, a ManualClock and fakes in `ports`."""
    # Env-provided settings: pydantic-settings fills the required fields from the environment.
    settings = settings or ConsoleSettings()
    if configure_logs:
        configure_service_logging(settings)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["static_version"] = "1"
    hub = LiveHub()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await lifecycle.start(
                app,
                settings,
                stack,
                clock=clock or SystemClock(),
                ports=ports or Ports(),
                templates=templates,
                hub=hub,
            )
            yield

    session = Middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.get_secret_value(),
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.session_max_age.total_seconds()),
        same_site="strict",
        https_only=settings.cookie_secure,
    )
    app = Starlette(
        routes=handlers.routes(str(_HERE / "static")),
        middleware=[Middleware(SecurityHeaders), session],
        exception_handlers=handlers.EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.templates = templates
    return app
