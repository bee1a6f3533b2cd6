"""The runtime's bus plumbing over a real nats-server (and PostgreSQL for the dead letters)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from zapgate.runtime import dead_letters_cli
from zapgate.runtime.connection import ConnectionOptions, InvalidPublishError, NatsConnection
from zapgate.runtime.consumer import (
    BatchPullConsumer,
    Delivery,
    DependencyUnavailable,
    MessageFailure,
    PullConsumer,
    annotate,
)
from zapgate.runtime.db import MigrationSpec, create_engine, migrate
from zapgate.runtime.dead_letters import FailedMessage, SqlDeadLetterStore, dead_letter_table
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ConsumerSpec, StreamSpec, ensure_consumer, ensure_streams
from zapgate.runtime.topology import DEAD_LETTERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.devservers.nats import NatsServer

pytestmark = pytest.mark.real

WAIT = 15.0
STREAM = StreamSpec("RT_BUS", ("rt.bus.>",), storage="memory")
SAMPLE = MigrationSpec(
    service="sample",
    script_location=str(Path(__file__).parent / "migrations"),
    version_table="alembic_version_sample",
)
TABLE = dead_letter_table(sa.MetaData(), "sample_dead_letters")


class Order(BaseModel):
    order_id: str
    poison: bool = False


async def _connection(url: str) -> NatsConnection:
    connection = NatsConnection(url, ConnectionOptions(name="runtime-test"))

    async def declare(nc: Client) -> None:
        await ensure_streams(nc, [STREAM, DEAD_LETTERS])

    connection.on_connect(declare)
    await connection.start()
    await connection.wait_for_connects(1, WAIT)
    return connection


async def _stored(connection: NatsConnection) -> int:
    info = await connection.require().jetstream().stream_info(STREAM.name)
    return info.state.messages


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, database_url, SAMPLE)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_publishing_resumes_after_the_server_closes_the_connection_on_a_protocol_error(
    nats_url: str,
) -> None:
    """A raw publish over the server's control-line limit makes nats-server send -ERR and close;
    nats-py closes the client for good, the supervisor connects a new one, publishing resumes."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    try:
        first = await publisher.publish("rt.bus.a", b"1", stream=STREAM.name, msg_id="m-1")
        old = connection.require()
        await old.publish("rt.bus." + "x" * 5000, b"boom")  # bypasses every check on purpose
        await connection.wait_for_connects(2, WAIT)

        second = await publisher.publish("rt.bus.b", b"2", stream=STREAM.name, msg_id="m-2")
        again = await publisher.publish("rt.bus.b", b"2", stream=STREAM.name, msg_id="m-2")

        assert old.is_closed
        assert "maximum control line exceeded" in repr(old.last_error).lower()
        assert connection.replacements == 1
        assert connection.require() is not old
        assert (first.sequence, second.sequence) == (1, 2)
        assert again.duplicate
        assert again.sequence == second.sequence
        assert await _stored(connection) == 2
    finally:
        await connection.close()


async def test_the_publisher_refuses_a_subject_the_server_would_close_the_connection_for(
    nats_url: str,
) -> None:
    """An over-long or malformed subject fails that one publish; the connection stays."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    try:
        refused: list[str] = []
        for subject in ("rt.bus." + "x" * 5000, "rt.bus.a b", "rt.bus..a", "rt.bus.*", ""):
            with pytest.raises(InvalidPublishError) as caught:
                await publisher.publish(subject, b"x", stream=STREAM.name, msg_id="m")
            refused.append(caught.value.code)
        with pytest.raises(InvalidPublishError):
            await publisher.publish(
                "rt.bus.a", b"x", stream=STREAM.name, msg_id="m", headers={"X": "a\r\nb"}
            )
        stored = await publisher.publish("rt.bus.ok", b"x", stream=STREAM.name, msg_id="ok")

        assert refused == [
            "subject_too_long",
            "subject_invalid_byte",
            "subject_empty_token",
            "subject_wildcard",
            "subject_empty",
        ]
        assert stored.sequence == 1
        assert connection.generation == 1
        assert connection.replacements == 0
    finally:
        await connection.close()


async def test_publishing_resumes_after_a_server_restart(
    fault_nats_server: Callable[..., NatsServer],
) -> None:
    """After nats-server restarts (SIGKILL), the same client reconnects and publishes again."""
    server = fault_nats_server()
    connection = await _connection(server.url)
    publisher = JetStreamPublisher(connection, timeout=timedelta(seconds=2), attempts=5)
    try:
        await publisher.publish("rt.bus.a", b"1", stream=STREAM.name, msg_id="m-1")
        await asyncio.to_thread(server.restart, kill=True)
        await connection.wait_for_connects(2, WAIT)
        result = await publisher.publish("rt.bus.b", b"2", stream=STREAM.name, msg_id="m-2")

        assert result.stream == STREAM.name
        assert not result.duplicate
        assert connection.replacements == 0
    finally:
        await connection.close()


async def test_a_reconnect_whose_provisioning_fails_for_a_while_ends_connected(
    fault_nats_server: Callable[..., NatsServer],
) -> None:
    """After a reconnect the `on_connect` callbacks are tried again until they succeed (a
    cluster electing leaders times them out for a while): the connection ends up `connected`,
    with the callbacks run once more per failure."""
    server = fault_nats_server()
    connection = NatsConnection(server.url, ConnectionOptions(name="runtime-test"))
    calls: list[int] = []

    async def provision(nc: Client) -> None:
        calls.append(connection.generation)
        if 1 < len(calls) <= 3:  # the second and third runs (after the reconnect) fail
            raise TimeoutError("stream leader not elected yet")
        await ensure_streams(nc, [STREAM])

    connection.on_connect(provision)
    await connection.start()
    try:
        await connection.wait_connected(WAIT)
        await asyncio.to_thread(server.restart, kill=True)
        client = await connection.wait_for_connects(2, WAIT)

        assert connection.connected.is_set()
        assert client.is_connected
        assert len(calls) == 4, calls
        assert connection.replacements == 0
    finally:
        await connection.close()


def _spec(name: str, **overrides: object) -> ConsumerSpec:
    options: dict[str, object] = {
        "max_failures": 3,
        "retry_delay": timedelta(milliseconds=20),
        "dependency_delay": timedelta(milliseconds=20),
        "ack_wait": timedelta(seconds=5),
    }
    options.update(overrides)
    return ConsumerSpec(
        service="sample",
        name=name,
        stream=STREAM.name,
        filter_subjects=("rt.bus.>",),
        message=Order,
        **options,  # type: ignore[arg-type]
    )


async def test_a_message_that_always_fails_is_dead_lettered_and_the_next_ones_flow(
    nats_url: str, engine: AsyncEngine
) -> None:
    """A handler failing N times: the message lands in the dead-letter table and subject with
    its reason, attempts and stream sequence; the consumer handles the next message."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    store = SqlDeadLetterStore(engine, TABLE)
    registry = CollectorRegistry()
    spec = _spec("poison")
    handled: list[str] = []
    good_done = asyncio.Event()

    async def handle(order: Order, delivery: Delivery) -> None:
        if order.poison:
            raise MessageFailure("order_rejected", f"order {order.order_id} cannot be priced")
        handled.append(f"{order.order_id}@{delivery.sequence}")
        good_done.set()

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=store,
        registry=registry,
    )
    dead_copies = (
        await connection.require()
        .jetstream()
        .pull_subscribe(spec.dead_letter_subject, stream=DEAD_LETTERS.name)
    )
    try:
        await consumer.start()
        poison = Order(order_id="o-1", poison=True).model_dump_json().encode()
        await publisher.publish("rt.bus.o1", poison, stream=STREAM.name, msg_id="o-1")
        await publisher.publish(
            "rt.bus.o2", b'{"order_id":"o-2"}', stream=STREAM.name, msg_id="o-2"
        )
        await asyncio.wait_for(good_done.wait(), WAIT)
        [copy] = await dead_copies.fetch(1, timeout=WAIT)
        [kept] = await store.list_dead(consumer=spec.durable)

        assert handled == ["o-2@2"]
        assert kept.reason_code == "order_rejected"
        assert "cannot be priced" in kept.reason
        assert kept.attempts == spec.max_failures
        assert (kept.stream, kept.sequence, kept.subject) == (STREAM.name, 1, "rt.bus.o1")
        assert kept.payload == poison
        assert kept.headers["Nats-Msg-Id"] == "o-1"
        assert kept.dead_lettered_at is not None
        assert kept.first_failed_at <= kept.last_failed_at
        assert copy.data == poison
        assert copy.headers is not None
        assert copy.headers["Zg-Dead-Letter-Reason"] == "order_rejected"
        assert copy.headers["Zg-Dead-Letter-Sequence"] == "1"
        assert copy.headers["Zg-Dead-Letter-Attempts"] == "3"
        assert copy.headers["Zg-Dead-Letter-Subject"] == "rt.bus.o1"
        assert copy.headers["Zg-Dead-Letter-Original-Nats-Msg-Id"] == "o-1"
        assert (
            registry.get_sample_value(
                "zapgate_dead_letters_total",
                {"consumer": spec.durable, "reason_code": "order_rejected"},
            )
            == 1.0
        )
    finally:
        await consumer.stop()
        await connection.close()


async def test_a_batch_consumer_settles_each_delivery_of_one_handler_call_by_its_result(
    nats_url: str, engine: AsyncEngine
) -> None:
    """One fetch, one handler call: good deliveries acked, an undecodable one dead-lettered at
    once, a failing one retried alone and dead-lettered after max_failures, a dependency
    failure nak'ed uncounted and handled later; the counters move per outcome."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    store = SqlDeadLetterStore(engine, TABLE)
    registry = CollectorRegistry()
    spec = _spec("batch")
    calls: list[list[str]] = []
    outages = ["o-3"]
    done = asyncio.Event()

    async def handle(items: Sequence[tuple[Order, Delivery]]) -> list[Exception | None]:
        calls.append([order.order_id for order, _ in items])
        results: list[Exception | None] = []
        for order, _ in items:
            if order.poison:
                results.append(MessageFailure("order_rejected", f"{order.order_id} unpriced"))
            elif order.order_id in outages:
                outages.remove(order.order_id)
                results.append(DependencyUnavailable("database down"))
            else:
                results.append(None)
                if order.order_id == "o-3":
                    done.set()
        return results

    consumer = BatchPullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=store,
        registry=registry,
        batch=16,
    )
    bodies = [
        b'{"order_id":"o-1"}',
        b'{"order_id":"o-2","poison":true}',
        b"not json",
        b'{"order_id":"o-3"}',
        b'{"order_id":"o-4"}',
    ]
    dead_copies = (
        await connection.require()
        .jetstream()
        .pull_subscribe(spec.dead_letter_subject, stream=DEAD_LETTERS.name)
    )
    try:
        for index, body in enumerate(bodies):
            await publisher.publish("rt.bus.b", body, stream=STREAM.name, msg_id=f"b-{index}")
        await consumer.start()
        await asyncio.wait_for(done.wait(), WAIT)
        copies: list[Msg] = []
        while len(copies) < 2:  # each fetch waits for the next copy (up to WAIT)
            copies += await dead_copies.fetch(2 - len(copies), timeout=WAIT)
        kept = await store.list_dead(consumer=spec.durable)

        assert calls[0] == ["o-1", "o-2", "o-3", "o-4"]
        assert sorted(calls[1:]) == [["o-2"], ["o-2"], ["o-3"]]
        assert {(row.sequence, row.reason_code, row.attempts) for row in kept} == {
            (2, "order_rejected", spec.max_failures),
            (3, "invalid_message", 1),
        }

        def handled(outcome: str) -> float | None:
            labels = {"consumer": spec.durable, "outcome": outcome}
            return registry.get_sample_value("zapgate_consumer_messages_total", labels)

        assert handled("acked") == 3.0
        assert handled("dependency_unavailable") == 1.0
        assert handled("dead_lettered") == 2.0
        assert handled("failed") == spec.max_failures - 1
    finally:
        await consumer.stop()
        await connection.close()


async def test_a_batch_consumer_lingers_for_a_fuller_batch_but_never_holds_one_forever(
    nats_url: str, engine: AsyncEngine
) -> None:
    """The first fetch takes the one message stored before the start; the next four, published
    one by one after it, arrive while the consumer lingers: one handler call for all five. A
    lone message later is still handled, in a call of its own, once the linger has passed."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    spec = _spec("linger", ack_wait=timedelta(seconds=30))
    calls: list[list[str]] = []
    handled = asyncio.Event()

    async def handle(items: Sequence[tuple[Order, Delivery]]) -> list[Exception | None]:
        calls.append([order.order_id for order, _ in items])
        handled.set()
        return [None] * len(items)

    consumer = BatchPullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=SqlDeadLetterStore(engine, TABLE),
        registry=CollectorRegistry(),
        batch=5,
        linger=timedelta(seconds=3),
    )

    async def publish(order_id: str) -> None:
        body = Order(order_id=order_id).model_dump_json().encode()
        await publisher.publish("rt.bus.l", body, stream=STREAM.name, msg_id=order_id)

    try:
        await publish("l-0")
        await consumer.start()
        # The first fetch's request goes out on this connection before the next publishes.
        await asyncio.wait_for(consumer.subscribed.wait(), WAIT)
        for index in range(1, 5):
            await publish(f"l-{index}")
        await asyncio.wait_for(handled.wait(), WAIT)

        assert calls == [["l-0", "l-1", "l-2", "l-3", "l-4"]]

        handled.clear()
        await publish("lone")
        await asyncio.wait_for(handled.wait(), WAIT)

        assert calls[1:] == [["lone"]]
    finally:
        await consumer.stop()
        await connection.close()


async def test_a_batch_consumer_refuses_a_linger_near_its_ack_wait(
    nats_url: str, engine: AsyncEngine
) -> None:
    """A linger above a quarter of ack_wait could let held deliveries be redelivered."""

    async def handle(items: Sequence[tuple[bytes, Delivery]]) -> list[Exception | None]:
        return [None] * len(items)

    with pytest.raises(ValueError, match="linger"):
        BatchPullConsumer(
            NatsConnection(nats_url, ConnectionOptions(name="unused")),
            _spec("too-long", ack_wait=timedelta(seconds=4)),
            handle,
            decode=bytes,
            dead_letters=SqlDeadLetterStore(engine, TABLE),
            registry=CollectorRegistry(),
            linger=timedelta(seconds=2),
        )


async def test_a_body_that_does_not_decode_is_dead_lettered_at_once(
    nats_url: str, engine: AsyncEngine
) -> None:
    """Invalid JSON or a body that fails validation is kept with `invalid_message` at once."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    store = SqlDeadLetterStore(engine, TABLE)
    spec = _spec("invalid")
    seen = asyncio.Event()

    async def handle(_order: Order, _delivery: Delivery) -> None:
        seen.set()

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=store,
        registry=CollectorRegistry(),
    )
    try:
        await consumer.start()
        for index, body in enumerate([b"not json", b'{"order_id": 7}', b"\xff\xfe"]):
            await publisher.publish("rt.bus.x", body, stream=STREAM.name, msg_id=f"bad-{index}")
        await publisher.publish("rt.bus.x", b'{"order_id":"ok"}', stream=STREAM.name, msg_id="ok")
        await asyncio.wait_for(seen.wait(), WAIT)
        kept = await store.list_dead(consumer=spec.durable)

        assert sorted(row.sequence for row in kept) == [1, 2, 3]
        assert {row.reason_code for row in kept} == {"invalid_message"}
        assert {row.attempts for row in kept} == {1}
        assert kept[-1].payload == b"not json"
    finally:
        await consumer.stop()
        await connection.close()


async def test_dependency_failures_never_dead_letter_a_good_message(
    nats_url: str, engine: AsyncEngine
) -> None:
    """Far more dependency failures than max_failures (typed, a database error, a timeout),
    mixed with one failure of the message itself: the message is processed in the end, no
    dead letter is kept and its failure count is cleared."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    store = SqlDeadLetterStore(engine, TABLE)
    registry = CollectorRegistry()
    spec = _spec("outage", max_failures=2)
    failures: list[BaseException] = [
        MessageFailure("flaky", "one real failure"),
        DependencyUnavailable("database down"),
        OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")),
        TimeoutError("provider timed out"),
        DependencyUnavailable("database down"),
        ConnectionResetError("reset"),
        DependencyUnavailable("database down"),
    ]
    done = asyncio.Event()
    deliveries: list[int] = []

    async def handle(_order: Order, delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if failures:
            raise failures.pop(0)
        done.set()

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=store,
        registry=registry,
    )
    try:
        await consumer.start()
        await publisher.publish("rt.bus.z", b'{"order_id":"z"}', stream=STREAM.name, msg_id="z")
        await asyncio.wait_for(done.wait(), WAIT)
        await consumer.stop()
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(sa.func.count()).select_from(TABLE))).scalar()

        assert deliveries == list(range(1, 9))
        assert rows == 0
        assert await store.list_dead() == []
        outcomes = {
            outcome: registry.get_sample_value(
                "zapgate_consumer_messages_total",
                {"consumer": spec.durable, "outcome": outcome},
            )
            for outcome in ("acked", "failed", "dependency_unavailable", "dead_lettered")
        }
        assert outcomes == {
            "acked": 1.0,
            "failed": 1.0,
            "dependency_unavailable": 6.0,
            "dead_lettered": None,
        }
    finally:
        await consumer.stop()
        await connection.close()


async def test_the_consumer_goes_on_after_its_connection_is_replaced(
    nats_url: str, engine: AsyncEngine
) -> None:
    """After nats-py closes the client on a protocol error, the consumer subscribes again on
    the new client and handles what is published next."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handle(order: Order, _delivery: Delivery) -> None:
        await received.put(order.order_id)

    consumer = PullConsumer(
        connection,
        _spec("replaced"),
        handle,
        decode=Order.model_validate_json,
        dead_letters=SqlDeadLetterStore(engine, TABLE),
        registry=CollectorRegistry(),
    )
    try:
        await consumer.start()
        await publisher.publish(
            "rt.bus.1", b'{"order_id":"before"}', stream=STREAM.name, msg_id="1"
        )
        before = await asyncio.wait_for(received.get(), WAIT)
        await connection.require().publish("rt.bus." + "y" * 5000, b"")
        await connection.wait_for_connects(2, WAIT)
        await publisher.publish("rt.bus.2", b'{"order_id":"after"}', stream=STREAM.name, msg_id="2")
        after = await asyncio.wait_for(received.get(), WAIT)

        assert (before, after) == ("before", "after")
        assert connection.replacements == 1
    finally:
        await consumer.stop()
        await connection.close()


async def test_a_message_whose_deliveries_never_end_is_dead_lettered_as_unfinished(
    nats_url: str, engine: AsyncEngine
) -> None:
    """A handler that never returns (as when the process dies on a message) outlives ack_wait
    on every delivery; its redeliveries are counted before they run, so it ends as a dead
    letter `delivery_unfinished` and the next message is handled."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    store = SqlDeadLetterStore(engine, TABLE)
    spec = _spec("hangs", max_failures=2, ack_wait=timedelta(seconds=1))
    forever = asyncio.Event()
    good_done = asyncio.Event()
    deliveries: list[int] = []

    async def handle(order: Order, delivery: Delivery) -> None:
        if order.poison:
            deliveries.append(delivery.num_delivered)
            await forever.wait()
        good_done.set()

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=store,
        registry=CollectorRegistry(),
        concurrency=8,
    )
    dead_copies = (
        await connection.require()
        .jetstream()
        .pull_subscribe(spec.dead_letter_subject, stream=DEAD_LETTERS.name)
    )
    try:
        await consumer.start()
        poison = b'{"order_id": "h", "poison": true}'
        await publisher.publish("rt.bus.h", poison, stream=STREAM.name, msg_id="h")
        [copy] = await dead_copies.fetch(1, timeout=WAIT)
        await publisher.publish("rt.bus.g", b'{"order_id": "g"}', stream=STREAM.name, msg_id="g")
        await asyncio.wait_for(good_done.wait(), WAIT)
        [kept] = await store.list_dead(consumer=spec.durable)

        assert deliveries == [1, 2, 3]
        assert kept.reason_code == "delivery_unfinished"
        assert kept.attempts == spec.max_failures + 1
        assert kept.payload == poison
        assert copy.headers is not None
        assert copy.headers["Zg-Dead-Letter-Reason"] == "delivery_unfinished"
    finally:
        forever.set()
        await consumer.stop()
        await connection.close()


@pytest.mark.parametrize("heartbeat", [timedelta(milliseconds=200), None])
async def test_a_handler_longer_than_the_ack_wait_is_kept_in_progress_by_the_heartbeat(
    nats_url: str, engine: AsyncEngine, heartbeat: timedelta | None
) -> None:
    """With a heartbeat, a handler that outlives the 1 s ack wait hears `+WPI` and its message
    is delivered once (none redelivered, acked at the end). Without one (the control), the
    server gives the same message again while the first handler still runs."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    name = "beats" if heartbeat else "no-beats"
    spec = _spec(name, ack_wait=timedelta(seconds=1))
    release = asyncio.Event()
    redelivered = asyncio.Event()
    acked = asyncio.Event()
    deliveries: list[int] = []

    async def handle(_order: Order, delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if delivery.num_delivered > 1:
            redelivered.set()
        await release.wait()

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=SqlDeadLetterStore(engine, TABLE),
        registry=CollectorRegistry(),
        concurrency=4,  # keeps fetching while the handler runs: a redelivery would be seen
        heartbeat=heartbeat,
    )
    client = connection.require()
    progress: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_ack(message: Msg) -> None:
        if message.data in {b"", b"+ACK"}:  # nats-py acks with an empty body
            acked.set()
        else:
            await progress.put(message.data)

    acks = await client.subscribe(f"$JS.ACK.{STREAM.name}.{spec.durable}.>", cb=on_ack)
    try:
        await consumer.start()
        await publisher.publish("rt.bus.s", b'{"order_id":"slow"}', stream=STREAM.name, msg_id="s")
        if heartbeat is None:
            await asyncio.wait_for(redelivered.wait(), WAIT)
            assert deliveries[:2] == [1, 2]
            return
        # 10 beats, 0.2 s apart: the handler has run at least 1.8 s, past the 1 s ack wait.
        beats = [await asyncio.wait_for(progress.get(), WAIT) for _ in range(10)]
        during = await client.jetstream().consumer_info(STREAM.name, spec.durable)
        release.set()
        await asyncio.wait_for(acked.wait(), WAIT)
        after = await client.jetstream().consumer_info(STREAM.name, spec.durable)

        assert set(beats) == {b"+WPI"}
        assert deliveries == [1]
        assert not redelivered.is_set()
        assert (during.num_redelivered, during.num_ack_pending) == (0, 1)
        assert (after.num_redelivered, after.num_ack_pending) == (0, 0)
    finally:
        release.set()
        await acks.unsubscribe()
        await consumer.stop()
        await connection.close()


def test_the_dead_letters_command_lists_what_consumers_gave_up_on(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`zapgate-dead-letters` finds every `*_dead_letters` table; text and JSON lines views,
    the payload as text or base64."""
    migrate(database_url, SAMPLE)

    async def keep() -> None:
        engine = create_engine(database_url)
        store = SqlDeadLetterStore(engine, TABLE)
        for sequence, payload in ((7, b'{"order_id":"x"}'), (8, b"\xff\x00")):
            failed = FailedMessage(
                consumer="sample-poison",
                stream="RT_BUS",
                sequence=sequence,
                subject="rt.bus.x",
                payload=payload,
                reason_code="order_rejected",
                reason="cannot be priced",
            )
            await store.mark_dead(failed, datetime(2026, 1, 1, 12, sequence, tzinfo=UTC))
        await engine.dispose()

    asyncio.run(keep())
    assert dead_letters_cli.main(["--database-url", database_url]) == 0
    text = capsys.readouterr().out.splitlines()
    assert dead_letters_cli.main(["--database-url", database_url, "--json", "--limit", "1"]) == 0
    [newest] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert len(text) == 2
    assert "sample_dead_letters  sample-poison  RT_BUS#8  rt.bus.x  order_rejected x1" in text[0]
    assert newest["stream_seq"] == 8
    assert newest["payload"] == {"base64": "/wA="}
    assert newest["dead_lettered_at"] == "2026-01-01T12:08:00+00:00"


async def test_a_handler_adds_its_result_to_the_canonical_line_of_its_own_delivery_only(
    nats_url: str, engine: AsyncEngine
) -> None:
    """`annotate` inside a handler puts its fields on that delivery's `message_handled` line
    (the outcome carries them); nothing carries over to the next delivery handled in the same
    task, and a task the handler starts (which copies its context) cannot annotate it."""
    connection = await _connection(nats_url)
    publisher = JetStreamPublisher(connection)
    spec = _spec("annotated")
    from_spawned: list[bool] = []

    async def spawned() -> bool:
        return annotate(late=True)

    async def handle(order: Order, _delivery: Delivery) -> None:
        if order.order_id == "a-1":
            annotate(order_id=order.order_id, priced=False)
            annotate(priced=True, outcome="overridden by the loop", event="not this either")
            from_spawned.append(await asyncio.create_task(spawned()))

    consumer = PullConsumer(
        connection,
        spec,
        handle,
        decode=Order.model_validate_json,
        dead_letters=SqlDeadLetterStore(engine, TABLE),
        registry=CollectorRegistry(),
    )
    try:
        await ensure_consumer(connection.require(), spec)
        for order_id in ("a-1", "a-2"):
            body = Order(order_id=order_id).model_dump_json().encode()
            await publisher.publish("rt.bus.a", body, stream=STREAM.name, msg_id=order_id)
        pulled = (
            await connection.require()
            .jetstream()
            .pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        )
        messages = await pulled.fetch(2, timeout=WAIT)
        outcomes = [await consumer.handle(message) for message in messages]

        assert [outcome.status for outcome in outcomes] == ["acked", "acked"]
        assert outcomes[0].fields == {"order_id": "a-1", "priced": True}
        assert outcomes[1].fields == {}
        assert from_spawned == [False]
        assert not annotate(outside=True)
    finally:
        await connection.close()
