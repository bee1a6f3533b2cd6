"""Fixtures of the sender's tests: real PostgreSQL, real nats-server, the simulator over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats
import pytest
import sqlalchemy as sa

from zapgate.contracts.health import InstanceState
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.db import create_engine
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ensure_streams
from zapgate.runtime.topology import ALL_STREAMS
from zapgate.sender.adapters.bus import JetStreamOutcomeLog, RuntimeEventPublisher
from zapgate.sender.adapters.db import PostgresCommandStore, PostgresInstanceDirectory
from zapgate.sender.adapters.provider import WapiProvider
from zapgate.sender.lanes import Pacer
from zapgate.sender.service import SenderDeps, SendPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.wapi.client import WapiClient

PHONE = "5511999990000"
TOKEN = "tok-sender-test"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5, max_overflow=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=5)
    await ensure_streams(client, ALL_STREAMS)
    yield client
    await client.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class HealthRows:
    """Plays health: writes `instances` rows, which the sender reads through health's view."""

    engine: AsyncEngine
    clock: ManualClock

    async def put(  # noqa: PLR0913 - one keyword per column a test sets
        self,
        instance_id: str,
        state: InstanceState,
        *,
        reason: str | None = None,
        phone: str | None = PHONE,
        paused: bool = False,
        checked: bool = True,
        token: str = TOKEN,
    ) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {
            "instance_id": instance_id,
            "display_name": instance_id,
            "token": token,
            "managed": True,
            "paused": paused,
            "state": state.value,
            "reason": reason,
            "phone": phone,
            "since": now,
            "state_observed_at": now if checked else None,
            "last_check_at": now if checked else None,
            "outage_notified": False,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text("DELETE FROM instances WHERE instance_id = :id"), {"id": instance_id}
            )
            await conn.execute(sa.text(_insert_sql(values)), values)


def _insert_sql(values: dict[str, Any]) -> str:
    columns = ", ".join(values)
    params = ", ".join(f":{name}" for name in values)
    return f"INSERT INTO instances ({columns}) VALUES ({params})"  # noqa: S608 - fixed names


@pytest.fixture
def health(engine: AsyncEngine, clock: ManualClock) -> HealthRows:
    return HealthRows(engine, clock)


@pytest.fixture
def deps(
    engine: AsyncEngine, nc: Client, wapi_client: WapiClient, clock: ManualClock
) -> SenderDeps:
    return make_deps(engine, nc, wapi_client, clock)


def make_deps(engine: AsyncEngine, nc: Client, wapi: WapiClient, clock: ManualClock) -> SenderDeps:
    async def no_wait(_seconds: float) -> None:
        return None

    return SenderDeps(
        store=PostgresCommandStore(engine),
        directory=PostgresInstanceDirectory(engine),
        provider=WapiProvider(wapi, live_check_timeout=timedelta(seconds=2)),
        publisher=RuntimeEventPublisher(JetStreamPublisher(nc)),
        outcomes=JetStreamOutcomeLog(nc),
        clock=clock,
        pacer=Pacer(clock, 0.0),
        policy=SendPolicy(
            live_check_timeout=timedelta(seconds=2),
            provider_attempts=3,
            backoff=timedelta(0),
            backoff_cap=timedelta(0),
        ),
        sleep=no_wait,
    )


async def stored_messages(js: JetStreamContext, stream: str, subject: str) -> list[bytes]:
    """Every message the stream holds on `subject` (a filter), oldest first."""
    info = await js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    if total == 0:
        return []
    subscription = await js.pull_subscribe(subject, stream=stream)
    try:
        messages: list[bytes] = []
        while len(messages) < total:
            batch = await subscription.fetch(total - len(messages), timeout=5)
            messages.extend(message.data for message in batch)
    finally:
        await subscription.unsubscribe()
    return messages


@pytest.fixture
def stored(nc: Client) -> Any:
    js = nc.jetstream()

    async def read(stream: str, subject: str) -> list[bytes]:
        return await stored_messages(js, stream, subject)

    return read
