"""Delivery receipts, stuck alerts, stalls and held expiry over real PostgreSQL and NATS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import DeliverySignal, DeliverySignalled, InstanceState
from zapgate.contracts.sending import (
    MessageStatusChanged,
    MessageStuck,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import DeliveryStatus, MessageStatusReported
from zapgate.sender.service import Receipt, StuckPolicy, apply_message_status, send_message, sweep
from zapgate.sender.tables import RowStatus

if TYPE_CHECKING:
    from zapgate.runtime.clock import ManualClock
    from zapgate.sender.service import SenderDeps
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

TO = "5511988887777"
POLICY = StuckPolicy(window=timedelta(minutes=10), stall_threshold=3)


def receipt(message_id: str, status: DeliveryStatus, raw: str) -> MessageStatusReported:
    now = datetime.now(UTC)
    return MessageStatusReported(
        instance_id="inst-1",
        received_at=now,
        dedupe_key=f"{message_id}:{raw}",
        raw={},
        message_id=message_id,
        status=status,
        status_raw=raw,
    )


async def send(deps: SenderDeps, command_id: str, **extra: Any) -> SendOutcome:
    command = SendMessage(
        command_id=command_id,
        instance_id="inst-1",
        phone=TO,
        body=TextContent(message="oi"),
        **extra,
    )
    outcome = await send_message(command, deps)
    assert outcome is not None
    return outcome


@pytest.fixture
async def sent_ready(health: Any, wapi_simulator: Simulator) -> None:
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone="5511999990000")
    await health.put("inst-1", InstanceState.CONNECTED)


@pytest.mark.usefixtures("sent_ready")
async def test_receipts_move_a_message_forward_only_and_tolerate_duplicates(
    deps: SenderDeps, stored: Any
) -> None:
    """READ, then a late DELIVERED and a duplicate READ: the row stays `read`, one event."""
    outcome = await send(deps, "c-r")
    message_id = outcome.provider_message_id
    assert message_id is not None

    results = [
        await apply_message_status(receipt(message_id, DeliveryStatus.READ, "READ"), deps),
        await apply_message_status(receipt(message_id, DeliveryStatus.DELIVERED, "DELIVERY"), deps),
        await apply_message_status(receipt(message_id, DeliveryStatus.READ, "READ"), deps),
        await apply_message_status(receipt(message_id, DeliveryStatus.FAILED, "ERROR"), deps),
        await apply_message_status(receipt("unknown-id", DeliveryStatus.READ, "READ"), deps),
    ]

    assert results == [
        Receipt.APPLIED,
        Receipt.IGNORED,
        Receipt.IGNORED,
        Receipt.IGNORED,
        Receipt.KEPT,
    ]
    row = await deps.store.get("c-r")
    assert row is not None
    assert row.status == RowStatus.READ.value
    assert row.read_at is not None
    events = [
        MessageStatusChanged.model_validate_json(data)
        for data in await stored(subjects.STREAM_SEND, subjects.message_status_subject("inst-1"))
    ]
    assert [(event.from_status, event.to_status) for event in events] == [
        (SendStatus.SENT, SendStatus.READ)
    ]


@pytest.mark.usefixtures("sent_ready")
async def test_error_receipt_fails_a_sent_message(deps: SenderDeps) -> None:
    """ERROR before any delivery proof moves `sent` to `failed`."""
    outcome = await send(deps, "c-e")
    assert outcome.provider_message_id is not None

    result = await apply_message_status(
        receipt(outcome.provider_message_id, DeliveryStatus.FAILED, "ERROR"), deps
    )

    assert result is Receipt.APPLIED
    row = await deps.store.get("c-e")
    assert row is not None
    assert row.status == RowStatus.FAILED.value


@pytest.mark.usefixtures("sent_ready")
async def test_stuck_message_alerts_once_and_stall_is_signalled_then_cleared(
    deps: SenderDeps, clock: ManualClock, stored: Any
) -> None:
    """Three undelivered messages past the window: one alert each, one stall, then resumed."""
    outcomes = [await send(deps, f"c-s{index}") for index in range(3)]
    clock.advance(timedelta(minutes=5))
    early = await sweep(deps, POLICY)
    clock.advance(timedelta(minutes=6))
    first = await sweep(deps, POLICY)
    second = await sweep(deps, POLICY)

    assert early.stuck_alerted == []
    assert sorted(first.stuck_alerted) == ["c-s0", "c-s1", "c-s2"]
    assert first.stalled == ["inst-1"]
    assert second.stuck_alerted == []
    assert second.stalled == []
    alerts = [
        MessageStuck.model_validate_json(data)
        for data in await stored(subjects.STREAM_SEND, subjects.message_alert_subject("inst-1"))
    ]
    assert sorted(alert.command_id for alert in alerts) == ["c-s0", "c-s1", "c-s2"]
    assert all(alert.stuck_for >= timedelta(minutes=10) for alert in alerts)

    message_id = outcomes[0].provider_message_id
    assert message_id is not None
    await apply_message_status(receipt(message_id, DeliveryStatus.DELIVERED, "DELIVERY"), deps)

    signals = [
        DeliverySignalled.model_validate_json(data)
        for data in await stored(subjects.STREAM_HEALTH, subjects.delivery_signal_subject("inst-1"))
    ]
    assert [signal.signal for signal in signals] == [
        DeliverySignal.STALLED,
        DeliverySignal.RESUMED,
    ]
    assert sorted(signals[0].message_ids) == ["c-s0", "c-s1", "c-s2"]
    assert second.to_release == []


@pytest.mark.usefixtures("sent_ready")
async def test_stuck_messages_of_an_instance_that_still_delivers_are_not_a_stall(
    deps: SenderDeps, clock: ManualClock
) -> None:
    """A delivery after the stuck messages were sent means the instance is not stalled."""
    for index in range(3):
        await send(deps, f"c-n{index}")
    clock.advance(timedelta(minutes=1))
    fresh = await send(deps, "c-fresh")
    assert fresh.provider_message_id is not None
    await apply_message_status(
        receipt(fresh.provider_message_id, DeliveryStatus.DELIVERED, "DELIVERY"), deps
    )
    clock.advance(timedelta(minutes=10))

    report = await sweep(deps, POLICY)

    assert len(report.stuck_alerted) == 3
    assert report.stalled == []


async def test_held_command_expires_at_its_deadline(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, clock: ManualClock, stored: Any
) -> None:
    """A held command whose instance never recovers fails with EXPIRED, never calling W-API."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone=None)
    await health.put("inst-1", InstanceState.DEGRADED, reason="SESSION_INCOMPLETE", phone=None)
    held = await send(deps, "c-exp", hold_for=timedelta(minutes=2))
    assert held.status is SendStatus.HELD
    clock.advance(timedelta(minutes=1))
    waiting = await sweep(deps, POLICY)
    clock.advance(timedelta(minutes=2))
    report = await sweep(deps, POLICY)

    assert waiting.expired == []
    assert report.expired == ["c-exp"]
    assert report.to_release == []
    assert wapi_simulator.calls() == []
    published = [
        SendOutcome.model_validate_json(data)
        for data in await stored(subjects.STREAM_SEND, subjects.send_outcome_subject("c-exp"))
    ]
    assert [outcome.status for outcome in published] == [SendStatus.HELD, SendStatus.FAILED]
    assert published[-1].error is not None
    assert published[-1].error.code == ErrorCode.EXPIRED.value


async def test_sweep_releases_held_commands_of_an_instance_health_reports_connected(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """A held command whose recovery event was missed (e.g. a restart) is released by the sweep."""
    wapi_simulator.add_instance("inst-1", "tok-sender-test", phone="5511999990000")
    await health.put("inst-1", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    await send(deps, "c-rel", hold_for=timedelta(minutes=5))
    await health.put("inst-1", InstanceState.CONNECTED)
    report = await sweep(deps, POLICY)

    assert report.to_release == [("inst-1", "c-rel")]
