"""Issue #13 g, i, j over real nats-server, PostgreSQL and the W-API simulator.

g: receipts that overtake their send's answer are kept and applied.
i: every command on the bus gets an answer (or a dead letter); phones are normalised.
j: the provider's answer survives a database outage; a crashed sender's commands come back
   within the short ack wait, and a long provider call is kept in progress meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from faststream import TestApp
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import (
    MessageStatusChanged,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import DeliveryStatus, MessageStatusReported
from zapgate.runtime.db import create_engine
from zapgate.runtime.pinned import fetch_pinned
from zapgate.runtime.topology import (
    SEND_PARTITION_GROUP,
    sender_command_partition,
    stored_command_subject,
)
from zapgate.sender.app import create_app
from zapgate.sender.service import (
    Receipt,
    SendPolicy,
    StuckPolicy,
    apply_message_status,
    send_message,
    sweep,
)
from zapgate.sender.settings import SenderSettings
from zapgate.sender.tables import RowStatus
from zapgate.wapi.client import WapiClient
from zapgate.wapi.results import SendAccepted

from .conftest import make_deps
from .tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from faststream import FastStream
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.runtime.clock import ManualClock
    from zapgate.sender.domain import InstanceView, LiveSession
    from zapgate.sender.ports import Provider
    from zapgate.wapi.credentials import InstanceCredentials
    from zapgate.wapi.failures import ProviderFailure
    from zapgate.wapi.simulator.handle import Simulator
    from zapgate.wapi.simulator.server import SimulatorServer

pytestmark = [pytest.mark.real]

CASES = Path(__file__).parent / "cases"
PHONE = "5511999990000"
TO = "5584988887777"
TOKEN = "tok-sender-test"


def case(name: str) -> Any:
    return json.loads((CASES / name).read_text(encoding="utf-8").replace("{NOW}", "0"))


class AnswerHook:
    """`Provider` that runs `hook(answer)` between the provider's answer and the sender."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.hook: Callable[[SendAccepted | ProviderFailure], Any] | None = None

    async def send(
        self,
        instance: InstanceView,
        phone: str,
        body: Any,
        *,
        quoted_message_id: str | None,
        delay_message: int | None,
    ) -> SendAccepted | ProviderFailure:
        answer = await self.inner.send(
            instance, phone, body, quoted_message_id=quoted_message_id, delay_message=delay_message
        )
        if self.hook is not None:
            await self.hook(answer)
        return answer

    async def observe(self, instance: InstanceView) -> LiveSession:
        return await self.inner.observe(instance)


class HeldAnswerWapi(WapiClient):
    """The real client over HTTP whose send answers wait for `release` (a slow provider)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url=base_url)
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def send_text(
        self,
        credentials: InstanceCredentials,
        phone: str,
        message: str,
        *,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        answer = await super().send_text(
            credentials,
            phone,
            message,
            quoted_message_id=quoted_message_id,
            delay_message=delay_message,
        )
        self.called.set()
        await self.release.wait()
        return answer


def status_report(
    message_id: str, body: dict[str, Any], clock: ManualClock
) -> MessageStatusReported:
    """What ingest routes from the case's webhookStatus body, for the answer's messageId."""
    raw = {**body, "messageId": message_id}
    status = {"DELIVERY": DeliveryStatus.DELIVERED, "READ": DeliveryStatus.READ}[raw["status"]]
    return MessageStatusReported(
        instance_id=raw["instanceId"],
        received_at=clock.now(),
        dedupe_key=f"{message_id}:{raw['status']}",
        raw=raw,
        message_id=message_id,
        status=status,
        status_raw=raw["status"],
        connected_phone=raw.get("connectedPhone"),
    )


# --- g ------------------------------------------------------------------------------------------


async def test_receipts_that_arrive_8s_before_the_send_answer_move_the_message_to_read(  # noqa: PLR0913, PLR0917 - fixtures
    engine: AsyncEngine,
    nc: Client,
    wapi_client: WapiClient,
    wapi_simulator: Simulator,
    health: Any,
    clock: ManualClock,
    stored: Any,
) -> None:
    """receipts-before-answer.json: DELIVERY (and READ) land before the answer, which comes 8 s
    later. The row ends `read` with `sent_at` at the answer, no stuck alert, no stall."""
    deps = make_deps(engine, nc, wapi_client, clock)
    provider = AnswerHook(deps.provider)
    deps = dataclasses.replace(deps, provider=provider)
    wapi_simulator.add_instance("demo", TOKEN, phone=PHONE)
    await health.put("demo", InstanceState.CONNECTED)
    body = case("receipts-before-answer.json")
    results: list[Receipt] = []
    receipts_at = clock.now()

    async def receipts_overtake(answer: SendAccepted | ProviderFailure) -> None:
        assert isinstance(answer, SendAccepted)
        for word in ("DELIVERY", "READ"):
            event = status_report(answer.message_id, {**body, "status": word}, clock)
            results.append(await apply_message_status(event, deps))
        clock.advance(timedelta(seconds=8))

    provider.hook = receipts_overtake
    command = SendMessage(
        command_id="g-1", instance_id="demo", phone="5584988887777", body=TextContent(message="oi")
    )

    outcome = await send_message(command, deps)

    assert results == [Receipt.KEPT, Receipt.KEPT]
    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    row = await deps.store.get("g-1")
    assert row is not None
    assert row.status == RowStatus.READ.value
    assert row.provider_message_id == outcome.provider_message_id
    assert row.sent_at == receipts_at + timedelta(seconds=8)
    assert row.delivered_at == receipts_at
    assert await deps.store.early_receipts(outcome.provider_message_id or "") == []
    moves = [
        MessageStatusChanged.model_validate_json(data)
        for data in await stored(subjects.STREAM_SEND, subjects.message_status_subject("demo"))
    ]
    assert [(move.from_status, move.to_status) for move in moves] == [
        (SendStatus.SENT, SendStatus.DELIVERED),
        (SendStatus.DELIVERED, SendStatus.READ),
    ]
    clock.advance(timedelta(hours=1))
    report = await sweep(deps, StuckPolicy(window=timedelta(minutes=10), stall_threshold=1))
    assert report.stuck_alerted == []
    assert report.stalled == []


# --- i ------------------------------------------------------------------------------------------


@pytest.fixture
def make_app(
    nats_url: str, database_url: str, wapi_client: WapiClient, clock: ManualClock
) -> Callable[..., FastStream]:
    def build(wapi: WapiClient | None = None, **overrides: Any) -> FastStream:
        settings = SenderSettings(
            environment="test",
            nats_url=nats_url,
            database_url=SecretStr(database_url),
            probe_host="127.0.0.1",
            probe_port=0,
            min_send_gap=timedelta(0),
            provider_backoff=timedelta(0),
            sweep_every=None,
            **overrides,
        )
        return create_app(settings, wapi=wapi or wapi_client, clock=clock, configure_logs=False)

    return build


async def outcome_of(nc: Client, command_id: str, publish: Any) -> SendOutcome:
    subscription = await nc.subscribe(subjects.send_outcome_subject(command_id))
    try:
        await publish()
        message = await subscription.next_msg(timeout=10)
        return SendOutcome.model_validate_json(message.data)
    finally:
        await subscription.unsubscribe()


async def test_the_formatted_phone_command_on_the_bus_is_sent_to_the_normalised_number(
    make_app: Callable[..., FastStream], nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """command-formatted-phone.json (`+55 (84) 98888-7777`, raw JSON from a non-Python caller)
    is sent to 5584988887777; a JID, a bare local number and a broken body each get an answer."""
    wapi_simulator.add_instance("demo", TOKEN, phone=PHONE)
    await health.put("demo", InstanceState.CONNECTED)
    raw = (CASES / "command-formatted-phone.json").read_bytes()
    js = nc.jetstream()

    def publisher(data: bytes) -> Any:
        async def publish() -> None:
            await js.publish(
                subjects.send_command_subject("demo"), data, stream=subjects.STREAM_SEND
            )

        return publish

    def variant(command_id: str, **changes: Any) -> bytes:
        return json.dumps({**json.loads(raw), "command_id": command_id, **changes}).encode()

    async with TestApp(make_app()):
        formatted = await outcome_of(nc, "br10-raw-formatted", publisher(raw))
        jid = await outcome_of(
            nc, "i-jid", publisher(variant("i-jid", phone="5584988887777@s.whatsapp.net"))
        )
        local = await outcome_of(nc, "i-local", publisher(variant("i-local", phone="11988887777")))
        broken = await outcome_of(
            nc, "i-broken", publisher(variant("i-broken", body={"kind": "text"}, hold_for="x"))
        )

    assert formatted.status is SendStatus.SENT
    assert formatted.phone == "5584988887777"
    assert jid.status is SendStatus.SENT
    sent_to = [
        call.body["phone"]
        for call in wapi_simulator.calls(operation="send-text")
        if isinstance(call.body, dict)
    ]
    assert sent_to == ["5584988887777", "5584988887777"]
    assert local.status is SendStatus.FAILED
    assert local.error is not None
    assert local.error.code == ErrorCode.PHONE_COUNTRY_CODE_MISSING.value
    assert broken.status is SendStatus.FAILED
    assert broken.error is not None
    assert broken.error.code == ErrorCode.INVALID_COMMAND.value
    assert broken.error.fields is not None
    assert set(broken.error.fields) == {"body.text.message", "hold_for"}


async def test_a_command_whose_ids_cannot_be_read_is_dead_lettered_and_the_next_one_runs(
    make_app: Callable[..., FastStream],
    nc: Client,
    engine: AsyncEngine,
    health: Any,
    wapi_simulator: Simulator,
) -> None:
    """Bytes that are not a command are dead-lettered (sender_dead_letters, the runtime's
    ledger) and terminated; the next command still runs."""
    wapi_simulator.add_instance("demo", TOKEN, phone=PHONE)
    await health.put("demo", InstanceState.CONNECTED)
    js = nc.jetstream()
    durable = sender_command_partition("demo").durable
    terminated = await nc.subscribe(
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{subjects.STREAM_SEND}.{durable}"
    )
    good = SendMessage(
        command_id="i-after",
        instance_id="demo",
        phone="5584988887777",
        body=TextContent(message="x"),
    )

    async with TestApp(make_app()):
        await js.publish(
            subjects.send_command_subject("demo"), b"\xff{not json", stream=subjects.STREAM_SEND
        )
        await terminated.next_msg(timeout=10)
        after = await outcome_of(
            nc,
            "i-after",
            lambda: js.publish(
                subjects.send_command_subject("demo"),
                good.model_dump_json().encode(),
                stream=subjects.STREAM_SEND,
            ),
        )

    async with engine.connect() as conn:
        query = sa.text(
            "SELECT subject, payload, reason_code, dead_lettered_at FROM sender_dead_letters"
        )
        rows = (await conn.execute(query)).all()
    # Kept under the subject the stream stored it on (its partition's).
    assert [(row.subject, bytes(row.payload), row.reason_code) for row in rows] == [
        (stored_command_subject("demo"), b"\xff{not json", "unreadable_command")
    ]
    assert rows[0].dead_lettered_at is not None
    assert after.status is SendStatus.SENT


# --- j ------------------------------------------------------------------------------------------


@pytest.fixture
async def proxied_engine(database_url: str) -> AsyncIterator[tuple[AsyncEngine, TcpProxy]]:
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    engine = create_engine(url.set(port=port).render_as_string(hide_password=False))
    yield engine, proxy
    await engine.dispose()
    await proxy.close()


async def test_the_answer_is_stored_with_its_message_id_when_the_database_dies_after_the_call(  # noqa: PLR0913, PLR0917 - fixtures
    proxied_engine: tuple[AsyncEngine, TcpProxy],
    engine: AsyncEngine,
    nc: Client,
    wapi_client: WapiClient,
    wapi_simulator: Simulator,
    health: Any,
    clock: ManualClock,
) -> None:
    """PostgreSQL becomes unreachable right after W-API accepted: the row still ends `sent`
    with the provider's messageId once it is back, and the provider was called once."""
    through_proxy, proxy = proxied_engine
    base = make_deps(through_proxy, nc, wapi_client, clock)
    provider = AnswerHook(base.provider)
    deps = dataclasses.replace(
        base, provider=provider, policy=SendPolicy(store_retry_cap=timedelta(milliseconds=200))
    )
    wapi_simulator.add_instance("inst-j", TOKEN, phone=PHONE)
    await health.put("inst-j", InstanceState.CONNECTED)
    answers: list[str] = []

    async def database_dies(answer: SendAccepted | ProviderFailure) -> None:
        assert isinstance(answer, SendAccepted)
        answers.append(answer.message_id)
        proxy.cut()

        async def comes_back() -> None:
            await proxy.refused.wait()  # the sender tried again while it was down
            proxy.restore()

        background.append(asyncio.create_task(comes_back()))

    background: list[asyncio.Task[None]] = []
    provider.hook = database_dies
    command = SendMessage(
        command_id="j-1", instance_id="inst-j", phone=TO, body=TextContent(message="x")
    )

    outcome = await asyncio.wait_for(send_message(command, deps), timeout=30)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.provider_message_id == answers[0]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT status, provider_message_id FROM send_commands WHERE command_id = 'j-1'"
                )
            )
        ).one()
    assert (row.status, row.provider_message_id) == ("sent", answers[0])
    assert len(wapi_simulator.calls(operation="send-text")) == 1
    assert all(task.done() for task in background)


async def test_an_answer_parked_by_a_sender_that_died_during_the_outage_is_recovered(  # noqa: PLR0913, PLR0917 - fixtures
    proxied_engine: tuple[AsyncEngine, TcpProxy],
    nc: Client,
    wapi_client: WapiClient,
    wapi_simulator: Simulator,
    health: Any,
    clock: ManualClock,
) -> None:
    """The database is gone after W-API accepted and the sender dies before it returns: the
    next delivery after the lease takes the messageId parked in ZG_SEND and stores `sent`."""
    through_proxy, proxy = proxied_engine
    base = make_deps(through_proxy, nc, wapi_client, clock)
    provider = AnswerHook(base.provider)
    deps = dataclasses.replace(
        base, provider=provider, policy=SendPolicy(store_retry_cap=timedelta(milliseconds=200))
    )
    wapi_simulator.add_instance("inst-j", TOKEN, phone=PHONE)
    await health.put("inst-j", InstanceState.CONNECTED)
    answers: list[str] = []

    async def database_dies(answer: SendAccepted | ProviderFailure) -> None:
        assert isinstance(answer, SendAccepted)
        answers.append(answer.message_id)
        proxy.cut()

    provider.hook = database_dies
    command = SendMessage(
        command_id="j-park", instance_id="inst-j", phone=TO, body=TextContent(message="x")
    )
    parked = await nc.subscribe(subjects.send_outcome_subject("j-park"))
    sender = asyncio.create_task(send_message(command, deps))
    await parked.next_msg(timeout=10)  # the first write failed: the answer is parked
    await asyncio.wait_for(proxy.refused.wait(), timeout=10)  # and it is retrying the write
    sender.cancel()  # the process dies
    await asyncio.gather(sender, return_exceptions=True)
    proxy.restore()
    provider.hook = None
    clock.advance(timedelta(minutes=3))  # past the sending lease

    outcome = await send_message(command, deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.provider_message_id == answers[0]
    row = await deps.store.get("j-park")
    assert row is not None
    assert (row.status, row.provider_message_id) == ("sent", answers[0])
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_commands_a_crashed_sender_pulled_are_sent_by_the_next_within_the_ack_wait(
    make_app: Callable[..., FastStream], nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """A sender pulls a command and dies without an answer: with a 1 s ack wait the next sender
    gets it (second delivery) and sends it once."""
    wapi_simulator.add_instance("inst-j", TOKEN, phone=PHONE)
    await health.put("inst-j", InstanceState.CONNECTED)
    js = nc.jetstream()
    async with TestApp(make_app(command_ack_wait=timedelta(seconds=1))):
        pass  # creates the durable consumer with the short ack wait, then stops
    command = SendMessage(
        command_id="j-crash",
        instance_id="inst-j",
        phone="5584988887777",
        body=TextContent(message="x"),
    )
    await js.publish(
        subjects.send_command_subject("inst-j"),
        command.model_dump_json().encode(),
        stream=subjects.STREAM_SEND,
    )
    # A sender pulls it from the partition's pinned group and is gone: no ack, no nak, no
    # more pulls (its pin lapses after the priority timeout).
    (pulled,) = await fetch_pinned(
        nc,
        stream=subjects.STREAM_SEND,
        durable=sender_command_partition("inst-j").durable,
        group=SEND_PARTITION_GROUP,
    )
    assert pulled.metadata.num_delivered == 1

    async with TestApp(make_app(command_ack_wait=timedelta(seconds=1))):
        outcome = await outcome_of(nc, "j-crash", _nothing)

    assert outcome.status is SendStatus.SENT
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def _nothing() -> None:
    return None


async def test_a_provider_call_longer_than_the_ack_wait_is_kept_in_progress_not_redelivered(
    make_app: Callable[..., FastStream],
    nc: Client,
    health: Any,
    wapi_simulator: Simulator,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """While the provider takes longer than the 1 s ack wait, the sender sends in-progress
    heartbeats (`+WPI`): the command is delivered once and sent once."""
    wapi_simulator.add_instance("inst-j", TOKEN, phone=PHONE)
    await health.put("inst-j", InstanceState.CONNECTED)
    held = HeldAnswerWapi(wapi_simulator_server.base_url)
    durable = sender_command_partition("inst-j").durable
    heartbeats = await nc.subscribe(f"$JS.ACK.{subjects.STREAM_SEND}.{durable}.>")
    command = SendMessage(
        command_id="j-slow",
        instance_id="inst-j",
        phone="5584988887777",
        body=TextContent(message="x"),
    )
    js = nc.jetstream()
    try:
        async with TestApp(make_app(wapi=held, command_ack_wait=timedelta(seconds=1))):
            outcomes = await nc.subscribe(subjects.send_outcome_subject("j-slow"))
            await js.publish(
                subjects.send_command_subject("inst-j"),
                command.model_dump_json().encode(),
                stream=subjects.STREAM_SEND,
            )
            await asyncio.wait_for(held.called.wait(), timeout=10)
            beats = [await heartbeats.next_msg(timeout=5) for _ in range(4)]
            held.release.set()
            outcome = SendOutcome.model_validate_json((await outcomes.next_msg(timeout=10)).data)
            info = await js.consumer_info(subjects.STREAM_SEND, durable)
    finally:
        await held.aclose()

    assert {beat.data for beat in beats} == {b"+WPI"}
    assert outcome.status is SendStatus.SENT
    assert info.num_redelivered == 0
    assert len(wapi_simulator.calls(operation="send-text")) == 1
