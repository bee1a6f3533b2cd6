"""Helpers for tests that run ingest over real servers (this package's and cross-service ones).

Nothing here runs at import; tests build settings, start the app in their own loop, and look at
the stream and the database through these helpers.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.ingest.adapters.http_server import RunningServer, serve_in_loop
from zapgate.ingest.app import create_app
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime.db import create_engine

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

# Test-only path secrets: never configured anywhere but in tests.
SECRET = "s3cret-current-7f3a9c"  # noqa: S105
OLD_SECRET = "s3cret-previous-1b2c3d"  # noqa: S105


def make_settings(
    nats_url: str, database_url: str, spool_dir: Path, **extra: object
) -> IngestSettings:
    """Settings for a test: two valid secrets, ephemeral ports, fast retries."""
    options: dict[str, Any] = {
        "environment": "test",
        "webhook_secrets": [SecretStr(SECRET), SecretStr(OLD_SECRET)],
        "nats_url": nats_url,
        "database_url": SecretStr(database_url),
        "probe_host": "127.0.0.1",
        "probe_port": 0,
        "spool_dir": spool_dir,
        "spool_drain_interval": timedelta(milliseconds=50),
        "archiver_retry_delay": timedelta(milliseconds=200),
        "archiver_ack_wait": timedelta(seconds=5),
        "publish_timeout": timedelta(seconds=1),
    }
    options.update(extra)
    return IngestSettings(**options)


async def start_ingest(settings: IngestSettings, *, connected: bool = True) -> RunningServer:
    """Ingest on a free port in this loop; with `connected`, once NATS is connected."""
    server = await serve_in_loop(create_app(settings))
    if connected:
        async with asyncio.timeout(10):
            await server.runtime.connection.connected.wait()
    return server


async def stream_messages(
    client: Client,
    subject: str = subjects.WEBHOOKS_ALL,
    *,
    stream: str = subjects.STREAM_WEBHOOKS,
) -> list[Msg]:
    """Every message `stream` (ZG_WEBHOOKS unless told) holds now on `subject`, read with an
    ordered consumer."""
    js = client.jetstream()
    subscription = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        # Delivered-or-pending at one instant: a message the server already pushed but the
        # client has not read off the socket yet counts as delivered, not pending, so asking
        # "anything pending?" in a loop could end before it arrived (seen under load).
        info = await subscription.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        total = (info.num_pending or 0) + delivered
        return [await subscription.next_msg(timeout=5) for _ in range(total)]
    finally:
        await subscription.unsubscribe()


async def stream_count(client: Client) -> int:
    """How many messages ZG_WEBHOOKS holds."""
    info = await client.jetstream().stream_info(subjects.STREAM_WEBHOOKS)
    return int(info.state.messages)


async def query(database_url: str, sql: str, **params: object) -> list[Any]:
    """Rows of one SQL query on its own short-lived engine."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(sql), params)).all())
    finally:
        await engine.dispose()
