"""Fixtures of the fuzz suite: ingest over real HTTP, a real nats-server and real PostgreSQL.

Hypothesis drives plain functions while the servers under test live in the test's event loop,
so each property runs in a worker thread (`asyncio.to_thread`) and hands its coroutines back
to the loop with `asyncio.run_coroutine_threadsafe`; the test then checks the whole run's
totals once the property has finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import nats
import pytest

from zapgate.testkit.ingest import make_settings, start_ingest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nats.aio.client import Client

    from zapgate.ingest.adapters.http_server import RunningServer

# Small enough that oversized bodies are cheap to generate; the settings' floor is 1 KiB.
FUZZ_MAX_BODY = 4096


@pytest.fixture
async def ingest(nats_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        nats_url,
        database_url,
        tmp_path / "spool",
        max_body_bytes=FUZZ_MAX_BODY,
        access_log=False,
        log_level="WARNING",
    )
    server = await start_ingest(settings)
    yield server
    await server.stop()


@pytest.fixture
async def http(ingest: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
        yield client


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=5)
    yield client
    await client.close()
