"""The whole sender app (consumers, API, lanes) driven through SenderClient over real servers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from faststream import TestApp
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import EvidenceSource, InstanceState, InstanceStateChanged
from zapgate.contracts.sending import SendMessage, SendOutcome, SendStatus, TextContent
from zapgate.contracts.webhooks import DeliveryStatus, MessageStatusReported
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.topology import sender_command_partition
from zapgate.sender.adapters.partitions import PostgresPartitionFence
from zapgate.sender.app import create_app
from zapgate.sender.settings import SenderSettings
from zapgate.sender.tables import RowStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from faststream import FastStream
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.sender.service import SenderDeps
    from zapgate.wapi.client import WapiClient
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

TO = "5511988887777"
PHONE = "5511999990000"


def command(command_id: str, instance_id: str = "inst-1", **extra: Any) -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id=instance_id,
        phone=TO,
        body=TextContent(message=f"msg {command_id}"),
        **extra,
    )


@pytest.fixture
def make_app(
    nats_url: str, database_url: str, wapi_client: WapiClient, clock: ManualClock
) -> Callable[..., FastStream]:
    def build(**overrides: Any) -> FastStream:
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
        return create_app(settings, wapi=wapi_client, clock=clock, configure_logs=False)

    return build


@pytest.fixture
async def running(
    make_app: Callable[..., FastStream],
) -> AsyncIterator[FastStream]:
    app = make_app()
    async with TestApp(app):
        yield app


def started(app: FastStream) -> TestApp:
    return TestApp(app)


async def next_outcome(nc: Client, command_id: str, trigger: Any) -> SendOutcome:
    subscription = await nc.subscribe(subjects.send_outcome_subject(command_id))
    try:
        await trigger()
        message = await subscription.next_msg(timeout=10)
        return SendOutcome.model_validate_json(message.data)
    finally:
        await subscription.unsubscribe()


@pytest.mark.usefixtures("running")
async def test_client_send_returns_sent_and_a_resend_replays_without_a_second_call(
    nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """SenderClient sends through the stream; the same command again gets the stored outcome."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    client = SenderClient(nc)

    first = await client.send(command("cmd-1"), timeout=10)
    again = await client.send(command("cmd-1"), timeout=10)
    asked = await client.outcome("cmd-1")

    assert first.status is SendStatus.SENT
    assert again.status is SendStatus.SENT
    assert again.provider_message_id == first.provider_message_id
    assert asked is not None
    assert asked.provider_message_id == first.provider_message_id
    assert len(wapi_simulator.calls(operation="send-text")) == 1


@pytest.mark.usefixtures("running")
async def test_client_gets_the_blocked_failure_and_retries_it_after_recovery(
    nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """A degraded instance fails the send; an explicit retry after recovery is sent and linked."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.DEGRADED, reason="SESSION_INCOMPLETE")
    client = SenderClient(nc)

    failed = await client.send(command("cmd-f"), timeout=10)
    await health.put("inst-1", InstanceState.CONNECTED)
    retried = await client.retry("cmd-f", "cmd-f-2", timeout=10)

    assert failed.status is SendStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == ErrorCode.SESSION_INCOMPLETE.value
    assert retried.status is SendStatus.SENT
    assert retried.retry_of == "cmd-f"
    assert len(wapi_simulator.calls(operation="send-text")) == 1


@pytest.mark.usefixtures("running")
async def test_commands_of_one_instance_are_sent_in_order_while_others_run_too(
    nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """Per-instance order holds for a burst across two instances."""
    for instance_id in ("inst-a", "inst-b"):
        wapi_simulator.add_instance(instance_id, "tok-sender-test", phone=PHONE)
        await health.put(instance_id, InstanceState.CONNECTED)
    client = SenderClient(nc)
    commands = [command(f"o-{i}", "inst-a" if i % 2 else "inst-b") for i in range(20)]

    outcomes = await asyncio.gather(*(client.send(cmd, timeout=15) for cmd in commands))

    assert {outcome.status for outcome in outcomes} == {SendStatus.SENT}
    for instance_id in ("inst-a", "inst-b"):
        sent_texts = [
            call.body["message"]  # type: ignore[index, call-overload]
            for call in wapi_simulator.calls(operation="send-text", instance_id=instance_id)
        ]
        expected = [cmd.body.message for cmd in commands if cmd.instance_id == instance_id]  # type: ignore[union-attr]
        assert sent_texts == expected


async def test_held_command_survives_a_restart_and_is_sent_when_health_reports_recovery(
    make_app: Callable[..., FastStream], nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """Held in one sender process, released by InstanceStateChanged in the next one."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    client = SenderClient(nc)
    async with started(make_app()):
        held = await client.send(
            command("cmd-h", hold_for=timedelta(minutes=10)), timeout=10, wait_while_held=False
        )
    assert held.status is SendStatus.HELD
    await health.put("inst-1", InstanceState.CONNECTED)

    async with started(make_app()):
        changed = InstanceStateChanged(
            instance_id="inst-1",
            from_state=InstanceState.DEGRADED,
            to_state=InstanceState.CONNECTED,
            source=EvidenceSource.TICK,
            phone=PHONE,
            observed_at=held.occurred_at,
        )

        async def publish() -> None:
            await nc.jetstream().publish(
                subjects.state_changed_subject("inst-1"),
                changed.model_dump_json().encode(),
                stream=subjects.STREAM_HEALTH,
            )

        outcome = await next_outcome(nc, "cmd-h", publish)

    assert outcome.status is SendStatus.SENT
    assert len(wapi_simulator.calls(operation="send-text")) == 1


@pytest.mark.usefixtures("running")
async def test_receipt_and_tick_flow_through_the_running_service(
    nc: Client, health: Any, wapi_simulator: Simulator, clock: ManualClock
) -> None:
    """A READ receipt from ZG_WEBHOOKS moves the row; a tick later alerts nothing for it."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    client = SenderClient(nc)
    read_me = await client.send(command("cmd-read"), timeout=10)
    stuck_one = await client.send(command("cmd-stuck"), timeout=10)
    assert read_me.provider_message_id is not None
    js = nc.jetstream()
    statuses = await nc.subscribe(subjects.message_status_subject("inst-1"))
    alerts = await nc.subscribe(subjects.message_alert_subject("inst-1"))

    event = MessageStatusReported(
        instance_id="inst-1",
        received_at=read_me.occurred_at,
        dedupe_key="r-1",
        raw={},
        message_id=read_me.provider_message_id,
        status=DeliveryStatus.READ,
        status_raw="READ",
    )
    await js.publish(
        subjects.webhook_subject("message_status"),
        event.model_dump_json().encode(),
        stream=subjects.STREAM_WEBHOOKS,
    )
    moved = await statuses.next_msg(timeout=10)
    clock.advance(timedelta(minutes=11))
    await js.publish(subjects.SENDER_TICK, b"", stream=subjects.STREAM_TICKS)
    alert = await alerts.next_msg(timeout=10)

    assert b'"to_status":"read"' in moved.data
    assert stuck_one.command_id.encode() in alert.data
    assert read_me.command_id.encode() not in alert.data


async def _yes() -> bool:
    return True


async def test_a_command_a_crashed_delivery_left_sending_is_reconciled_after_the_lease(  # noqa: PLR0913, PLR0917 - fixtures
    make_app: Callable[..., FastStream],
    nc: Client,
    engine: AsyncEngine,
    deps: SenderDeps,
    health: Any,
    wapi_simulator: Simulator,
) -> None:
    """Redelivered inside the lease it is not acked; after the lease it becomes `uncertain`."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    crashed = command("cmd-crash")
    # What a process killed inside the provider call leaves behind: a row moved to `sending`
    # and its call recorded under the epoch it held its partition with.
    clock = deps.clock
    assert isinstance(clock, ManualClock)
    await deps.store.claim(crashed, clock.now())
    await deps.store.move(
        "cmd-crash", from_statuses={RowStatus.CLAIMED}, to=RowStatus.SENDING, now=clock.now()
    )
    partition = sender_command_partition("inst-1")
    fence = PostgresPartitionFence(engine)
    k = int(partition.name.removeprefix("commands-p"))
    epoch = await fence.take_over(k, "crashed-pin", "crashed", clock.now(), still_pinned=_yes)
    assert epoch is not None
    assert await fence.record_call(
        partition=k, epoch=epoch, command_id="cmd-crash", instance_id="inst-1", now=clock.now()
    )
    outcomes = await nc.subscribe(subjects.send_outcome_subject("cmd-crash"))
    naks = await nc.subscribe(
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{subjects.STREAM_SEND}.{partition.durable}"
    )

    async with started(make_app(sending_lease=timedelta(seconds=1))):
        await nc.jetstream().publish(
            subjects.send_command_subject("inst-1"),
            crashed.model_dump_json().encode(),
            stream=subjects.STREAM_SEND,
        )
        # Inside the lease (the clock stands still) the delivery is handed back, not acked.
        await naks.next_msg(timeout=10)
        clock.advance(timedelta(seconds=2))
        message = await outcomes.next_msg(timeout=10)

    outcome = SendOutcome.model_validate_json(message.data)
    assert outcome.status is SendStatus.UNCERTAIN
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.PROVIDER_UNCERTAIN.value
    assert wapi_simulator.calls(operation="send-text") == []


async def test_a_command_left_sending_without_a_recorded_call_is_sent_after_the_lease(  # noqa: PLR0913, PLR0917 - fixtures
    make_app: Callable[..., FastStream],
    nc: Client,
    engine: AsyncEngine,
    deps: SenderDeps,
    health: Any,
    wapi_simulator: Simulator,
) -> None:
    """What a replica fenced off before its call leaves (it moved the row to `sending`, its
    epoch was over when it came to record the call): after the lease the command is taken back
    and sent, once, not declared `uncertain`, since every call is recorded before it is made."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    fenced = command("cmd-fenced")
    clock = deps.clock
    assert isinstance(clock, ManualClock)
    await deps.store.claim(fenced, clock.now())
    await deps.store.move(
        "cmd-fenced", from_statuses={RowStatus.CLAIMED}, to=RowStatus.SENDING, now=clock.now()
    )
    clock.advance(timedelta(seconds=2))
    outcomes = await nc.subscribe(subjects.send_outcome_subject("cmd-fenced"))

    async with started(make_app(sending_lease=timedelta(seconds=1))):
        await nc.jetstream().publish(
            subjects.send_command_subject("inst-1"),
            fenced.model_dump_json().encode(),
            stream=subjects.STREAM_SEND,
        )
        message = await outcomes.next_msg(timeout=10)

    outcome = SendOutcome.model_validate_json(message.data)
    assert outcome.status is SendStatus.SENT, outcome
    assert len(wapi_simulator.calls(operation="send-text")) == 1
    assert await PostgresPartitionFence(engine).was_called("cmd-fenced")


async def test_delivery_and_read_queued_together_move_the_message_through_both(
    make_app: Callable[..., FastStream], nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """Receipts waiting in one batch are applied in stream order: `delivered`, then `read`."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    async with started(make_app()):
        sent = await SenderClient(nc).send(command("cmd-order"), timeout=10)
    assert sent.provider_message_id is not None
    js = nc.jetstream()
    for step, status in enumerate((DeliveryStatus.DELIVERED, DeliveryStatus.READ)):
        receipt = MessageStatusReported(
            instance_id="inst-1",
            received_at=sent.occurred_at,
            dedupe_key=f"order-{step}",
            raw={},
            message_id=sent.provider_message_id,
            status=status,
            status_raw=status.value.upper(),
        )
        await js.publish(
            subjects.webhook_subject("message_status"),
            receipt.model_dump_json().encode(),
            stream=subjects.STREAM_WEBHOOKS,
        )
    changes = await nc.subscribe(subjects.message_status_subject("inst-1"))

    async with started(make_app()):
        moves = [await changes.next_msg(timeout=10) for _ in range(2)]

    assert [json.loads(move.data)["to_status"] for move in moves] == ["delivered", "read"]
