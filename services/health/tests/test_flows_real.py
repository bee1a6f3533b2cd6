"""Every flow over the real nats-server, PostgreSQL and the W-API simulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from zapgate.contracts import subjects
from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    EvidenceSource,
    InstanceState,
    NotificationKind,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import InstanceConnected, InstanceDisconnected
from zapgate.health import tables
from zapgate.health.domain import Observation, Seen
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.wapi.simulator.models import FaultKind, RestartMode
from zapgate.wapi.simulator.receiver import WebhookReceiver

from .conftest import Harness

pytestmark = pytest.mark.real

PHONE = "5511999990000"


async def test_a_complete_session_becomes_connected_and_the_transition_is_published(
    harness: Harness,
) -> None:
    """Tick: status-instance + fetch-instance; unknown -> connected, stored and published."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    await harness.publish_tick()  # through the durable tick consumer
    report = await harness.next_tick()
    assert report.checked == 1
    [health] = await service.repository.health("I1")
    assert (health.state, health.phone) == (InstanceState.CONNECTED, PHONE)
    assert health.last_check_at == harness.clock.now()
    ops = [c.operation for c in harness.simulator.calls(instance_id="I1")]
    assert ops == ["status-instance", "fetch-instance"]
    [event] = await harness.changes("I1", 1)
    assert (event.from_state, event.to_state, event.source.value) == (
        InstanceState.UNKNOWN,
        InstanceState.CONNECTED,
        "tick",
    )
    # Second tick, phone fresh: one call only.
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    ops = [c.operation for c in harness.simulator.calls(instance_id="I1")]
    assert ops == ["status-instance", "fetch-instance", "status-instance"]


async def test_connected_without_phone_is_degraded_session_incomplete(harness: Harness) -> None:
    """No phone from fetch-instance nor device: degraded/SESSION_INCOMPLETE, one outage note."""
    service = await harness.start()
    await harness.register(service, "I1", phone=None)
    await service.tick()
    [health] = await service.repository.health("I1")
    assert (health.state, health.reason) == (InstanceState.DEGRADED, "SESSION_INCOMPLETE")
    ops = [c.operation for c in harness.simulator.calls(instance_id="I1")]
    assert ops == ["status-instance", "fetch-instance", "device"]
    [note] = await harness.notifications("I1", 1)
    assert note.kind is NotificationKind.OUTAGE
    assert "número do WhatsApp" in note.text


@pytest.mark.parametrize(
    ("fault", "status_code", "reason"),
    [
        (FaultKind.GATEWAY_TIMEOUT, None, "TIMEOUT_OR_GATEWAY"),
        (FaultKind.BAD_GATEWAY, None, "TIMEOUT_OR_GATEWAY"),
        (FaultKind.NOT_JSON, None, "TIMEOUT_OR_GATEWAY"),
        (FaultKind.REJECT, 401, "CREDENTIALS_REJECTED"),
    ],
)
async def test_provider_failures_degrade_with_their_reason(
    harness: Harness, fault: FaultKind, status_code: int | None, reason: str
) -> None:
    """504/502/HTML: TIMEOUT_OR_GATEWAY; 401: CREDENTIALS_REJECTED (no restart either way)."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    harness.simulator.fail("I1", fault, status_code=status_code)
    await service.tick()
    [health] = await service.repository.health("I1")
    assert (health.state, health.reason) == (InstanceState.DEGRADED, reason)
    assert harness.simulator.calls(operation="restart") == []


async def test_a_disconnected_instance_is_restarted_once_then_not_until_the_cooldown(
    harness: Harness,
) -> None:
    """Restart on the first disconnected tick, none for 30 minutes of ticks, then again."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    [health] = await service.repository.health("I1")
    assert health.state is InstanceState.DISCONNECTED
    assert health.last_restart_attempt_at == harness.clock.now()
    assert len(harness.simulator.calls(operation="restart")) == 1
    for _ in range(5):  # 25 minutes of ticks inside the cooldown
        harness.clock.advance(timedelta(minutes=5))
        with capture_logs() as logs:
            report = await service.tick()
        assert report.checked == 1  # disconnected instances are still checked
        assert any(log.get("why") == "cooldown" for log in logs)
    assert len(harness.simulator.calls(operation="restart")) == 1
    harness.clock.advance(timedelta(minutes=5))  # 30 minutes since the attempt
    await service.tick()
    assert len(harness.simulator.calls(operation="restart")) == 2


async def test_restarts_within_a_tick_run_side_by_side(harness: Harness) -> None:
    """Four disconnected instances whose restart hangs: all four restarts are under way at once."""
    service = await harness.start()
    ids = [f"R{n}" for n in range(4)]
    await harness.register(service, *ids, phone=PHONE, connected=False)
    for instance_id in ids:
        harness.simulator.fail(instance_id, FaultKind.HANG, operations={"restart"})
    tick = asyncio.create_task(service.tick())
    try:
        # One after the other, the first hanging call would keep the other three from starting.
        calls = await harness.simulator.wait_for_calls(operation="restart", count=4, timeout=10)
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    assert sorted(str(call.instance_id) for call in calls) == ids


async def test_one_outage_is_notified_once_across_many_ticks_and_recovery_once(
    harness: Harness,
) -> None:
    """Disconnected for ten ticks: one outage notification; back and settled: one recovered."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    await service.tick()
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    harness.simulator.set_connected("I1", connected=False)
    for _ in range(10):
        harness.clock.advance(timedelta(minutes=5))
        await service.tick()
    harness.simulator.set_connected("I1", connected=True)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [health] = await service.repository.health("I1")
    assert health.state is InstanceState.CONNECTED
    assert health.outage_started_at is not None  # the settle window is still open
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [health] = await service.repository.health("I1")
    assert health.outage_started_at is None
    notes = await harness.notifications("I1", 2)
    assert [n.kind for n in notes] == [
        NotificationKind.OUTAGE,
        NotificationKind.RECOVERED,
    ]
    assert await harness.stored_count(subjects.notification_subject("I1")) == 2
    changes = await harness.changes("I1", 3)
    assert [(c.from_state, c.to_state) for c in changes] == [
        (InstanceState.UNKNOWN, InstanceState.CONNECTED),
        (InstanceState.CONNECTED, InstanceState.DISCONNECTED),
        (InstanceState.DISCONNECTED, InstanceState.CONNECTED),
    ]
    assert await harness.stored_count(subjects.state_changed_subject("I1")) == 3


async def test_proof_of_life_from_ingest_recovers_a_disconnected_instance(
    harness: Harness,
) -> None:
    """A SessionProofOfLife on ZG_HEALTH brings the instance back to connected."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.clock.advance(timedelta(minutes=1))
    proof = SessionProofOfLife(
        instance_id="I1",
        phone=PHONE,
        source_kind="message_received",
        observed_at=harness.clock.now(),
    )
    await harness.js.publish(
        subjects.proof_of_life_subject("I1"),
        proof.model_dump_json().encode(),
        stream=subjects.STREAM_HEALTH,
    )
    changes = await harness.changes("I1", 2)
    assert changes[-1].to_state is InstanceState.CONNECTED
    assert changes[-1].source.value == "proof_of_life"


async def test_a_connected_webhook_without_phone_is_verified_with_fetch_instance(
    harness: Harness,
) -> None:
    """webhookConnected without connectedPhone: fetch-instance is asked, then connected."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.simulator.set_connected("I1", connected=True)
    harness.simulator.clear_records()
    harness.clock.advance(timedelta(minutes=1))
    webhook = InstanceConnected(
        instance_id="I1",
        received_at=harness.clock.now(),
        moment=harness.clock.now(),
        dedupe_key="I1:connected:1",
        raw={"event": "webhookConnected", "connected": True},
    )
    await harness.js.publish(
        subjects.webhook_subject("instance_connected"),
        webhook.model_dump_json().encode(),
        stream=subjects.STREAM_WEBHOOKS,
    )
    changes = await harness.changes("I1", 2)
    assert changes[-1].to_state is InstanceState.CONNECTED
    assert "fetch-instance" in [c.operation for c in harness.simulator.calls(instance_id="I1")]


async def test_a_confirmed_disconnected_webhook_disconnects_and_restarts(
    harness: Harness,
) -> None:
    """webhookDisconnected and the provider agrees: connected -> disconnected, one restart."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    await service.tick()
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    harness.simulator.set_connected("I1", connected=False)
    harness.clock.advance(timedelta(minutes=1))
    webhook = InstanceDisconnected(
        instance_id="I1",
        received_at=harness.clock.now(),
        moment=harness.clock.now(),
        dedupe_key="I1:disconnected:1",
        raw={"event": "webhookDisconnected", "disconnected": True},
    )
    await harness.js.publish(
        subjects.webhook_subject("instance_disconnected"),
        webhook.model_dump_json().encode(),
        stream=subjects.STREAM_WEBHOOKS,
    )
    changes = await harness.changes("I1", 2)
    assert changes[-1].to_state is InstanceState.DISCONNECTED
    await harness.simulator.wait_for_calls(operation="restart", instance_id="I1", timeout=10)


async def test_late_events_are_ignored(harness: Harness) -> None:
    """A disconnected webhook older than the last check changes nothing and restarts nothing."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    await service.tick()
    late = Observation(
        seen=Seen.DISCONNECTED,
        source=EvidenceSource.WEBHOOK,
        observed_at=harness.clock.now() - timedelta(seconds=30),
    )
    harness.clock.advance(timedelta(minutes=1))
    with capture_logs() as logs:
        applied = await service.observe("I1", late)
    assert applied is not None
    assert applied.decision.ignored is not None
    [health] = await service.repository.health("I1")
    assert health.state is InstanceState.CONNECTED
    assert harness.simulator.calls(operation="restart") == []
    assert any(log["event"] == "observation_ignored" and log["why"] == "late" for log in logs)


async def test_a_delivery_stall_degrades_until_the_sender_signals_resumed(
    harness: Harness,
) -> None:
    """DeliverySignalled(stalled) -> degraded/DELIVERY_STALLED; ticks keep it; resumed clears."""
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE)
    await service.tick()
    for signal in (DeliverySignal.STALLED, DeliverySignal.RESUMED):
        harness.clock.advance(timedelta(minutes=1))
        event = DeliverySignalled(instance_id="I1", signal=signal, observed_at=harness.clock.now())
        await harness.js.publish(
            subjects.delivery_signal_subject("I1"),
            event.model_dump_json().encode(),
            stream=subjects.STREAM_HEALTH,
        )
        if signal is DeliverySignal.STALLED:
            changes = await harness.changes("I1", 2)
            assert changes[-1].reason == "DELIVERY_STALLED"
            harness.clock.advance(timedelta(minutes=5))
            await service.tick()  # provider says connected: still stalled
            [health] = await service.repository.health("I1")
            assert health.reason == "DELIVERY_STALLED"
    changes = await harness.changes("I1", 3)
    assert changes[-1].to_state is InstanceState.CONNECTED


async def test_notifications_reach_the_operator_webhook(
    harness: Harness, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """With an operator webhook URL, the outage notification is POSTed there once."""
    url = wapi_webhook_receiver.url
    service = await harness.start(operator_webhook_url=url)
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [body] = wapi_webhook_receiver.bodies
    assert isinstance(body, dict)
    assert (body["kind"], body["instance_id"]) == ("outage", "I1")


async def test_a_message_failing_every_time_is_dead_lettered_and_the_next_one_is_applied(
    harness: Harness,
) -> None:
    """A proof of life whose instance id PostgreSQL refuses (a NUL byte) fails on every
    delivery: after `consumer_max_failures` it is kept in health_dead_letters with its reason
    (and copied to zg.deadletter.health.proof-of-life); the proof behind it is applied."""
    service = await harness.start(
        consumer_max_failures=3, consumer_retry_delay=timedelta(milliseconds=50)
    )
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.clock.advance(timedelta(minutes=1))
    copies = await harness.nc.subscribe("zg.deadletter.health.proof-of-life")
    now = harness.clock.now()
    poison = SessionProofOfLife(
        instance_id="I1\x00", phone=PHONE, source_kind="message_received", observed_at=now
    ).model_dump_json()
    good = SessionProofOfLife(
        instance_id="I1", phone=PHONE, source_kind="message_received", observed_at=now
    )
    # Captured, not rendered: the dev console renders each failure's traceback with its locals.
    with capture_logs():
        for body in (poison, good.model_dump_json()):
            await harness.js.publish(
                subjects.proof_of_life_subject("I1"), body.encode(), stream=subjects.STREAM_HEALTH
            )
        changes = await harness.changes("I1", 2)
        copy = await copies.next_msg(timeout=30)
    engine = create_engine(harness.database_url)
    try:
        [kept] = await SqlDeadLetterStore(engine, tables.dead_letters).list_dead(
            consumer="health-proof-of-life"
        )
    finally:
        await engine.dispose()

    assert (changes[-1].to_state, changes[-1].source.value) == (
        InstanceState.CONNECTED,
        "proof_of_life",
    )
    assert kept.reason_code == "handler_error"
    assert "DataError" in kept.reason
    assert kept.attempts == 3
    assert kept.payload == poison.encode()
    assert kept.subject == subjects.proof_of_life_subject("I1")
    assert copy.data == poison.encode()
    assert copy.headers is not None
    assert copy.headers["Zg-Dead-Letter-Reason"] == "handler_error"
    # The copy says which consumer gave up and after how many failures (a structlog capture
    # cannot see the runtime consumer's logger once an earlier test cached it).
    assert (copy.headers["Zg-Dead-Letter-Consumer"], copy.headers["Zg-Dead-Letter-Attempts"]) == (
        "health-proof-of-life",
        "3",
    )
