"""The adapter against the simulator over real HTTP: every call and every error shape."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from zapgate.wapi import (
    Acknowledged,
    DeviceInfo,
    InstanceCredentials,
    InstanceDetails,
    InstanceStatus,
    PairingCode,
    ProviderBadResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
    QrCode,
    Reachable,
    SendAccepted,
    WapiClient,
    WapiLimits,
    WapiMetrics,
    WapiTimeouts,
    WebhookLogs,
    WebhooksConfigured,
    WebhookSlot,
)
from zapgate.wapi.simulator import FaultKind, RestartMode, Simulator, SimulatorServer
from zapgate.wapi.simulator.payloads import PHONE_REQUIRED_MESSAGE

pytestmark = pytest.mark.real

INSTANCE = "SIM001-AAAAAA-BBBBBB"
TOKEN = "tok-very-secret-123"
PHONE = "5511988887777"
CREDS = InstanceCredentials(instance_id=INSTANCE, token=SecretStr(TOKEN))
TO = "5511912345678"
T = TypeVar("T")
PROVIDER_FAILURES = (
    ProviderBadResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
)


def expect(kind: type[T], result: object) -> T:
    """The result, narrowed to `kind`, or a failed assertion showing what came instead."""
    assert isinstance(result, kind), result
    return result


@pytest.fixture
def sim(wapi_simulator: Simulator) -> Simulator:
    wapi_simulator.add_instance(INSTANCE, TOKEN, phone=PHONE, lid="123456789@lid")
    return wapi_simulator


async def test_status_instance_reports_connection_without_phone(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """status-instance answers connected, and the call carries the id and bearer token."""
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)
    (call,) = sim.calls(operation="status-instance")
    assert call.instance_id == INSTANCE
    assert call.method == "GET"


@pytest.mark.usefixtures("sim")
async def test_fetch_instance_returns_the_connected_phone(wapi_client: WapiClient) -> None:
    """fetch-instance exposes connectedPhone, which decides session completeness."""
    details = expect(InstanceDetails, await wapi_client.fetch_instance(CREDS))
    assert details.connected is True
    assert details.connected_phone == PHONE


async def test_incomplete_session_is_connected_but_has_no_phone(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """A connected session without phone: status says connected, fetch and device lack it."""
    sim.set_phone(INSTANCE, None)
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)
    details = expect(InstanceDetails, await wapi_client.fetch_instance(CREDS))
    device = expect(DeviceInfo, await wapi_client.device(CREDS))
    assert details.connected is True
    assert details.connected_phone is None
    assert device.connected_phone is None


@pytest.mark.usefixtures("sim")
async def test_device_returns_phone_lid_and_platform(wapi_client: WapiClient) -> None:
    """device answers the phone, lid, platform and status of the session."""
    device = expect(DeviceInfo, await wapi_client.device(CREDS))
    assert device.connected_phone == PHONE
    assert device.lid == "123456789@lid"
    assert device.status == "connected"
    assert device.is_business is False


async def test_restart_and_disconnect_are_acknowledged_and_drop_the_session(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """restart and disconnect answer error:false with a message and change the session."""
    sim.set_restart(INSTANCE, RestartMode.NEVER)
    restarted = await wapi_client.restart(CREDS)
    assert isinstance(restarted, Acknowledged)
    assert restarted.message
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=False)
    sim.set_connected(INSTANCE, connected=True)
    assert isinstance(await wapi_client.disconnect(CREDS), Acknowledged)
    assert sim.is_connected(INSTANCE) is False


async def test_qr_code_asks_without_image_and_answers_connected_or_a_code(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """qr-code sends image=disable; connected answers connected, disconnected a data URI."""
    assert await wapi_client.qr_code(CREDS) == QrCode(qrcode=None, connected=True)
    sim.set_connected(INSTANCE, connected=False)
    code = await wapi_client.qr_code(CREDS)
    assert isinstance(code, QrCode)
    assert code.qrcode is not None
    assert code.qrcode.startswith("data:image/png;base64,")
    assert sim.calls(operation="qr-code")[0].query["image"] == "disable"


async def test_pairing_code_passes_the_phone_number(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """pairing-code sends phoneNumber and returns the code."""
    result = await wapi_client.pairing_code(CREDS, PHONE)
    assert isinstance(result, PairingCode)
    assert sim.calls(operation="pairing-code")[0].query["phoneNumber"] == PHONE


async def test_update_webhook_sets_one_slot(sim: Simulator, wapi_client: WapiClient) -> None:
    """update-webhook-<slot> is a PUT with {"value": url} and the simulator records the URL."""
    result = await wapi_client.update_webhook(CREDS, WebhookSlot.MESSAGE_STATUS, "http://x/h")
    assert isinstance(result, Acknowledged)
    (call,) = sim.calls(operation="update-webhook-message-status")
    assert (call.method, call.body) == ("PUT", {"value": "http://x/h"})
    assert sim.webhook_urls(INSTANCE) == {WebhookSlot.MESSAGE_STATUS: "http://x/h"}


async def test_configure_webhooks_points_all_six_slots_at_one_url(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """configure_webhooks calls the six update-webhook endpoints."""
    result = await wapi_client.configure_webhooks(CREDS, "http://gw/hook")
    assert result == WebhooksConfigured(url="http://gw/hook", slots=tuple(WebhookSlot))
    assert sim.webhook_urls(INSTANCE) == dict.fromkeys(WebhookSlot, "http://gw/hook")


async def test_configure_webhooks_stops_at_the_first_failure(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """A failed slot ends the configuration and is returned as the failure."""
    sim.fail(INSTANCE, FaultKind.SERVER_ERROR, operations={"update-webhook-delivery"})
    result = await wapi_client.configure_webhooks(CREDS, "http://gw/hook")
    assert isinstance(result, ProviderUnavailable)
    assert result.operation == "update-webhook-delivery"
    assert len(sim.calls()) == 3


async def test_fetch_webhook_logs_is_answered_raw(sim: Simulator, wapi_client: WapiClient) -> None:
    """fetch-webhook-logs passes paging and keeps the answer raw."""
    result = await wapi_client.fetch_webhook_logs(CREDS, per_page=10, page=2)
    assert isinstance(result, WebhookLogs)
    assert sim.calls()[0].query == {"instanceId": INSTANCE, "perPage": "10", "page": "2"}


async def test_send_text_returns_message_id_and_sends_optional_fields(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """send-text answers messageId/insertedId; quoted messageId and delayMessage go along."""
    result = await wapi_client.send_text(
        CREDS, TO, "Olá", quoted_message_id="3EB0QUOTED", delay_message=3
    )
    assert isinstance(result, SendAccepted)
    assert result.message_id.startswith("3EB0")
    assert result.inserted_id
    (call,) = sim.calls(operation="send-text")
    assert call.body == {
        "phone": TO,
        "message": "Olá",
        "messageId": "3EB0QUOTED",
        "delayMessage": 3,
    }


async def test_media_sends_carry_their_url_and_caption(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """send-image, send-audio and send-video post the media field and caption."""
    url = "https://cdn.example/m"
    for result in (
        await wapi_client.send_image(CREDS, TO, url, caption="foto"),
        await wapi_client.send_audio(CREDS, TO, url),
        await wapi_client.send_video(CREDS, TO, url, caption="vídeo", delay_message=1),
    ):
        assert isinstance(result, SendAccepted)
    bodies = [call.body for call in sim.calls()]
    assert bodies == [
        {"phone": TO, "image": url, "caption": "foto"},
        {"phone": TO, "audio": url},
        {"phone": TO, "video": url, "caption": "vídeo", "delayMessage": 1},
    ]


async def test_send_document_sends_extension_and_file_name(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """send-document carries the required extension and the optional fileName."""
    result = await wapi_client.send_document(
        CREDS, f"{TO}-123@g.us", "https://cdn.example/d.pdf", "pdf", file_name="boleto.pdf"
    )
    assert isinstance(result, SendAccepted)
    assert sim.calls()[0].body == {
        "phone": f"{TO}-123@g.us",
        "document": "https://cdn.example/d.pdf",
        "extension": "pdf",
        "fileName": "boleto.pdf",
    }


@pytest.mark.usefixtures("sim")
async def test_missing_phone_is_rejected_with_the_providers_message_verbatim(
    wapi_client: WapiClient,
) -> None:
    """A send without phone is a ProviderRejected carrying the provider's own words."""
    result = await wapi_client.send_text(CREDS, "", "Olá")
    assert isinstance(result, ProviderRejected)
    assert result.message == PHONE_REQUIRED_MESSAGE
    assert (result.code, result.status_code, result.uncertain) == ("PROVIDER_REJECTED", 400, False)


@pytest.mark.usefixtures("sim")
async def test_wrong_token_is_unauthorized(wapi_client: WapiClient) -> None:
    """A wrong bearer token answers 401, typed ProviderUnauthorized."""
    wrong = InstanceCredentials(instance_id=INSTANCE, token=SecretStr("nope"))
    result = await wapi_client.status_instance(wrong)
    assert isinstance(result, ProviderUnauthorized)
    assert (result.code, result.status_code, result.retryable) == (
        "PROVIDER_UNAUTHORIZED",
        401,
        False,
    )


@pytest.mark.usefixtures("sim")
async def test_unknown_instance_is_rejected(wapi_client: WapiClient) -> None:
    """An instance id the provider does not know is rejected with its message."""
    other = InstanceCredentials(instance_id="LITE-000000-000000", token=SecretStr(TOKEN))
    result = await wapi_client.fetch_instance(other)
    assert isinstance(result, ProviderRejected)
    assert result.status_code == 404
    assert result.message == "Instância não encontrada."


async def test_a_4xx_with_error_body_keeps_the_message(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """4xx with {"error": true, "message"} becomes ProviderRejected with that message."""
    sim.fail(INSTANCE, FaultKind.REJECT, status_code=422, message="Número inválido.")
    result = await wapi_client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderRejected)
    assert (result.status_code, result.message) == (422, "Número inválido.")


async def test_a_2xx_with_error_true_is_rejected_not_accepted(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """200 with error:true is a rejection, never a success."""
    sim.fail(INSTANCE, FaultKind.ERROR_BODY, message="Instância em manutenção.")
    result = await wapi_client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderRejected)
    assert (result.status_code, result.message) == (200, "Instância em manutenção.")


async def test_a_500_json_is_unavailable_and_retryable(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """500 with a JSON body is ProviderUnavailable, retryable."""
    sim.fail(INSTANCE, FaultKind.SERVER_ERROR)
    result = await wapi_client.status_instance(CREDS)
    assert isinstance(result, ProviderUnavailable)
    assert (result.code, result.status_code, result.retryable) == (
        "PROVIDER_UNAVAILABLE",
        500,
        True,
    )


@pytest.mark.parametrize(
    ("kind", "status"), [(FaultKind.BAD_GATEWAY, 502), (FaultKind.SERVICE_UNAVAILABLE, 503)]
)
async def test_gateway_html_pages_are_unavailable(
    sim: Simulator, wapi_client: WapiClient, kind: FaultKind, status: int
) -> None:
    """502/503 HTML gateway pages are ProviderUnavailable with the page title as detail."""
    sim.fail(INSTANCE, kind)
    result = await wapi_client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderUnavailable)
    assert result.status_code == status
    assert "HTML page" in result.detail


async def test_a_504_gateway_timeout_is_an_uncertain_timeout(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """504 means the gateway gave up waiting: the send may have gone out, so it is uncertain."""
    sim.fail(INSTANCE, FaultKind.GATEWAY_TIMEOUT)
    result = await wapi_client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderTimeout)
    assert (result.status_code, result.uncertain, result.retryable) == (504, True, False)


async def test_a_hanging_provider_gives_a_timeout_with_unknown_outcome(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """A provider that never answers ends in ProviderTimeout (uncertain) at the read timeout."""
    sim.fail(INSTANCE, FaultKind.HANG)
    timeout = WapiTimeouts(connect=1.0, pool=1.0, read=0.2, total=5.0)
    async with WapiClient(base_url=wapi_simulator_server.base_url, timeout=timeout) as client:
        result = await client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderTimeout)
    assert (result.code, result.uncertain, result.status_code) == ("PROVIDER_TIMEOUT", True, None)
    assert len(sim.calls(operation="send-text")) == 1


async def test_a_refused_connection_is_unavailable() -> None:
    """Nothing listening on the port: ProviderUnavailable, certainly not sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with WapiClient(base_url=f"http://127.0.0.1:{port}/v1") as client:
        result = await client.send_text(CREDS, TO, "oi")
        ping = await client.ping()
    assert isinstance(result, ProviderUnavailable)
    assert (result.uncertain, result.retryable, result.status_code) == (False, True, None)
    assert isinstance(ping, ProviderUnavailable)


async def test_a_send_answered_without_message_id_is_not_a_success(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """2xx without messageId is ProviderBadResponse: uncertain, never SendAccepted."""
    sim.fail(INSTANCE, FaultKind.NO_MESSAGE_ID)
    result = await wapi_client.send_text(CREDS, TO, "oi")
    assert isinstance(result, ProviderBadResponse)
    assert (result.code, result.uncertain) == ("PROVIDER_BAD_RESPONSE", True)


async def test_a_2xx_html_body_is_a_bad_response(sim: Simulator, wapi_client: WapiClient) -> None:
    """200 with HTML instead of JSON is ProviderBadResponse."""
    sim.fail(INSTANCE, FaultKind.NOT_JSON)
    assert isinstance(await wapi_client.status_instance(CREDS), ProviderBadResponse)


async def test_a_fault_with_times_clears_itself(sim: Simulator, wapi_client: WapiClient) -> None:
    """A fault limited to one time fails the first call and lets the next through."""
    sim.fail(INSTANCE, FaultKind.SERVICE_UNAVAILABLE, times=1)
    assert isinstance(await wapi_client.status_instance(CREDS), ProviderUnavailable)
    assert await wapi_client.status_instance(CREDS) == InstanceStatus(connected=True)


@pytest.mark.usefixtures("sim")
async def test_ping_reaches_the_simulator(wapi_client: WapiClient) -> None:
    """ping() answers Reachable when the provider's HTTP front answers."""
    assert isinstance(await wapi_client.ping(), Reachable)


async def test_the_token_never_appears_in_logs_reprs_or_results(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """Credentials, client, results, failures and log lines never contain the token."""
    wrong = InstanceCredentials(instance_id=INSTANCE, token=SecretStr(TOKEN + "x"))
    with structlog.testing.capture_logs() as logs:
        outcomes = [
            await wapi_client.status_instance(CREDS),
            await wapi_client.send_text(CREDS, TO, "oi"),
            await wapi_client.status_instance(wrong),
        ]
        sim.fail(INSTANCE, FaultKind.SERVER_ERROR)
        outcomes.append(await wapi_client.status_instance(CREDS))
    seen = " ".join([repr(CREDS), str(CREDS), repr(wapi_client), repr(logs), repr(outcomes)])
    assert TOKEN not in seen
    assert {entry["log_level"] for entry in logs} == {"debug", "warning"}
    assert all(
        {"instance_id", "operation", "status_code", "latency_ms", "retried"} <= entry.keys()
        for entry in logs
    )


# --- transport: blips, retries of reads only, bounds, metrics ----------------------------------

READS = ["status-instance", "fetch-instance", "device", "qr-code", "fetch-webhook-logs"]


async def _read(client: WapiClient, operation: str) -> object:
    calls: dict[str, Callable[[InstanceCredentials], Awaitable[object]]] = {
        "status-instance": client.status_instance,
        "fetch-instance": client.fetch_instance,
        "device": client.device,
        "qr-code": client.qr_code,
        "fetch-webhook-logs": client.fetch_webhook_logs,
    }
    return await calls[operation](CREDS)


@pytest.mark.parametrize("operation", READS)
async def test_a_read_whose_connection_drops_once_is_retried_on_a_fresh_connection(
    sim: Simulator, wapi_simulator_server: SimulatorServer, operation: str
) -> None:
    """One "server disconnected" on an idempotent read is a blip: asked again at once, answered."""
    registry = CollectorRegistry()
    async with WapiClient(
        base_url=wapi_simulator_server.base_url,
        timeout=WapiTimeouts(connect=2.0, pool=2.0, read=5.0, total=10.0),
        metrics=WapiMetrics.for_registry(registry),
    ) as client:
        sim.fail(INSTANCE, FaultKind.DISCONNECT, operations={operation}, times=1)
        with structlog.testing.capture_logs() as logs:
            result = await _read(client, operation)
    assert not isinstance(result, PROVIDER_FAILURES), result
    assert len(sim.calls(operation=operation)) == 2
    assert (
        registry.get_sample_value("zapgate_wapi_read_retries_total", {"operation": operation})
        == 1.0
    )
    retried = [entry for entry in logs if entry["event"] == "wapi_call_retried"]
    assert [entry["reason"].split(":")[0] for entry in retried] == ["ServerDisconnectedError"]
    (line,) = [entry for entry in logs if entry["event"] == "wapi_call"]
    assert line["retried"] is True


async def test_a_read_that_drops_twice_fails_after_exactly_two_attempts(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """The retry is one retry: a second drop is an uncertain ProviderTimeout, not a third call."""
    sim.fail(INSTANCE, FaultKind.DISCONNECT, operations={"status-instance"}, times=2)
    result = await wapi_client.status_instance(CREDS)
    assert isinstance(result, ProviderTimeout)
    assert "ServerDisconnectedError" in result.detail
    assert len(sim.calls(operation="status-instance")) == 2


@pytest.mark.parametrize(
    "operation", ["send-text", "restart", "disconnect", "pairing-code", "update-webhook-received"]
)
async def test_a_call_that_is_not_a_read_is_made_once_and_a_drop_is_uncertain(
    sim: Simulator, wapi_client: WapiClient, operation: str
) -> None:
    """Sends, restarts, disconnects, pairing codes: never repeated; a drop is ProviderTimeout."""
    sim.fail(INSTANCE, FaultKind.DISCONNECT, operations={operation}, times=1)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send-text": lambda: wapi_client.send_text(CREDS, TO, "oi"),
        "restart": lambda: wapi_client.restart(CREDS),
        "disconnect": lambda: wapi_client.disconnect(CREDS),
        "pairing-code": lambda: wapi_client.pairing_code(CREDS, PHONE),
        "update-webhook-received": lambda: wapi_client.update_webhook(
            CREDS, WebhookSlot.RECEIVED, "https://example.test/hook"
        ),
    }
    result = await calls[operation]()
    assert isinstance(result, ProviderTimeout)
    assert (result.uncertain, result.retryable) == (True, False)
    assert len(sim.calls(operation=operation)) == 1


async def test_a_dropped_send_did_not_reach_the_session(
    sim: Simulator, wapi_client: WapiClient
) -> None:
    """The blip fault closes before acting: the next send is the only one the provider ran."""
    sim.fail(INSTANCE, FaultKind.DISCONNECT, operations={"send-text"}, times=1)
    assert isinstance(await wapi_client.send_text(CREDS, TO, "oi"), ProviderTimeout)
    assert isinstance(await wapi_client.send_text(CREDS, TO, "oi"), SendAccepted)
    details = expect(InstanceDetails, await wapi_client.fetch_instance(CREDS))
    assert details.raw["messagesSent"] == 2  # both calls reached it; one was answered


async def test_calls_of_one_instance_are_bounded_and_others_pass(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """With one slot per instance, a hung call makes the next one of that instance wait (and
    give up, unsent, at the pool timeout) while another instance's call goes through."""
    other = InstanceCredentials(instance_id="SIM009-OTHER", token=SecretStr("tok-other"))
    sim.add_instance(other.instance_id, "tok-other", phone="5511900000009")
    sim.fail(INSTANCE, FaultKind.HANG, operations={"send-text"})
    async with WapiClient(
        base_url=wapi_simulator_server.base_url,
        timeout=WapiTimeouts(connect=1.0, pool=0.3, read=30.0, total=30.0),
        limits=WapiLimits(per_instance=1),
    ) as client:
        hung = asyncio.create_task(client.send_text(CREDS, TO, "oi"))
        await sim.wait_for_calls(operation="send-text", instance_id=INSTANCE)
        queued = await client.status_instance(CREDS)
        passed = await client.status_instance(other)
        sim.reset()  # releases the hung call
        assert isinstance(await hung, (ProviderTimeout, ProviderUnavailable))
    assert isinstance(queued, ProviderUnavailable)
    assert "no free slot" in queued.detail
    assert passed == InstanceStatus(connected=True)
    assert sim.calls(operation="status-instance") == []  # reset cleared the log
    assert client.instances_in_flight == 0


async def test_the_total_limit_queues_calls_past_the_pool_timeout_and_each_is_sent_once(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """With one call in flight in total, a call of another instance waits its turn in the queue
    (nothing is sent meanwhile, and it does not fail at the pool timeout: the queue has its own,
    longer one), then goes through once the call ahead ends; it reached the provider once."""
    other = InstanceCredentials(instance_id="SIM009-OTHER", token=SecretStr("tok-other"))
    sim.add_instance(other.instance_id, "tok-other", phone="5511900000009")
    sim.set_send_timing(INSTANCE, hold=True)  # its answer waits for release_answers
    async with WapiClient(
        base_url=wapi_simulator_server.base_url,
        timeout=WapiTimeouts(connect=1.0, pool=0.05, read=30.0, total=30.0),
        limits=WapiLimits(total=1),
    ) as client:
        held = asyncio.create_task(client.send_text(CREDS, TO, "oi"))
        await sim.wait_for_calls(operation="send-text", instance_id=INSTANCE)
        waiting = asyncio.create_task(client.send_text(other, TO, "na fila"))
        # Ten times the pool timeout: a call that waited in aiohttp's pool had failed by now
        # (the pool timeout's timer is due first on this loop).
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        queued = client.calls_queued
        unsent = sim.calls(instance_id=other.instance_id)
        sim.release_answers(INSTANCE)  # the call ahead ends, and with it the one slot
        ahead = await held
        waited = await waiting
    assert done == set()
    assert queued == 1
    assert unsent == []
    assert isinstance(ahead, SendAccepted)
    assert isinstance(waited, SendAccepted)
    [call] = sim.calls(instance_id=other.instance_id)
    assert call.body == {"phone": TO, "message": "na fila"}
    assert client.calls_queued == 0
    assert client.instances_in_flight == 0


async def test_a_call_queued_past_the_queue_timeout_is_certainly_unsent(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """The queue for a slot of the total is bounded: past `WapiTimeouts.queue` the call is
    `ProviderUnavailable` (not uncertain, retryable) and never reached the provider."""
    other = InstanceCredentials(instance_id="SIM009-OTHER", token=SecretStr("tok-other"))
    sim.add_instance(other.instance_id, "tok-other", phone="5511900000009")
    sim.set_send_timing(INSTANCE, hold=True)
    async with WapiClient(
        base_url=wapi_simulator_server.base_url,
        timeout=WapiTimeouts(connect=1.0, pool=1.0, queue=0.05, read=30.0, total=30.0),
        limits=WapiLimits(total=1),
    ) as client:
        held = asyncio.create_task(client.send_text(CREDS, TO, "oi"))
        await sim.wait_for_calls(operation="send-text", instance_id=INSTANCE)
        waited = await client.send_text(other, TO, "na fila")
        unsent = sim.calls(instance_id=other.instance_id)
        sim.release_answers(INSTANCE)
        await held
    assert isinstance(waited, ProviderUnavailable)
    assert (waited.uncertain, waited.retryable) == (False, True)
    assert "queued" in waited.detail
    assert unsent == []
    assert client.calls_queued == 0
    assert client.instances_in_flight == 0


async def test_provider_metrics_count_latency_and_failures_by_call_without_ids(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """Every call lands in the latency histogram by operation and outcome; failures by code;
    no label ever carries an instance id, phone or token."""
    registry = CollectorRegistry()
    async with WapiClient(
        base_url=wapi_simulator_server.base_url, metrics=WapiMetrics.for_registry(registry)
    ) as client:
        await client.status_instance(CREDS)
        await client.status_instance(CREDS)
        await client.send_text(CREDS, TO, "oi")
        sim.fail(INSTANCE, FaultKind.SERVICE_UNAVAILABLE, operations={"send-text"}, times=1)
        await client.send_text(CREDS, TO, "oi")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    histogram = "zapgate_wapi_call_duration_seconds_count"
    assert value(histogram, operation="status-instance", outcome="ok") == 2.0
    assert value(histogram, operation="send-text", outcome="ok") == 1.0
    assert value(histogram, operation="send-text", outcome="PROVIDER_UNAVAILABLE") == 1.0
    assert (
        value(
            "zapgate_wapi_call_failures_total", operation="send-text", code="PROVIDER_UNAVAILABLE"
        )
        == 1.0
    )
    assert value("zapgate_wapi_calls_in_flight") == 0.0
    labels = {
        label
        for family in registry.collect()
        for sample in family.samples
        for label in sample.labels.values()
    }
    assert not any(secret in label for label in labels for secret in (INSTANCE, TO, TOKEN))
    assert WapiMetrics.for_registry(registry) is WapiMetrics.for_registry(registry)


def test_a_client_is_built_outside_an_event_loop_and_closes_unused() -> None:
    """Construction opens nothing (services build it in create_app); closing an unused one is
    a no-op."""
    client = WapiClient(base_url="http://127.0.0.1:9/v1")
    asyncio.run(client.aclose())
    assert repr(client) == "WapiClient(base_url='http://127.0.0.1:9/v1')"


async def test_a_handed_in_session_never_repeats_a_restart_silently(
    sim: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """aiohttp would repeat a GET whose pooled connection closed; W-API restarts on GET, so the
    adapter switches that off on any session, its own or a caller's."""
    sim.set_restart(INSTANCE, RestartMode.NEVER)
    async with aiohttp.ClientSession() as session:
        client = WapiClient(base_url=wapi_simulator_server.base_url, session=session)
        assert isinstance(await client.status_instance(CREDS), InstanceStatus)  # pooled now
        sim.blip(INSTANCE, operations={"restart"})
        result = await client.restart(CREDS)
        await client.aclose()
        assert not session.closed
    assert isinstance(result, ProviderTimeout)
    assert len(sim.calls(operation="restart")) == 1
