"""Simulator behaviours over real HTTP: sessions, restarts, webhooks posted (or never)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import JsonValue, SecretStr

from zapgate.wapi import (
    InstanceCredentials,
    InstanceDetails,
    InstanceStatus,
    SendAccepted,
    WapiClient,
    WebhookSlot,
)
from zapgate.wapi.simulator import (
    DeliveryMode,
    RestartMode,
    Simulator,
    SimulatorServer,
    WebhookRecord,
    payloads,
)
from zapgate.wapi.simulator.receiver import WebhookReceiver

pytestmark = pytest.mark.real

INSTANCE = "SIM002-CCCCCC-DDDDDD"
TOKEN = "tok-sim-2"
PHONE = "5511977776666"
CREDS = InstanceCredentials(instance_id=INSTANCE, token=SecretStr(TOKEN))
CHAT = "5511912345678"


def body_of(record: WebhookRecord) -> dict[str, JsonValue]:
    assert isinstance(record.body, dict), record.body
    return record.body


@pytest.fixture
def sim(wapi_simulator: Simulator, wapi_webhook_receiver: WebhookReceiver) -> Simulator:
    wapi_simulator.add_instance(
        INSTANCE, TOKEN, phone=PHONE, lid="99887766@lid", webhook_url=wapi_webhook_receiver.url
    )
    return wapi_simulator


async def test_accepted_send_posts_echo_then_server_delivery_read(
    sim: Simulator, wapi_client: WapiClient, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """A send on a complete session posts webhookDelivery, then SERVER, DELIVERY, READ."""
    sent = await wapi_client.send_text(CREDS, CHAT, "Olá")
    assert isinstance(sent, SendAccepted)
    statuses = await sim.wait_for_webhooks(event="webhookStatus", count=3)
    assert [body_of(record)["status"] for record in statuses] == ["SERVER", "DELIVERY", "READ"]
    (echo,) = sim.webhooks(event="webhookDelivery")
    assert isinstance(echo.body, dict)
    assert echo.body["messageId"] == sent.message_id
    assert (echo.body["fromMe"], echo.body["fromApi"]) == (True, True)
    assert echo.body["connectedPhone"] == PHONE
    assert echo.body["chat"] == {"id": CHAT}
    assert echo.body["msgContent"] == {"conversation": "Olá"}
    assert all(record.status_code == 200 for record in [echo, *statuses])
    assert len(wapi_webhook_receiver.bodies) == 4


async def test_echo_only_delivery_never_reports_a_status(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """ECHO_ONLY: the send is accepted and echoed, and no status webhook ever follows."""
    sim.set_delivery(INSTANCE, DeliveryMode.ECHO_ONLY)
    assert isinstance(await wapi_client.send_text(CREDS, CHAT, "Olá"), SendAccepted)
    await sim.wait_for_webhooks(event="webhookDelivery")
    await sim.settle()
    assert sim.webhooks(event="webhookStatus") == []


async def test_incomplete_session_accepts_sends_but_stays_waiting(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """Connected without phone: sends get a messageId but no status, echo has no phone."""
    sim.set_phone(INSTANCE, None)
    assert isinstance(await wapi_client.send_text(CREDS, CHAT, "Olá"), SendAccepted)
    await sim.settle()
    (echo,) = sim.webhooks()
    assert echo.event == "webhookDelivery"
    assert "connectedPhone" not in body_of(echo)


async def test_silent_delivery_posts_nothing(sim: Simulator, wapi_client: WapiClient) -> None:
    """SILENT: accepted with a messageId, and not a single webhook."""
    sim.set_delivery(INSTANCE, DeliveryMode.SILENT)
    assert isinstance(await wapi_client.send_text(CREDS, CHAT, "Olá"), SendAccepted)
    await sim.settle()
    assert sim.webhooks() == []


async def test_restart_comes_back_and_posts_disconnected_then_connected(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """A restart drops the session and brings it back, posting both webhooks in order."""
    await wapi_client.restart(CREDS)
    disconnected, connected = await sim.wait_for_webhooks(
        slot=None, where={"instanceId": INSTANCE}, count=2
    )
    assert disconnected.body == {
        "event": "webhookDisconnected",
        "instanceId": INSTANCE,
        "disconnected": True,
        "moment": body_of(disconnected)["moment"],
    }
    assert connected.event == "webhookConnected"
    assert body_of(connected)["connectedPhone"] == PHONE
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)


async def test_restart_that_never_comes_back_stays_disconnected(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """RestartMode.NEVER: disconnected webhook, no connected webhook, status false."""
    sim.set_restart(INSTANCE, RestartMode.NEVER)
    await wapi_client.restart(CREDS)
    await sim.settle()
    assert [record.event for record in sim.webhooks()] == ["webhookDisconnected"]
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=False)


async def test_manual_restart_comes_back_when_the_test_says_so(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """RestartMode.MANUAL: the session returns on complete_restart, not before."""
    sim.set_restart(INSTANCE, RestartMode.MANUAL)
    await wapi_client.restart(CREDS)
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=False)
    sim.complete_restart(INSTANCE)
    await sim.wait_for_webhooks(event="webhookConnected")
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)


async def test_delayed_comeback_is_waited_for_not_slept_on(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """A comeback after a short delay is observed by waiting for its webhook."""
    sim.set_restart(INSTANCE, RestartMode.COMEBACK, delay_s=0.05)
    await wapi_client.restart(CREDS)
    assert sim.is_connected(INSTANCE) is False
    await sim.wait_for_webhooks(event="webhookConnected", timeout=2)
    assert sim.is_connected(INSTANCE) is True


async def test_connecting_without_phone_posts_connected_without_phone(sim: Simulator) -> None:
    """webhookConnected carries connectedPhone only when the phone is known."""
    sim.set_connected(INSTANCE, connected=False)
    sim.set_phone(INSTANCE, None)
    sim.set_connected(INSTANCE, connected=True)
    (connected,) = await sim.wait_for_webhooks(event="webhookConnected")
    assert isinstance(connected.body, dict)
    assert "connectedPhone" not in connected.body
    assert connected.body["connected"] is True


async def test_duplicate_webhooks_are_posted_twice(
    sim: Simulator, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """post_webhook(times=2) resends the identical body, like the provider does."""
    body = payloads.message_status(
        instance_id=INSTANCE, message_id="3EB0AA", status="READ", chat_id=CHAT
    )
    records = await sim.post_webhook(INSTANCE, WebhookSlot.MESSAGE_STATUS, body, times=2)
    assert len(records) == 2
    assert wapi_webhook_receiver.bodies == [body, body]


async def test_presence_has_exactly_the_six_event_less_keys(sim: Simulator) -> None:
    """The presence shape has no event and exactly six keys."""
    record = await sim.emit_presence(INSTANCE, CHAT, "COMPOSING")
    assert isinstance(record.body, dict)
    assert set(record.body) == {
        "instanceId",
        "connectedPhone",
        "connectedLid",
        "chat",
        "status",
        "moment",
    }
    assert record.event is None


async def test_received_text_carries_instance_context(
    sim: Simulator, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """receive() posts webhookReceived with connectedPhone and msgContent.conversation."""
    record = await sim.receive(INSTANCE, payloads.text_content("oi"), chat_id=CHAT)
    assert wapi_webhook_receiver.bodies == [record.body]
    assert isinstance(record.body, dict)
    assert record.body["connectedPhone"] == PHONE
    assert record.body["msgContent"] == {"conversation": "oi"}
    assert record.body["isGroup"] is False


async def test_raw_unknown_bodies_are_posted_as_is(
    sim: Simulator, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """Any JSON body can be posted to a slot, for shapes we have not seen yet."""
    await sim.post_webhook(INSTANCE, WebhookSlot.RECEIVED, {"event": "webhookNovo", "x": [1]})
    assert wapi_webhook_receiver.bodies == [{"event": "webhookNovo", "x": [1]}]


async def test_the_receivers_answer_status_is_recorded(
    sim: Simulator, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """Each posted webhook records the HTTP status the receiver answered."""
    wapi_webhook_receiver.status_code = 500
    record = await sim.emit_status(INSTANCE, "3EB0BB", "DELIVERY", chat_id=CHAT)
    assert record.status_code == 500


async def test_posting_to_a_slot_without_url_is_refused(wapi_simulator: Simulator) -> None:
    """Triggering a webhook on a slot with no URL raises instead of silently dropping it."""
    wapi_simulator.add_instance(INSTANCE, TOKEN, phone=PHONE)
    with pytest.raises(LookupError):
        await wapi_simulator.emit_presence(INSTANCE, CHAT, "AVAILABLE")


async def test_webhook_urls_set_through_the_api_receive_posts(
    wapi_simulator: Simulator, wapi_client: WapiClient, wapi_webhook_receiver: WebhookReceiver
) -> None:
    """URLs configured by the real update-webhook calls are where webhooks go."""
    wapi_simulator.add_instance(INSTANCE, TOKEN, phone=PHONE)
    await wapi_client.configure_webhooks(CREDS, wapi_webhook_receiver.url)
    await wapi_client.disconnect(CREDS)
    (record,) = await wapi_simulator.wait_for_webhooks(event="webhookDisconnected")
    assert record.url == wapi_webhook_receiver.url


async def test_call_log_proves_the_provider_was_not_called(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """The call log is empty until a call, records it, and clears on demand."""
    assert sim.calls() == []
    await wapi_client.device(CREDS)
    (call,) = await sim.wait_for_calls(operation="device", instance_id=INSTANCE)
    assert (call.method, call.path, call.body) == ("GET", "/v1/instance/device", None)
    sim.clear_records()
    assert sim.calls() == []


async def test_messages_sent_counts_this_instances_sends_since_the_records_cleared(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """fetch-instance's messagesSent: sends to this instance only (not another's, not its
    reads), counted again from zero after the call records are cleared."""
    other = InstanceCredentials(instance_id="SIM002-OTHER", token=SecretStr("tok-other"))
    sim.add_instance(other.instance_id, "tok-other", phone="5511900000002")
    for _ in range(2):
        assert isinstance(await wapi_client.send_text(CREDS, CHAT, "Olá"), SendAccepted)
    assert isinstance(await wapi_client.send_text(other, CHAT, "Olá"), SendAccepted)
    await wapi_client.status_instance(CREDS)

    async def sent(credentials: InstanceCredentials) -> object:
        details = await wapi_client.fetch_instance(credentials)
        assert isinstance(details, InstanceDetails), details
        return details.raw["messagesSent"]

    assert (await sent(CREDS), await sent(other)) == (2, 1)
    await sim.settle()
    sim.clear_records()
    assert (await sent(CREDS), await sent(other)) == (0, 0)
    assert isinstance(await wapi_client.send_text(other, CHAT, "Olá"), SendAccepted)
    assert (await sent(CREDS), await sent(other)) == (0, 1)


async def test_waiting_for_calls_that_never_come_times_out(sim: Simulator) -> None:
    """wait_for_calls raises TimeoutError naming what it waited for."""
    with pytest.raises(TimeoutError, match="send-text"):
        await sim.wait_for_calls(operation="send-text", timeout=0.05)


async def test_reset_forgets_instances_and_records(sim: Simulator, wapi_client: WapiClient) -> None:
    """After reset the instance is unknown and the log is empty."""
    await wapi_client.status_instance(CREDS)
    sim.reset()
    assert sim.calls() == []
    result = await wapi_client.status_instance(CREDS)
    assert getattr(result, "status_code", None) == 404


@pytest.mark.usefixtures("wapi_simulator")
async def test_http_control_api_drives_a_simulator_from_another_process(
    wapi_simulator_server: SimulatorServer,
    wapi_client: WapiClient,
    wapi_webhook_receiver: WebhookReceiver,
) -> None:
    """/_sim/ adds instances, sets URLs, triggers webhooks and long-polls the call log."""
    async with httpx.AsyncClient(base_url=wapi_simulator_server.url + "/_sim") as control:
        added = await control.post(
            "/instances", json={"instance_id": INSTANCE, "token": TOKEN, "phone": PHONE}
        )
        assert added.status_code == 200
        hook = await control.put(
            f"/instances/{INSTANCE}/webhooks/received", json={"url": wapi_webhook_receiver.url}
        )
        assert hook.status_code == 200
        received = await control.post(
            f"/instances/{INSTANCE}/receive", json={"chat_id": CHAT, "text": "oi"}
        )
        assert received.json()["status_code"] == 200
        await wapi_client.status_instance(CREDS)
        waited = await control.post(
            "/calls/wait", json={"operation": "status-instance", "timeout": 2}
        )
        assert [call["instance_id"] for call in waited.json()] == [INSTANCE]
        timed_out = await control.post("/calls/wait", json={"operation": "x", "timeout": 0.05})
        assert timed_out.status_code == 408
        fault = await control.put(f"/instances/{INSTANCE}/fault", json={"kind": "server_error"})
        assert fault.status_code == 200
        assert getattr(await wapi_client.status_instance(CREDS), "status_code", None) == 500
        unknown = await control.patch("/instances/NOPE", json={"connected": False})
        assert unknown.status_code == 404
    (posted,) = wapi_webhook_receiver.bodies
    assert isinstance(posted, dict)
    assert posted["msgContent"] == {"conversation": "oi"}
