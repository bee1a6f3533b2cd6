"""The sender's `/metrics` moves when its events happen: the whole app over real NATS,
PostgreSQL and the W-API simulator, read over HTTP on its probe port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from faststream import TestApp
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import SendMessage, SendStatus, TextContent
from zapgate.contracts.webhooks import DeliveryStatus, MessageStatusReported
from zapgate.devservers.postgres import free_port
from zapgate.runtime.topology import sender_command_partition
from zapgate.sender.app import create_app
from zapgate.sender.settings import SenderSettings
from zapgate.testkit.metrics import Exposition, wait_for_value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client

    from zapgate.runtime.clock import ManualClock
    from zapgate.wapi.client import WapiClient
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

TO = "5511988887777"
PHONE = "5511999990000"
Scrape = Callable[[], Awaitable[str]]


def command(command_id: str, instance_id: str = "inst-m") -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id=instance_id,
        phone=TO,
        body=TextContent(message=f"msg {command_id}"),
    )


@pytest.fixture
async def scrape(
    nats_url: str, database_url: str, wapi_client: WapiClient, clock: ManualClock
) -> AsyncIterator[Scrape]:
    """The running sender app; calling the fixture's value scrapes its `/metrics`."""
    port = free_port()
    settings = SenderSettings(
        environment="test",
        nats_url=nats_url,
        database_url=SecretStr(database_url),
        probe_host="127.0.0.1",
        probe_port=port,
        min_send_gap=timedelta(0),
        provider_backoff=timedelta(0),
        sweep_every=None,
    )
    app = create_app(settings, wapi=wapi_client, clock=clock, configure_logs=False)
    async with (
        TestApp(app),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):

        async def read() -> str:
            response = await http.get("/metrics")
            response.raise_for_status()
            return response.text

        yield read


async def test_a_send_counts_its_outcome_its_latency_and_its_provider_call(
    scrape: Scrape, nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """A sent command: sends_total{sent} +1, command-to-outcome count +1, send-text call +1."""
    wapi_simulator.add_instance("inst-m", "tok-sender-test", phone=PHONE)
    await health.put("inst-m", InstanceState.CONNECTED)
    sent = {"outcome": "sent", "code": "none"}
    before = Exposition(await scrape())

    outcome = await SenderClient(nc).send(command("cmd-m-1"), timeout=10)
    after = await wait_for_value(
        scrape,
        "zapgate_sender_sends_total",
        sent,
        at_least=before.value("zapgate_sender_sends_total", sent) + 1,
    )
    now = Exposition(await scrape())

    assert outcome.status is SendStatus.SENT
    assert after == before.value("zapgate_sender_sends_total", sent) + 1
    latency = "zapgate_sender_command_to_outcome_seconds_count"
    assert now.value(latency, {"outcome": "sent"}) == before.value(latency, {"outcome": "sent"}) + 1
    call = {"operation": "send-text", "outcome": "ok"}
    calls = "zapgate_wapi_call_duration_seconds_count"
    assert now.value(calls, call) == before.value(calls, call) + 1


async def test_a_blocked_send_counts_as_failed_with_its_code(
    scrape: Scrape, nc: Client, health: Any, wapi_simulator: Simulator
) -> None:
    """A send refused by preflight (session incomplete) counts under failed/SESSION_INCOMPLETE."""
    wapi_simulator.add_instance("inst-m", "tok-sender-test", phone=PHONE)
    await health.put("inst-m", InstanceState.DEGRADED, reason="SESSION_INCOMPLETE")
    failed = {"outcome": "failed", "code": "SESSION_INCOMPLETE"}
    before = Exposition(await scrape()).value("zapgate_sender_sends_total", failed)

    outcome = await SenderClient(nc).send(command("cmd-m-2"), timeout=10)
    after = await wait_for_value(scrape, "zapgate_sender_sends_total", failed, at_least=before + 1)

    assert outcome.status is SendStatus.FAILED
    assert after == before + 1
    assert wapi_simulator.calls(operation="send-text") == []


async def test_a_delivery_receipt_observes_sent_to_delivered_and_counts_the_move(
    scrape: Scrape, nc: Client, health: Any, wapi_simulator: Simulator, clock: ManualClock
) -> None:
    """DELIVERY 90 s after the send: one sent-to-delivered observation in the 120 s bucket and
    not in the 60 s one; one status change to delivered; one applied receipt."""
    wapi_simulator.add_instance("inst-m", "tok-sender-test", phone=PHONE)
    await health.put("inst-m", InstanceState.CONNECTED)
    outcome = await SenderClient(nc).send(command("cmd-m-3"), timeout=10)
    assert outcome.provider_message_id is not None
    before = Exposition(await scrape())
    clock.advance(timedelta(seconds=90))

    receipt = MessageStatusReported(
        instance_id="inst-m",
        received_at=clock.now(),
        dedupe_key="m-3",
        raw={},
        message_id=outcome.provider_message_id,
        status=DeliveryStatus.DELIVERED,
        status_raw="DELIVERY",
    )
    await nc.jetstream().publish(
        subjects.webhook_subject("message_status"),
        receipt.model_dump_json().encode(),
        stream=subjects.STREAM_WEBHOOKS,
    )
    applied = before.value("zapgate_sender_receipts_total", {"result": "applied"}) + 1
    await wait_for_value(
        scrape, "zapgate_sender_receipts_total", {"result": "applied"}, at_least=applied
    )
    after = Exposition(await scrape())

    def moved(name: str, labels: dict[str, str] | None = None) -> float:
        return after.value(name, labels) - before.value(name, labels)

    histogram = "zapgate_sender_sent_to_delivered_seconds"
    assert moved(f"{histogram}_count") == 1
    assert moved(f"{histogram}_bucket", {"le": "60.0"}) == 0
    assert moved(f"{histogram}_bucket", {"le": "300.0"}) == 1
    assert moved("zapgate_sender_message_status_changes_total", {"to_status": "delivered"}) == 1


async def test_a_sweep_past_the_stuck_window_alerts_and_sets_the_stuck_gauge(
    scrape: Scrape, nc: Client, health: Any, wapi_simulator: Simulator, clock: ManualClock
) -> None:
    """A sent message with no receipt past the stuck window: one alert, gauge >= 1, one sweep."""
    wapi_simulator.add_instance("inst-m", "tok-sender-test", phone=PHONE)
    await health.put("inst-m", InstanceState.CONNECTED)
    await SenderClient(nc).send(command("cmd-m-4"), timeout=10)
    before = Exposition(await scrape())
    alerts = await nc.subscribe(subjects.message_alert_subject("inst-m"))
    clock.advance(timedelta(minutes=11))

    await nc.jetstream().publish(subjects.SENDER_TICK, b"", stream=subjects.STREAM_TICKS)
    await alerts.next_msg(timeout=10)
    sweeps = before.value("zapgate_sender_sweep_duration_seconds_count") + 1
    await wait_for_value(scrape, "zapgate_sender_sweep_duration_seconds_count", at_least=sweeps)
    after = Exposition(await scrape())

    alerted = "zapgate_sender_stuck_alerts_total"
    assert after.value(alerted) == before.value(alerted) + 1
    assert after.value("zapgate_sender_stuck_messages") >= 1


async def test_an_unreadable_command_is_dead_lettered_and_counted(
    scrape: Scrape, nc: Client
) -> None:
    """A command that is not JSON: dead-lettered at once; zapgate_dead_letters_total +1."""
    # Counted under the durable of the instance's partition.
    durable = sender_command_partition("inst-m").durable
    labels = {"consumer": durable, "reason_code": "unreadable_command"}
    before = Exposition(await scrape()).value("zapgate_dead_letters_total", labels)

    await nc.jetstream().publish(
        subjects.send_command_subject("inst-m"), b"not json", stream=subjects.STREAM_SEND
    )
    after = await wait_for_value(scrape, "zapgate_dead_letters_total", labels, at_least=before + 1)

    assert after == before + 1
