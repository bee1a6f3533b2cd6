"""Ingest over the real servers: a running app (uvicorn in the test's loop) and clients."""

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
    from zapgate.ingest.settings import IngestSettings


@pytest.fixture
def ingest_settings(nats_url: str, database_url: str, tmp_path: Path) -> IngestSettings:
    return make_settings(nats_url, database_url, tmp_path / "spool")


@pytest.fixture
async def ingest(ingest_settings: IngestSettings) -> AsyncIterator[RunningServer]:
    server = await start_ingest(ingest_settings)
    yield server
    await server.stop()


@pytest.fixture
async def http(ingest: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
        yield client


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()
