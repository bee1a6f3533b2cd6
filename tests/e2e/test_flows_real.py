"""The project's promises, end to end: three service processes, real NATS, PostgreSQL, simulator.

One stack serves the module (see `flow_stack`); each flow uses its own instance ids and waits
on what the services publish (JetStream events, NATS replies, the simulator's call log).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter

from tests.e2e.conftest import check_now, register, unique
from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    EvidenceSource,
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    NotificationKind,
    RemoveInstance,
)
from zapgate.contracts.sending import (
    MessageStatusChanged,
    MessageStuck,
    SendMessage,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import AnyWebhookEvent, WebhookKind
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import query
from zapgate.wapi.simulator import payloads
from zapgate.wapi.simulator.models import DeliveryMode, RestartMode
from zapgate.wapi.webhook_slots import WebhookSlot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

    from tests.e2e.conftest import Stack
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real, pytest.mark.slow]

M = TypeVar("M", bound=BaseModel)
TOKEN = "e2e-instance-token"
CUSTOMER = "5511988887777"
EVENTS: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)


async def next_event(
    subscription: Subscription,
    model: type[M],
    timeout: float,
    where: Callable[[M], bool] = lambda _m: True,
) -> M:
    """The next message that parses as `model` and matches; TimeoutError when none comes."""
    async with asyncio.timeout(timeout):
        while True:
            message = await subscription.next_msg(timeout=None)
            parsed = model.model_validate_json(message.data)
            if where(parsed):
                return parsed


async def none_within(subscription: Subscription, model: type[M], seconds: float) -> list[M]:
    """Everything that arrives in a bounded window (to show that nothing more happens)."""
    seen: list[M] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await subscription.next_msg(timeout=None)
                seen.append(model.model_validate_json(message.data))
    except TimeoutError:
        return seen


def text(instance_id: str, command_id: str | None = None) -> SendMessage:
    return SendMessage(
        command_id=command_id or unique("cmd"),
        instance_id=instance_id,
        phone=CUSTOMER,
        body=TextContent(message="olá do e2e"),
    )


def send_calls(simulator: Simulator, instance_id: str) -> list[Any]:
    return [
        call
        for call in simulator.calls(instance_id=instance_id)
        if call.operation.startswith("send")
    ]


@pytest.fixture
async def nc(flow_stack: Stack, client: Client) -> AsyncIterator[Client]:
    """A NATS client, and afterwards every instance this test registered is removed again."""
    del flow_stack  # the stack must be running
    yield client
    listing = await client.request(subjects.API_HEALTH_LIST, b"{}", timeout=10)
    for item in json.loads(listing.data).get("instances", []):
        command = RemoveInstance(instance_id=item["instance_id"])
        await client.request(
            subjects.API_HEALTH_REMOVE, command.model_dump_json().encode(), timeout=10
        )


async def complete_instance(
    nc: Client, simulator: Simulator, stack: Stack, label: str, **options: Any
) -> str:
    """A registered instance with a complete session, its webhooks pointed at ingest."""
    instance_id = unique(label)
    options.setdefault("phone", "5511900000001")
    simulator.add_instance(instance_id, TOKEN, webhook_url=stack.webhook_url, **options)
    await register(nc, instance_id, TOKEN, managed=options.pop("managed", True))
    return instance_id


async def test_every_webhook_kind_becomes_a_typed_event_and_a_stored_row(
    flow_stack: Stack, nc: Client
) -> None:
    """Each W-API shape POSTed to ingest: one typed event on its kind's subject, one row."""
    shapes = samples.every_shape()
    async with httpx.AsyncClient(timeout=10) as http:
        for name, body in shapes.items():
            response = await http.post(flow_stack.webhook_url, json=body)
            assert response.status_code == 200, (name, response.text)
    # Ingest stores a batch before it publishes that batch's proofs of life, in stream order:
    # a last webhook's proof of life means every earlier one is stored.
    barrier_id = unique("barrier")
    proofs = await nc.subscribe(subjects.proof_of_life_subject(samples.INSTANCE))
    async with httpx.AsyncClient(timeout=10) as http:
        barrier = await http.post(flow_stack.webhook_url, json=samples.received_text(barrier_id))
    key = barrier.json()["dedupe_key"]
    await next_event(proofs, _ProofOfLife, 30, lambda p: p.correlation_id == key)

    js = nc.jetstream()
    subscription = await js.subscribe(
        subjects.WEBHOOKS_ALL, stream=subjects.STREAM_WEBHOOKS, ordered_consumer=True
    )
    events = []
    while (await subscription.consumer_info()).num_pending or subscription.pending_msgs:
        message = await subscription.next_msg(timeout=5)
        event = EVENTS.validate_json(message.data)
        assert message.subject == subjects.webhook_subject(event.kind)
        events.append(event)
    await subscription.unsubscribe()
    assert {event.kind for event in events} == set(WebhookKind)
    rows = await query(flow_stack.database_url, "SELECT kind, dedupe_key FROM webhook_payloads")
    stored = {row.dedupe_key: row.kind for row in rows}
    for event in events:
        assert stored[event.dedupe_key] == event.kind.value
    assert len(rows) == len(shapes) + 1


class _ProofOfLife(BaseModel):
    correlation_id: str | None = None


async def test_a_send_to_a_complete_session_goes_sent_delivered_read(
    flow_stack: Stack, nc: Client, wapi_simulator: Simulator
) -> None:
    """SenderClient gets `sent`; the simulator's receipts through ingest move it to read."""
    instance_id = await complete_instance(
        nc, wapi_simulator, flow_stack, "healthy", delivery=DeliveryMode.PROGRESS
    )
    assert (await check_now(nc, instance_id)).ok
    statuses = await nc.subscribe(subjects.message_status_subject(instance_id))
    outcome = await SenderClient(nc).send(text(instance_id), timeout=30)
    assert outcome.status is SendStatus.SENT, outcome
    seen = []
    while SendStatus.READ not in seen:
        change = await next_event(statuses, MessageStatusChanged, 20)
        assert change.command_id == outcome.command_id
        seen.append(change.to_status)
    assert seen == [SendStatus.DELIVERED, SendStatus.READ]
    assert len(send_calls(wapi_simulator, instance_id)) == 1


async def test_a_send_to_an_incomplete_session_is_blocked_without_a_provider_call(
    flow_stack: Stack, nc: Client, wapi_simulator: Simulator
) -> None:
    """Connected but no phone: `failed` SESSION_INCOMPLETE, and W-API is never asked to send."""
    instance_id = unique("nophone")
    wapi_simulator.add_instance(instance_id, TOKEN, phone=None, webhook_url=flow_stack.webhook_url)
    await register(nc, instance_id, TOKEN)
    await check_now(nc, instance_id)
    outcome = await SenderClient(nc).send(text(instance_id), timeout=30)
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.SESSION_INCOMPLETE
    assert send_calls(wapi_simulator, instance_id) == []


async def test_a_dropped_session_is_restarted_once_notified_once_and_recovers(
    nc: Client, wapi_simulator: Simulator
) -> None:
    """Found on a tick, one restart and one outage notice inside the cooldown, then recovered."""
    instance_id = unique("dropped")
    wapi_simulator.add_instance(
        instance_id, TOKEN, phone="5511900000002", restart_mode=RestartMode.MANUAL
    )
    await register(nc, instance_id, TOKEN)
    states = await nc.subscribe(subjects.state_changed_subject(instance_id))
    notes = await nc.subscribe(subjects.notification_subject(instance_id))
    await next_event(
        states, InstanceStateChanged, 20, lambda e: e.to_state is InstanceState.CONNECTED
    )
    wapi_simulator.set_connected(instance_id, connected=False)

    down = await next_event(
        states, InstanceStateChanged, 20, lambda e: e.to_state is InstanceState.DISCONNECTED
    )
    assert down.source is EvidenceSource.TICK
    outage = await next_event(notes, InstanceNotification, 20)
    assert outage.kind is NotificationKind.OUTAGE
    await wapi_simulator.wait_for_calls(operation="restart", instance_id=instance_id, timeout=20)
    # Several more ticks check it while it is still down, inside the 120 s cooldown.
    checks = len(wapi_simulator.calls(operation="status-instance", instance_id=instance_id))
    await wapi_simulator.wait_for_calls(
        operation="status-instance", instance_id=instance_id, count=checks + 3, timeout=20
    )
    assert len(wapi_simulator.calls(operation="restart", instance_id=instance_id)) == 1

    wapi_simulator.complete_restart(instance_id)
    up = await next_event(
        states, InstanceStateChanged, 20, lambda e: e.to_state is InstanceState.CONNECTED
    )
    assert up.from_state is InstanceState.DISCONNECTED
    recovered = await next_event(notes, InstanceNotification, 20)
    assert recovered.kind is NotificationKind.RECOVERED
    assert len(wapi_simulator.calls(operation="restart", instance_id=instance_id)) == 1
    assert await none_within(notes, InstanceNotification, 2) == []


async def test_a_phantom_disconnect_is_checked_live_and_never_marks_the_session_down(
    flow_stack: Stack, nc: Client, wapi_simulator: Simulator
) -> None:
    """A `disconnected` webhook while the phone works: health checks the session live before
    believing it (#13 d), finds it connected, never marks it down and never restarts it."""
    instance_id = unique("phantom")
    wapi_simulator.add_instance(
        instance_id, TOKEN, phone="5511900000003", webhook_url=flow_stack.webhook_url
    )
    await register(nc, instance_id, TOKEN, managed=False)
    states = await nc.subscribe(subjects.state_changed_subject(instance_id))
    await wapi_simulator.post_webhook(
        instance_id, WebhookSlot.DISCONNECTED, payloads.disconnected(instance_id=instance_id)
    )
    checked = await next_event(states, InstanceStateChanged, 20)
    assert (checked.to_state, checked.source) == (InstanceState.CONNECTED, EvidenceSource.WEBHOOK)
    assert wapi_simulator.calls(operation="status-instance", instance_id=instance_id) != []
    assert await none_within(states, InstanceStateChanged, 2) == []
    assert wapi_simulator.calls(operation="restart", instance_id=instance_id) == []


async def test_a_message_stuck_in_sent_alerts_exactly_once(
    flow_stack: Stack, nc: Client, wapi_simulator: Simulator
) -> None:
    """Accepted, never delivered: one MessageStuck after the 2 s window, none on later sweeps."""
    instance_id = await complete_instance(
        nc, wapi_simulator, flow_stack, "stuck", delivery=DeliveryMode.ECHO_ONLY
    )
    await check_now(nc, instance_id)
    alerts = await nc.subscribe(subjects.message_alert_subject(instance_id))
    outcome = await SenderClient(nc).send(text(instance_id), timeout=30)
    assert outcome.status is SendStatus.SENT
    alert = await next_event(alerts, MessageStuck, 20)
    assert alert.command_id == outcome.command_id
    assert await none_within(alerts, MessageStuck, 3) == []


async def test_a_delivery_stall_gates_the_next_send(
    flow_stack: Stack, nc: Client, wapi_simulator: Simulator
) -> None:
    """Three sends never delivered: stalled, and the next send fails with no provider call."""
    instance_id = await complete_instance(
        nc, wapi_simulator, flow_stack, "stall", delivery=DeliveryMode.ECHO_ONLY
    )
    await check_now(nc, instance_id)
    signals = await nc.subscribe(subjects.delivery_signal_subject(instance_id))
    states = await nc.subscribe(subjects.state_changed_subject(instance_id))
    client = SenderClient(nc)
    for _ in range(3):
        assert (await client.send(text(instance_id), timeout=30)).status is SendStatus.SENT
    stalled = await next_event(signals, DeliverySignalled, 30)
    assert stalled.signal is DeliverySignal.STALLED
    await next_event(
        states,
        InstanceStateChanged,
        10,
        lambda e: e.reason == ErrorCode.DELIVERY_STALLED,
    )
    gated = await client.send(text(instance_id), timeout=30)
    assert gated.status is SendStatus.FAILED
    assert gated.error is not None
    assert gated.error.code == ErrorCode.DELIVERY_STALLED
    assert len(send_calls(wapi_simulator, instance_id)) == 3
