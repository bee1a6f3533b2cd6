"""Issue 13 (health side), each item over the real nats-server, PostgreSQL and W-API simulator.

Webhook bodies come from `cases/` (copies of the shared failing inputs); they reach health as
ingest publishes them (typed events on ZG_WEBHOOKS, proof of life on ZG_HEALTH).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from zapgate.contracts import subjects
from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    InstanceState,
    NotificationKind,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import (
    DeliveryStatus,
    InstanceConnected,
    InstanceDisconnected,
    MessageStatusReported,
)
from zapgate.health.check import phone_refresh_age
from zapgate.health.service import HealthService
from zapgate.runtime import signing
from zapgate.runtime.db import create_engine
from zapgate.wapi.simulator.models import FaultKind, RestartMode
from zapgate.wapi.simulator.server import BackgroundServer

from .conftest import OPERATOR_SECRET, Harness

pytestmark = pytest.mark.real

CASES = Path(__file__).parent / "cases"
PHONE = "5511999990000"


def case(name: str, **values: int) -> dict[str, Any]:
    text = (CASES / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    body: dict[str, Any] = json.loads(text)
    return body


async def publish_webhook(harness: Harness, event: Any, kind: str) -> None:
    await harness.js.publish(
        subjects.webhook_subject(kind),
        event.model_dump_json().encode(),
        stream=subjects.STREAM_WEBHOOKS,
    )


async def publish_health(harness: Harness, subject: str, event: Any) -> None:
    await harness.js.publish(
        subject, event.model_dump_json().encode(), stream=subjects.STREAM_HEALTH
    )


def disconnected_webhook(harness: Harness, instance_id: str, n: int) -> InstanceDisconnected:
    body = case("flap-disconnected.json", NOW=int(harness.clock.now().timestamp()))
    return InstanceDisconnected(
        instance_id=instance_id,
        received_at=harness.clock.now(),
        moment=datetime.fromtimestamp(body["moment"], UTC),
        dedupe_key=f"{instance_id}:disconnected:{n}",
        raw=body,
    )


def connected_webhook(harness: Harness, instance_id: str, n: int) -> InstanceConnected:
    body = case("flap-connected.json", NOW=int(harness.clock.now().timestamp()))
    return InstanceConnected(
        instance_id=instance_id,
        received_at=harness.clock.now(),
        moment=datetime.fromtimestamp(body["moment"], UTC),
        connected_phone=body["connectedPhone"],
        dedupe_key=f"{instance_id}:connected:{n}",
        raw=body,
    )


async def gate_row(harness: Harness, instance_id: str) -> dict[str, Any]:
    """What the sender sees: the instance_gate_view row."""
    engine = create_engine(harness.database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT * FROM instance_gate_view WHERE instance_id = :i"),
                    {"i": instance_id},
                )
            ).one()
    finally:
        await engine.dispose()
    return dict(row._mapping)


async def connected_instance(harness: Harness, **start: Any) -> HealthService:
    service = await harness.start(**start)
    await harness.register(service, "I1", phone=PHONE)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    [health] = await service.health("I1")
    assert health.state is InstanceState.CONNECTED
    return service


# --- a. provider clock --------------------------------------------------------------------------


async def test_a_webhook_stamped_three_hours_ahead_never_hides_a_later_drop(
    harness: Harness,
) -> None:
    """a: a proof of life with `moment` 3 h ahead (cases/moment-3h-ahead.json) is applied at
    our clock; the silent drop 5 minutes later is found, restarted and notified."""
    service = await harness.start(restart_cooldown=timedelta(minutes=1))
    await harness.register(service, "skew", phone="5511900000014", connected=False)
    harness.simulator.set_restart("skew", RestartMode.NEVER)
    await service.tick()  # disconnected: outage opens
    harness.simulator.set_connected("skew", connected=True)
    harness.clock.advance(timedelta(seconds=30))
    ahead = harness.clock.now() + timedelta(hours=3)
    body = case("moment-3h-ahead.json", NOW_PLUS_3H=int(ahead.timestamp()))
    proof = SessionProofOfLife(  # as ingest builds it today: observed_at = moment
        instance_id=body["instanceId"],
        phone=body["connectedPhone"],
        source_kind="message_received",
        observed_at=datetime.fromtimestamp(body["moment"], UTC),
    )
    await publish_health(harness, subjects.proof_of_life_subject("skew"), proof)
    changes = await harness.changes("skew", 2)
    assert changes[-1].to_state is InstanceState.CONNECTED
    assert changes[-1].observed_at <= harness.clock.now()  # our clock, not the provider's

    harness.simulator.set_connected("skew", connected=False)  # the silent drop
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [health] = await service.health("skew")
    assert health.state is InstanceState.DISCONNECTED
    assert len(harness.simulator.calls(operation="restart", instance_id="skew")) == 2
    assert (await gate_row(harness, "skew"))["state"] == "disconnected"  # sends are gated


async def test_a_webhook_in_the_same_second_as_a_check_is_not_late(harness: Harness) -> None:
    """a: check at hh:mm:ss.600, webhookConnected with `moment` hh:mm:ss received just after:
    applied (whole-second moments no longer order anything)."""
    harness.clock.set(datetime(2025, 3, 1, 12, 0, 0, 600_000, tzinfo=UTC))
    service = await harness.start()
    await harness.register(service, "I1", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.simulator.set_connected("I1", connected=True)
    harness.clock.advance(timedelta(milliseconds=200))
    webhook = connected_webhook(harness, "I1", 1)
    assert webhook.moment is not None
    assert webhook.moment < harness.clock.now() - timedelta(milliseconds=500)
    await publish_webhook(harness, webhook, "instance_connected")
    changes = await harness.changes("I1", 2)
    assert (changes[-1].from_state, changes[-1].to_state) == (
        InstanceState.DISCONNECTED,
        InstanceState.CONNECTED,
    )


# --- b. an outage needs confirmation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status_code"),
    [
        (FaultKind.GATEWAY_TIMEOUT, None),
        (FaultKind.BAD_GATEWAY, None),
        (FaultKind.SERVER_ERROR, None),
        (FaultKind.NOT_JSON, None),
        (FaultKind.REJECT, 401),
    ],
)
async def test_one_failed_status_call_is_a_blip_not_an_outage(
    harness: Harness, fault: FaultKind, status_code: int | None
) -> None:
    """b: one failed check of a connected instance: a confirming check 3 s later finds it good;
    no state change, no notice, no restart; the blip is logged and counted."""
    service = await connected_instance(harness)
    harness.simulator.fail(
        "I1", fault, status_code=status_code, operations={"status-instance"}, times=1
    )
    harness.clock.advance(timedelta(minutes=5))
    with capture_logs() as logs:
        report = await service.tick()
    assert harness.timer.delays == [timedelta(seconds=3)]
    assert (report.transitions, report.blips, report.confirmations) == (0, 1, 1)
    [health] = await service.health("I1")
    assert health.state is InstanceState.CONNECTED
    assert await harness.stored_count(subjects.notification_subject("I1")) == 0
    assert await harness.stored_count(subjects.state_changed_subject("I1")) == 1
    assert harness.simulator.calls(operation="restart") == []
    [blip] = [log for log in logs if log["event"] == "check_blip"]
    assert blip["blips"] == health.blips == 1


async def test_two_failed_checks_three_seconds_apart_are_an_outage(harness: Harness) -> None:
    """b: the confirming check fails too: degraded/TIMEOUT_OR_GATEWAY, one outage notice."""
    service = await connected_instance(harness)
    harness.simulator.fail("I1", FaultKind.GATEWAY_TIMEOUT, operations={"status-instance"}, times=2)
    harness.clock.advance(timedelta(minutes=5))
    report = await service.tick()
    assert report.transitions == 1
    [health] = await service.health("I1")
    assert (health.state, health.reason) == (InstanceState.DEGRADED, "TIMEOUT_OR_GATEWAY")
    [note] = await harness.notifications("I1", 1)
    assert note.kind is NotificationKind.OUTAGE


async def test_the_confirmation_delay_is_configurable(harness: Harness) -> None:
    """b: confirm_delay=PT10S waits 10 s (on the injected clock) before confirming."""
    service = await connected_instance(harness, confirm_delay=timedelta(seconds=10))
    harness.simulator.fail("I1", FaultKind.BAD_GATEWAY, operations={"status-instance"}, times=1)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    assert harness.timer.delays == [timedelta(seconds=10)]


# --- c. episodes, not transitions ---------------------------------------------------------------


async def test_five_flaps_two_seconds_apart_give_one_outage_one_instability_one_recovery(
    harness: Harness,
) -> None:
    """c: cases/flap-*.json posted alternately 2 s apart, 5 times: every state change is
    published (sends follow the truth) but the operator hears 3 notices in all."""
    service = await harness.start()
    await harness.register(service, "demo", phone="5511900000001")
    harness.simulator.set_restart("demo", RestartMode.NEVER)
    await service.tick()
    for n in range(5):
        harness.clock.advance(timedelta(seconds=2))
        harness.simulator.set_connected("demo", connected=False)
        await publish_webhook(
            harness, disconnected_webhook(harness, "demo", n), "instance_disconnected"
        )
        await harness.changes("demo", 2 + 2 * n)
        harness.clock.advance(timedelta(seconds=2))
        harness.simulator.set_connected("demo", connected=True)
        await publish_webhook(harness, connected_webhook(harness, "demo", n), "instance_connected")
        await harness.changes("demo", 3 + 2 * n)
    notes = await harness.notifications("demo", 2)
    assert [n.kind for n in notes] == [NotificationKind.OUTAGE, NotificationKind.UNSTABLE]
    assert "instável" in notes[1].text
    [health] = await service.health("demo")
    assert (health.state, health.episode_flaps, health.unstable) == (
        InstanceState.CONNECTED,
        4,
        True,
    )
    harness.clock.advance(timedelta(minutes=2))
    await service.tick()
    notes = await harness.notifications("demo", 3)
    assert notes[-1].kind is NotificationKind.RECOVERED
    assert notes[-1].flaps == 4
    assert await harness.stored_count(subjects.notification_subject("demo")) == 3
    [health] = await service.health("demo")
    assert (health.outage_started_at, health.episode_flaps, health.unstable) == (None, 0, False)


async def test_a_drop_inside_the_settle_window_continues_the_episode(harness: Harness) -> None:
    """c: back for 1 minute, then down again: no second outage notice, no recovery yet."""
    service = await connected_instance(harness)
    harness.simulator.set_connected("I1", connected=False)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    harness.simulator.set_connected("I1", connected=True)
    harness.clock.advance(timedelta(minutes=1))
    await service.check_now("I1")
    harness.simulator.set_connected("I1", connected=False)
    harness.clock.advance(timedelta(minutes=1))
    await service.check_now("I1")
    assert await harness.stored_count(subjects.notification_subject("I1")) == 1
    assert await harness.stored_count(subjects.state_changed_subject("I1")) == 4


# --- d. check before restart --------------------------------------------------------------------


async def test_a_phantom_disconnect_webhook_is_checked_and_restarts_nothing(
    harness: Harness,
) -> None:
    """d: webhookDisconnected for a fine session: a live check, no change, no restart. A real
    drop reported the same way afterwards is confirmed and restarted once."""
    service = await connected_instance(harness)
    harness.clock.advance(timedelta(minutes=1))
    await publish_webhook(harness, disconnected_webhook(harness, "I1", 1), "instance_disconnected")
    await harness.simulator.wait_for_calls(
        operation="fetch-instance", instance_id="I1", count=2, timeout=10
    )  # the last call of the phantom's live check (the first one was the tick's)
    harness.clock.advance(timedelta(minutes=1))
    harness.simulator.set_connected("I1", connected=False)
    await publish_webhook(harness, disconnected_webhook(harness, "I1", 2), "instance_disconnected")
    # One consumer handles both in order: the second's restart means the first is done.
    await harness.simulator.wait_for_calls(operation="restart", instance_id="I1", timeout=10)
    assert len(harness.simulator.calls(operation="restart")) == 1
    status_checks = harness.simulator.calls(operation="status-instance", instance_id="I1")
    assert len(status_checks) == 3  # the first tick, then one live check per webhook
    changes = await harness.changes("I1", 2)
    assert [(c.from_state, c.to_state) for c in changes] == [
        (InstanceState.UNKNOWN, InstanceState.CONNECTED),
        (InstanceState.CONNECTED, InstanceState.DISCONNECTED),
    ]
    assert await harness.stored_count(subjects.state_changed_subject("I1")) == 2
    [health] = await service.health("I1")
    assert health.state is InstanceState.DISCONNECTED


async def test_a_sender_reported_drop_is_confirmed_before_any_restart(harness: Harness) -> None:
    """d: a reconnect request for a fine session checks it and restarts nothing."""
    service = await connected_instance(harness)
    await service.reconnect_requested("I1", "sender")
    assert harness.simulator.calls(operation="restart") == []


# --- e. unmanaged instances ---------------------------------------------------------------------


async def test_unmanaged_instances_are_checked_every_tick_and_never_restarted(
    harness: Harness,
) -> None:
    """e: an --unmanaged instance is checked on each tick (through the tick consumer) and
    its drop is tracked and notified, but never restarted."""
    service = await harness.start()
    harness.simulator.add_instance("U1", "tok-secret-123", phone=PHONE, connected=False)
    await service.register(
        instance_id="U1", display_name="Loja U1", token="tok-secret-123", managed=False,
        replace=False,
    )  # fmt: skip
    for _ in range(3):
        with capture_logs() as logs:
            await harness.publish_tick()
            report = await harness.next_tick()
        assert report.checked == 1
        assert any(log.get("why") == "not managed" for log in logs)
        harness.clock.advance(timedelta(minutes=5))
    assert len(harness.simulator.calls(operation="status-instance", instance_id="U1")) == 3
    assert harness.simulator.calls(operation="restart") == []
    [health] = await service.health("U1")
    assert health.state is InstanceState.DISCONNECTED
    [note] = await harness.notifications("U1", 1)
    assert note.kind is NotificationKind.OUTAGE


# --- f. operator notices ------------------------------------------------------------------------


@dataclass
class SignedReceiver:
    """Records raw bodies and headers of POSTs; answers `status_codes` in turn, then 200."""

    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status_codes: list[int] = field(default_factory=list)

    def app(self, on_ready: Callable[[], None]) -> Starlette:
        async def hook(request: Request) -> Response:
            self.posts.append((dict(request.headers), await request.body()))
            code = self.status_codes.pop(0) if self.status_codes else 200
            return Response(status_code=code)

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            on_ready()
            yield

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])], lifespan=lifespan)


@pytest.fixture
def receiver() -> Iterator[tuple[SignedReceiver, str]]:
    state = SignedReceiver()
    server = BackgroundServer(state.app)
    server.start()
    try:
        yield state, server.url + "/hook"
    finally:
        server.stop()


async def test_operator_notices_leave_once_signed_and_are_never_replayed(
    harness: Harness, receiver: tuple[SignedReceiver, str]
) -> None:
    """f: notices from before the URL was set never leave; each new one is POSTed exactly once
    even with two replicas flushing at once, signed per Standard Webhooks."""
    state, url = receiver
    quiet = await harness.start()
    await harness.register(quiet, "OLD", phone=PHONE, connected=False)
    harness.simulator.set_restart("OLD", RestartMode.NEVER)
    await quiet.tick()  # an outage notice stored while no URL was configured
    first = await harness.start(operator_webhook_url=url)
    second = await harness.start(operator_webhook_url=url)
    await harness.register(first, "NEW", phone=PHONE, connected=False)
    harness.simulator.set_restart("NEW", RestartMode.NEVER)
    harness.clock.advance(timedelta(minutes=5))
    await asyncio.gather(first.check_now("NEW"), second.flush_outbox(), first.flush_outbox())
    await asyncio.gather(second.flush_outbox(), first.flush_outbox())
    assert len(state.posts) == 1
    headers, body = state.posts[0]
    assert json.loads(body)["instance_id"] == "NEW"
    msg_id = signing.verify([OPERATOR_SECRET], headers=headers, body=body, now=harness.clock.now())
    assert msg_id == json.loads(body)["event_id"] == headers["idempotency-key"]


async def test_a_failed_notice_is_retried_with_backoff_and_a_removed_instance_is_dropped(
    harness: Harness, receiver: tuple[SignedReceiver, str]
) -> None:
    """f: 503 three times: retried in-process (0.5 s, 1 s backoff), then a minute later in a
    new round, same webhook-id; a removed instance's undelivered notice never leaves."""
    state, url = receiver
    state.status_codes = [503, 503, 503]
    service = await harness.start(operator_webhook_url=url)
    await harness.register(service, "I1", phone=PHONE, connected=False)
    await harness.register(service, "GONE", phone=PHONE, connected=False)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    harness.simulator.set_restart("GONE", RestartMode.NEVER)
    await service.check_now("I1")
    assert len(state.posts) == 3
    assert harness.timer.delays == [timedelta(seconds=0.5), timedelta(seconds=1)]
    state.status_codes = [503, 503, 503]
    await service.check_now("GONE")
    await service.remove("GONE")
    harness.clock.advance(timedelta(minutes=1))
    await service.flush_outbox()
    ids = {h["webhook-id"] for h, _ in state.posts}
    assert len(ids) == 2
    bodies = [json.loads(b)["instance_id"] for _, b in state.posts]
    assert bodies.count("I1") == 4  # 3 failed + 1 delivered in the next round
    assert bodies.count("GONE") == 3  # its first round only; never after the removal


# --- h. the stall gate cannot wedge -------------------------------------------------------------


async def _stall(harness: Harness, instance_id: str, count: int) -> None:
    event = DeliverySignalled(
        instance_id=instance_id,
        signal=DeliverySignal.STALLED,
        observed_at=harness.clock.now(),
        message_ids=["m1", "m2", "m3"],
    )
    await publish_health(harness, subjects.delivery_signal_subject(instance_id), event)
    changes = await harness.changes(instance_id, count)
    assert changes[-1].reason == "DELIVERY_STALLED"


async def test_a_stall_is_lifted_by_any_fresh_receipt_for_the_instance(harness: Harness) -> None:
    """h: DELIVERY_STALLED, then a DELIVERY receipt (any message) received later: connected,
    and the sender's view lets sends through again."""
    await connected_instance(harness)
    harness.clock.advance(timedelta(minutes=1))
    await _stall(harness, "I1", 2)
    assert (await gate_row(harness, "I1"))["reason"] == "DELIVERY_STALLED"
    harness.clock.advance(timedelta(minutes=1))
    receipt = MessageStatusReported(
        instance_id="I1",
        received_at=harness.clock.now(),
        moment=harness.clock.now(),
        dedupe_key="I1:status:other:DELIVERY",
        raw={"event": "webhookStatus", "status": "DELIVERY"},
        message_id="some-other-message",
        status=DeliveryStatus.DELIVERED,
        status_raw="DELIVERY",
    )
    await publish_webhook(harness, receipt, "message_status")
    changes = await harness.changes("I1", 3)
    assert changes[-1].to_state is InstanceState.CONNECTED
    row = await gate_row(harness, "I1")
    assert (row["state"], row["reason"]) == ("connected", None)


async def test_a_stall_without_receipts_is_lifted_by_a_live_recheck_after_the_window(
    harness: Harness,
) -> None:
    """h: no receipt ever comes: ticks keep the gate for 10 minutes, then a tick that saw the
    phone again lifts it."""
    service = await connected_instance(harness)
    await _stall(harness, "I1", 2)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    assert (await gate_row(harness, "I1"))["reason"] == "DELIVERY_STALLED"
    harness.simulator.clear_records()
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    ops = [c.operation for c in harness.simulator.calls(instance_id="I1")]
    assert ops == ["status-instance", "fetch-instance"]
    row = await gate_row(harness, "I1")
    assert (row["state"], row["reason"]) == ("connected", None)


# --- k. phone age -------------------------------------------------------------------------------


async def test_a_stale_phone_is_looked_up_again_and_a_session_back_without_it_is_caught(
    harness: Harness,
) -> None:
    """k: status-only ticks keep the phone's age; at the instance's refresh age (within
    phone_max_age) fetch-instance runs again, and a session that reconnected without its phone
    ends degraded/SESSION_INCOMPLETE."""
    service = await connected_instance(harness)
    shown = harness.clock.now()
    refresh = phone_refresh_age("I1", timedelta(hours=1))
    while harness.clock.now() + timedelta(minutes=5) - shown < refresh:  # status-only ticks
        harness.clock.advance(timedelta(minutes=5))
        await service.tick()
    fetches = harness.simulator.calls(operation="fetch-instance", instance_id="I1")
    assert len(fetches) == 1
    harness.simulator.set_phone("I1", None)  # reconnected between ticks without its phone
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [health] = await service.health("I1")
    assert (health.state, health.reason) == (InstanceState.DEGRADED, "SESSION_INCOMPLETE")
    row = await gate_row(harness, "I1")
    assert (row["state"], row["phone"]) == ("degraded", None)
