"""Simulator features for the truthful-state and console work, over real HTTP: blips, receipts
before a late answer, flapping, provider clock skew, QR and pairing-code reconnection."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import JsonValue, SecretStr

from zapgate.wapi import (
    InstanceCredentials,
    InstanceDetails,
    InstanceStatus,
    PairingCode,
    ProviderRejected,
    ProviderTimeout,
    QrCode,
    SendAccepted,
    WapiClient,
    WapiTimeouts,
    WebhookSlot,
)
from zapgate.wapi.simulator import (
    RestartMode,
    Simulator,
    SimulatorServer,
    WebhookRecord,
    payloads,
)
from zapgate.wapi.simulator.receiver import WebhookReceiver

pytestmark = pytest.mark.real

INSTANCE = "SIM003-EEEEEE-FFFFFF"
TOKEN = "tok-sim-3"
PHONE = "5511966665555"
CREDS = InstanceCredentials(instance_id=INSTANCE, token=SecretStr(TOKEN))
CHAT = "5511912345678"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THREE_HOURS = 3 * 3600


def body_of(record: WebhookRecord) -> dict[str, JsonValue]:
    assert isinstance(record.body, dict), record.body
    return record.body


def moment_of(record: WebhookRecord) -> int:
    moment = body_of(record)["moment"]
    assert isinstance(moment, int)
    return moment


@pytest.fixture
def sim(wapi_simulator: Simulator, wapi_webhook_receiver: WebhookReceiver) -> Simulator:
    wapi_simulator.add_instance(
        INSTANCE,
        TOKEN,
        phone=PHONE,
        webhook_url=wapi_webhook_receiver.url,
        restart_mode=RestartMode.NEVER,
    )
    return wapi_simulator


@pytest.fixture
async def control(wapi_simulator_server: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=wapi_simulator_server.url + "/_sim") as client:
        yield client


# --- blips -----------------------------------------------------------------------------------


async def test_a_blip_closes_the_connection_once_without_answering(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """The DISCONNECT fault ends the exchange with no status line; the next call is answered."""
    sim.blip(INSTANCE, operations={"status-instance"})
    url = wapi_simulator_server.base_url + "/instance/status-instance"
    query = {"instanceId": INSTANCE}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as raw:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            await raw.get(url, params=query, headers=headers)
        answered = await raw.get(url, params=query, headers=headers)
    assert answered.json() == {"instanceId": INSTANCE, "connected": True}
    assert len(sim.calls(operation="status-instance")) == 2


# --- receipts before a late answer -------------------------------------------------------------


async def test_receipts_are_posted_before_a_held_send_is_answered(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """With receipts first and the answer held, the echo and every status arrive while the
    send call is still waiting; released, it answers with the receipts' messageId."""
    sim.set_send_timing(INSTANCE, receipts_before_answer=True, hold=True)
    sending = asyncio.create_task(wapi_client.send_text(CREDS, CHAT, "Olá"))
    receipts = await sim.wait_for_webhooks(event="webhookStatus", count=3)
    assert not sending.done()
    assert sim.state(INSTANCE).held_answers == 1
    assert sim.release_answers(INSTANCE) == 1
    sent = await asyncio.wait_for(sending, 5)
    assert isinstance(sent, SendAccepted)
    (echo,) = sim.webhooks(event="webhookDelivery")
    assert {body_of(r)["messageId"] for r in [echo, *receipts]} == {sent.message_id}
    assert [body_of(r)["status"] for r in receipts] == ["SERVER", "DELIVERY", "READ"]


async def test_a_late_answer_comes_its_delay_after_the_receipts(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """`answer_delay_s` separates the last receipt from the answer by at least that long."""
    sim.set_send_timing(INSTANCE, receipts_before_answer=True, answer_delay_s=0.3)
    sent = await wapi_client.send_text(CREDS, CHAT, "Olá")
    answered_at = time.time()
    assert isinstance(sent, SendAccepted)
    last = sim.webhooks(event="webhookStatus")[-1]
    assert body_of(last)["messageId"] == sent.message_id
    assert answered_at - last.at >= 0.3


async def test_a_held_send_the_client_gave_up_on_still_went_out(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """The client times out (uncertain), yet the echo proves the message was sent."""
    sim.set_send_timing(INSTANCE, receipts_before_answer=True, hold=True)
    timeout = WapiTimeouts(connect=1.0, pool=1.0, read=0.3, total=5.0)
    async with WapiClient(base_url=wapi_simulator_server.base_url, timeout=timeout) as client:
        result = await client.send_text(CREDS, CHAT, "Olá")
    assert isinstance(result, ProviderTimeout)
    assert result.uncertain
    assert len(sim.webhooks(event="webhookDelivery")) == 1


# --- flapping --------------------------------------------------------------------------------


async def test_flapping_alternates_disconnected_and_connected_webhooks(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """`flap(pairs=3)` posts three disconnected/connected pairs in order and ends connected."""
    sim.flap(INSTANCE, pairs=3)
    await sim.wait_for_webhooks(event="webhookConnected", count=3)
    await sim.settle()
    events = [record.event for record in sim.webhooks()]
    assert events == ["webhookDisconnected", "webhookConnected"] * 3
    assert all(
        body_of(r).get("connectedPhone") == PHONE for r in sim.webhooks(event="webhookConnected")
    )
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)
    assert sim.state(INSTANCE).flapping is False


async def test_a_new_flap_replaces_a_running_one_and_zero_pairs_stops_it(
    sim: Simulator, control: httpx.AsyncClient
) -> None:
    """Over /_sim: a long flap is stopped by `pairs: 0` and leaves no job behind."""
    started = await control.post(
        f"/instances/{INSTANCE}/flap", json={"pairs": 50, "interval_s": 30}
    )
    assert started.status_code == 200
    await sim.wait_for_webhooks(event="webhookDisconnected")
    assert (await control.get(f"/instances/{INSTANCE}")).json()["flapping"] is True
    stopped = await control.post(f"/instances/{INSTANCE}/flap", json={"pairs": 0})
    assert stopped.status_code == 200
    await sim.settle()
    state = (await control.get(f"/instances/{INSTANCE}")).json()
    assert (state["flapping"], state["connected"]) == (False, False)


# --- provider clock skew ---------------------------------------------------------------------


async def test_clock_skew_moves_the_moment_of_every_built_webhook(sim: Simulator) -> None:
    """Three hours ahead: received, status, presence and connection webhooks all carry a
    `moment` about 10,800 s in the future; a raw post keeps the body as given."""
    sim.set_clock_skew(INSTANCE, THREE_HOURS)
    now = int(time.time())
    built = [
        await sim.receive(INSTANCE, payloads.text_content("oi"), chat_id=CHAT),
        await sim.emit_status(INSTANCE, "MSG1", "DELIVERY", chat_id=CHAT),
        await sim.emit_presence(INSTANCE, CHAT, "COMPOSING"),
    ]
    sim.set_connected(INSTANCE, connected=False)
    built += await sim.wait_for_webhooks(event="webhookDisconnected")
    later = int(time.time())
    assert all(now + THREE_HOURS <= moment_of(r) <= later + THREE_HOURS + 1 for r in built)
    (raw,) = await sim.post_webhook(INSTANCE, WebhookSlot.RECEIVED, {"moment": 5})
    assert body_of(raw) == {"moment": 5}


async def test_clock_skew_behind_and_over_the_control_api(
    sim: Simulator, control: httpx.AsyncClient
) -> None:
    """A negative skew puts `moment` in the past; PATCH sets it from another process."""
    patched = await control.patch(f"/instances/{INSTANCE}", json={"moment_offset_s": -7200})
    assert patched.status_code == 200
    now = int(time.time())
    record = await sim.emit_status(INSTANCE, "MSG2", "READ", chat_id=CHAT)
    assert now - 7200 - 1 <= moment_of(record) <= int(time.time()) - 7200 + 1


# --- QR code ---------------------------------------------------------------------------------


def _png(qr: QrCode) -> bytes:
    assert qr.qrcode is not None
    prefix = "data:image/png;base64,"
    assert qr.qrcode.startswith(prefix)
    return base64.b64decode(qr.qrcode.removeprefix(prefix))


async def test_the_qr_code_changes_over_time_until_scanned_then_the_session_connects(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """A dropped session serves real PNG QR codes that rotate; scanning connects it with its
    phone (webhookConnected), after which `qr-code` answers connected."""
    sim.set_connected(INSTANCE, connected=False)
    sim.set_qr(INSTANCE, rotate_s=0)
    with pytest.raises(ValueError, match="no QR code"):
        sim.scan_qr(INSTANCE)
    first, second = await wapi_client.qr_code(CREDS), await wapi_client.qr_code(CREDS)
    assert isinstance(first, QrCode)
    assert isinstance(second, QrCode)
    assert _png(first).startswith(PNG_SIGNATURE)
    assert _png(first) != _png(second)
    sim.scan_qr(INSTANCE)
    (connected,) = await sim.wait_for_webhooks(event="webhookConnected")
    assert body_of(connected)["connectedPhone"] == PHONE
    assert await wapi_client.qr_code(CREDS) == QrCode(qrcode=None, connected=True)
    assert sim.state(INSTANCE).qr_codes_served == 0


async def test_a_qr_code_stays_the_same_within_its_rotation_period(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """With a long rotation period two calls in a row get the same code."""
    sim.set_connected(INSTANCE, connected=False)
    sim.set_qr(INSTANCE, rotate_s=3600)
    assert await wapi_client.qr_code(CREDS) == await wapi_client.qr_code(CREDS)
    assert sim.state(INSTANCE).qr_codes_served == 2


async def test_a_served_qr_code_is_scanned_after_the_configured_while(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """`scan_after_s`: the session connects that long after its first QR, untouched."""
    sim.set_connected(INSTANCE, connected=False)
    sim.set_qr(INSTANCE, scan_after_s=0.05)
    assert isinstance(await wapi_client.qr_code(CREDS), QrCode)
    await sim.wait_for_webhooks(event="webhookConnected")
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)


async def test_scan_qr_over_the_control_api_with_another_phone(
    sim: Simulator, wapi_client: WapiClient, control: httpx.AsyncClient
) -> None:
    """POST scan-qr connects with the phone given; before any QR it is refused (422)."""
    sim.set_connected(INSTANCE, connected=False)
    refused = await control.post(f"/instances/{INSTANCE}/scan-qr", json={})
    assert refused.status_code == 422
    await wapi_client.qr_code(CREDS)
    scanned = await control.post(f"/instances/{INSTANCE}/scan-qr", json={"phone": "5511900001111"})
    assert scanned.status_code == 200
    details = await wapi_client.fetch_instance(CREDS)
    assert isinstance(details, InstanceDetails)
    assert (details.connected, details.connected_phone) == (True, "5511900001111")


# --- pairing code ----------------------------------------------------------------------------


async def test_a_pairing_code_connects_the_session_with_its_phone_once_entered(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """`pairing-code?phoneNumber=` gives an 8-character code; entering it (a wrong code is
    refused) connects the session with that number and posts webhookConnected."""
    sim.set_connected(INSTANCE, connected=False)
    issued = await wapi_client.pairing_code(CREDS, "+55 (11) 95555-4444")
    assert isinstance(issued, PairingCode)
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", issued.code)
    assert sim.state(INSTANCE).pairing_code == issued.code
    with pytest.raises(ValueError, match="not the one issued"):
        sim.enter_pairing_code(INSTANCE, "AAAA-AAAA" if issued.code != "AAAA-AAAA" else "BBBB-BBBB")
    assert sim.is_connected(INSTANCE) is False
    sim.enter_pairing_code(INSTANCE, issued.code.lower().replace("-", ""))
    (connected,) = await sim.wait_for_webhooks(event="webhookConnected")
    assert body_of(connected)["connectedPhone"] == "5511955554444"
    assert sim.state(INSTANCE).pairing_code is None


async def test_a_pairing_code_is_entered_after_the_configured_while(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """`enter_after_s`: the code is entered on its own and the session comes back."""
    sim.set_connected(INSTANCE, connected=False)
    sim.set_pairing(INSTANCE, enter_after_s=0.05)
    assert isinstance(await wapi_client.pairing_code(CREDS, "5511955554444"), PairingCode)
    await sim.wait_for_webhooks(event="webhookConnected")
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)


async def test_pairing_code_errors_and_control_api(
    sim: Simulator, wapi_client: WapiClient, control: httpx.AsyncClient
) -> None:
    """A missing number is refused; a code for a connected session cannot be entered; over
    /_sim the code of a dropped session is entered."""
    assert isinstance(await wapi_client.pairing_code(CREDS, "5511955554444"), PairingCode)
    with pytest.raises(ValueError, match="already connected"):
        sim.enter_pairing_code(INSTANCE)
    sim.set_connected(INSTANCE, connected=False)
    assert isinstance(await wapi_client.pairing_code(CREDS, "sem número"), ProviderRejected)
    nothing = await control.post(f"/instances/{INSTANCE}/enter-pairing-code", json={})
    assert nothing.status_code == 422
    issued = await wapi_client.pairing_code(CREDS, "5511955554444")
    assert isinstance(issued, PairingCode)
    state = (await control.get(f"/instances/{INSTANCE}")).json()
    assert state["pairing_code"] == issued.code
    entered = await control.post(
        f"/instances/{INSTANCE}/enter-pairing-code", json={"code": issued.code}
    )
    assert entered.status_code == 200
    await sim.wait_for_webhooks(event="webhookConnected")
    assert sim.is_connected(INSTANCE) is True


async def test_release_answers_over_the_control_api(
    sim: Simulator, wapi_client: WapiClient, control: httpx.AsyncClient
) -> None:
    """PATCH sets the send timing; POST release-answers answers the held send."""
    patched = await control.patch(
        f"/instances/{INSTANCE}", json={"receipts_before_answer": True, "hold_send_answers": True}
    )
    assert patched.status_code == 200
    sending = asyncio.create_task(wapi_client.send_text(CREDS, CHAT, "Olá"))
    await sim.wait_for_webhooks(event="webhookStatus", count=3)
    released = await control.post("/release-answers")
    assert released.json() == {"released": 1}
    assert isinstance(await asyncio.wait_for(sending, 5), SendAccepted)
