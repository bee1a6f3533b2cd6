"""The pinned pull consumer over a real nats-server: one client at a time, failover in order."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from zapgate.runtime.connection import ConnectionOptions, NatsConnection
from zapgate.runtime.db import MigrationSpec, create_engine, migrate
from zapgate.runtime.dead_letters import SqlDeadLetterStore, dead_letter_table
from zapgate.runtime.pinned import PinnedPullConsumer
from zapgate.runtime.streams import ConsumerSpec, StreamSpec, ensure_streams
from zapgate.runtime.topology import DEAD_LETTERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.runtime.consumer import Delivery

pytestmark = pytest.mark.real

WAIT = 20.0
STREAM = StreamSpec("RT_PIN", ("rt.pin.>",), storage="memory")
SPEC = ConsumerSpec(
    service="rt",
    name="pinned",
    stream=STREAM.name,
    filter_subjects=("rt.pin.*",),
    ack_wait=timedelta(seconds=1),
    priority_group="workers",
    priority_timeout=timedelta(seconds=1.5),
)
SAMPLE = MigrationSpec(
    service="sample",
    script_location=str(Path(__file__).parent / "migrations"),
    version_table="alembic_version_sample",
)
TABLE = dead_letter_table(sa.MetaData(), "sample_dead_letters")
SUBJECTS = ("rt.pin.a", "rt.pin.b", "rt.pin.c")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, database_url, SAMPLE)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def _connection(url: str, name: str) -> NatsConnection:
    connection = NatsConnection(url, ConnectionOptions(name=name))

    async def declare(nc: Client) -> None:
        await ensure_streams(nc, [STREAM, DEAD_LETTERS])

    connection.on_connect(declare)
    await connection.start()
    await connection.wait_for_connects(1, WAIT)
    return connection


class Worker:
    """One client of the group: what it handled (per subject, in order) and its pins."""

    def __init__(
        self, connection: NatsConnection, engine: AsyncEngine, *, concurrency: int = 16
    ) -> None:
        self.handled: dict[str, list[int]] = defaultdict(list)
        self.pins: list[str] = []
        self.stalled = asyncio.Event()
        self.stall_after: int | None = None
        self.count = 0
        self.changed = asyncio.Condition()
        self.consumer: PinnedPullConsumer[bytes] = PinnedPullConsumer(
            connection,
            SPEC,
            self.on_message,
            decode=bytes,
            dead_letters=SqlDeadLetterStore(engine, TABLE),
            concurrency=concurrency,
            fetch_wait=timedelta(seconds=0.5),
            on_pinned=self.on_pinned,
        )

    async def on_pinned(self, pin_id: str, still_pinned: Callable[[], Awaitable[bool]]) -> bool:
        self.pins.append(pin_id)
        return await still_pinned()

    async def on_message(self, data: bytes, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's signature
        if self.stall_after is not None and self.count >= self.stall_after:
            await self.stalled.wait()  # a process that stopped: no outcome, no ack
            return
        async with self.changed:
            self.count += 1
            self.handled[delivery.subject].append(delivery.sequence)
            self.changed.notify_all()

    async def wait_count(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.count >= count), WAIT)


async def test_one_client_holds_the_group_and_the_next_takes_over_in_stream_order(
    nats_url: str, engine: AsyncEngine
) -> None:
    """The first puller is pinned and handles everything; when it stops with deliveries left
    unacknowledged, the pin moves (a new id, `on_pinned`) and the next client handles the
    left-overs and what follows in stream order per subject, each exactly once."""
    first_connection = await _connection(nats_url, "pin-first")
    second_connection = await _connection(nats_url, "pin-second")
    first = Worker(first_connection, engine)
    second = Worker(second_connection, engine)
    publisher = first_connection.require().jetstream()
    try:
        await first.consumer.start()
        await asyncio.wait_for(first.consumer.subscribed.wait(), WAIT)
        await second.consumer.start()
        await asyncio.wait_for(second.consumer.subscribed.wait(), WAIT)

        first.stall_after = 6
        sequences = []
        for index in range(30):
            ack = await publisher.publish(SUBJECTS[index % 3], b"%d" % index, stream=STREAM.name)
            sequences.append((SUBJECTS[index % 3], ack.seq))
        await first.wait_count(6)
        assert len(first.pins) == 1
        # The first client stops: it neither pulls nor acknowledges what it holds.
        await first.consumer.stop(timeout=0.1)

        await second.wait_count(24)
        assert second.consumer.pins == 1
        assert second.pins[0] != first.pins[0]
        assert sum(map(len, first.handled.values())) == 6
        handled_by_both: dict[str, list[int]] = defaultdict(list)
        for worker in (first, second):
            for subject, handled in worker.handled.items():
                handled_by_both[subject] += handled
        for subject in SUBJECTS:
            expected = [seq for sub, seq in sequences if sub == subject]
            assert handled_by_both[subject] == expected, subject
    finally:
        first.stalled.set()
        second.stalled.set()
        await second.consumer.stop()
        await first.consumer.stop()
        await first_connection.close()
        await second_connection.close()


async def _ack_pending(client: Client) -> int:
    reply = await client.request(
        f"$JS.API.CONSUMER.INFO.{STREAM.name}.{SPEC.durable}", b"", timeout=5
    )
    return int(json.loads(reply.data).get("num_ack_pending", 0))


async def test_the_pinned_client_holds_no_more_than_its_concurrency_and_keeps_the_pin(
    nats_url: str, engine: AsyncEngine
) -> None:
    """With every handler stuck, the pinned client takes no more than `concurrency` deliveries
    (the backlog stays on the server, where a lost replica leaves nothing to redeliver), yet
    goes on pulling one at a time, so the pin does not lapse while a second client waits."""
    first_connection = await _connection(nats_url, "pin-full")
    second_connection = await _connection(nats_url, "pin-waiting")
    first = Worker(first_connection, engine, concurrency=4)
    second = Worker(second_connection, engine)
    client = first_connection.require()
    try:
        first.stall_after = 0
        for index in range(30):
            await client.jetstream().publish(SUBJECTS[index % 3], b"%d" % index, stream=STREAM.name)
        await first.consumer.start()
        await asyncio.wait_for(first.consumer.pinned.wait(), WAIT)
        await second.consumer.start()
        await asyncio.wait_for(second.consumer.subscribed.wait(), WAIT)

        # Four in hand, then one more per keep-alive pull (a third of the 1.5 s priority
        # timeout): eight in hand means more than a priority timeout went by while full.
        async def eight_in_hand() -> bool:
            return await _ack_pending(client) >= 8

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await eight_in_hand():
            assert loop.time() < deadline, await _ack_pending(client)
            await asyncio.sleep(0.05)  # a bounded poll of the server's count: no event for it

        assert await _ack_pending(client) < 30
        assert first.consumer.pins == 1
        assert second.pins == []
    finally:
        first.stalled.set()
        second.stalled.set()
        await second.consumer.stop()
        await first.consumer.stop()
        await first_connection.close()
        await second_connection.close()
