"""What the console's lifespan starts and stops: connections, the use cases and the live feed.

`start` opens what the tests did not hand in (NATS for the request APIs and the state feed,
PostgreSQL for the audit table), builds `ConsoleService` and the pages, and follows health's
state changes into the live hub; every resource closes on the caller's `AsyncExitStack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

import nats
import structlog

from zapgate.console import handlers
from zapgate.console.adapters.apis import NatsHealthApi, NatsIngestApi, NatsSenderApi
from zapgate.console.adapters.db import SqlAuditLog
from zapgate.console.adapters.live import LiveHub, LiveUpdate, NatsStateFeed
from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.console.service import ConsoleService
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import url_for_log

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.applications import Starlette
    from starlette.templating import Jinja2Templates

    from zapgate.console.ports import AuditLog, HealthApi, IngestApi, SenderApi, StateFeed
    from zapgate.console.settings import ConsoleSettings
    from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.console.app")
_T = TypeVar("_T")


@dataclass
class Ports:
    """Adapters handed in by tests; anything left None is built from settings at startup."""

    health: HealthApi | None = None
    sender: SenderApi | None = None
    audit: AuditLog | None = None
    feed: StateFeed | None = None
    ingest: IngestApi | None = None


async def start(  # noqa: PLR0913 - what the lifespan holds, each named
    app: Starlette,
    settings: ConsoleSettings,
    stack: AsyncExitStack,
    *,
    clock: Clock,
    ports: Ports,
    templates: Jinja2Templates,
    hub: LiveHub,
) -> None:
    """Build the console's object graph onto `app.state` (pages, readiness) and start the feed."""
    nc: Client | None = None
    engine: AsyncEngine | None = None
    needs_nats = (ports.health, ports.sender, ports.feed, ports.ingest)
    if any(port is None for port in needs_nats):
        nc = await nats.connect(
            settings.nats_url,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            # The console's own NATS user (nkey seed, private inbox prefix).
            **settings.nats_connect_options(),
        )
        stack.push_async_callback(nc.drain)
    if ports.audit is None:
        engine = create_engine(settings.database_url.get_secret_value(), pool_size=5)
        stack.push_async_callback(engine.dispose)
    timeout = settings.request_timeout.total_seconds()
    service = ConsoleService(
        health=ports.health or NatsHealthApi(_need(nc), timeout=timeout),
        sender=ports.sender or NatsSenderApi(_need(nc), timeout=timeout),
        audit=ports.audit or SqlAuditLog(_need(engine)),
        passwords=Argon2Passwords(),
        operators={k: v.get_secret_value() for k, v in settings.operators.items()},
        clock=clock,
        zone=ZoneInfo(settings.timezone),
        ingest=ports.ingest or NatsIngestApi(_need(nc), timeout=timeout),
    )
    app.state.pages = handlers.Pages(service, hub, templates, settings.audit_rows)
    app.state.ready = (nc, engine)

    async def on_state_changed(instance_id: str) -> None:
        card = await service.instance_card(instance_id)
        if card is not None:
            row = handlers.render_row(templates, card)
            hub.publish(LiveUpdate(handlers.live_event(instance_id), row))

    feed = ports.feed or NatsStateFeed(_need(nc))
    await feed.start(on_state_changed)
    stack.push_async_callback(feed.stop)
    stack.callback(hub.close)
    _log.info("console_started", nats_url=url_for_log(settings.nats_url))


def _need(value: _T | None) -> _T:
    if value is None:  # pragma: no cover - built just above whenever a port is missing
        raise RuntimeError("adapter not built")
    return value
