"""The send use case over real PostgreSQL, nats-server and the simulator over HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.errors import MESSAGES_PT_BR, ErrorCode
from zapgate.contracts.health import (
    DegradedReason,
    InstanceState,
    ReconnectRequested,
    SessionObserved,
)
from zapgate.contracts.sending import (
    DocumentContent,
    RetrySend,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.sender.lanes import Lanes
from zapgate.sender.service import retry_send, send_message
from zapgate.sender.tables import RowStatus
from zapgate.wapi.simulator.models import FaultKind

if TYPE_CHECKING:
    from zapgate.sender.service import SenderDeps
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

PHONE = "5511999990000"
TO = "5511988887777"
TOKEN = "tok-sender-test"


def command(command_id: str, instance_id: str = "inst-1", **extra: Any) -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id=instance_id,
        phone=TO,
        body=TextContent(message="olá"),
        **extra,
    )


def sim_add(sim: Simulator, instance_id: str = "inst-1", **extra: Any) -> None:
    sim.add_instance(instance_id, TOKEN, **{"phone": PHONE, **extra})


async def test_connected_instance_sends_once_and_stores_a_sent_row(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, stored: Any
) -> None:
    """A connected, complete instance sends; the row and the published outcome say `sent`."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)

    outcome = await send_message(command("c-1"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.error is None
    calls = wapi_simulator.calls(operation="send-text", instance_id="inst-1")
    assert len(calls) == 1
    assert calls[0].body == {"phone": TO, "message": "olá"}
    row = await deps.store.get("c-1")
    assert row is not None
    assert row.status == RowStatus.SENT.value
    assert row.provider_message_id == outcome.provider_message_id
    assert row.sent_at is not None
    assert row.attempts == 1
    published = await stored(subjects.STREAM_SEND, subjects.send_outcome_subject("c-1"))
    assert [SendOutcome.model_validate_json(data).status for data in published] == [SendStatus.SENT]


async def test_document_send_carries_the_required_extension(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """A document goes out with the provider's required `extension` field."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)
    doc = SendMessage(
        command_id="doc-1",
        instance_id="inst-1",
        phone=TO,
        body=DocumentContent(document="https://example.com/a.pdf", extension="pdf"),
    )

    outcome = await send_message(doc, deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    (call,) = wapi_simulator.calls(operation="send-document")
    assert isinstance(call.body, dict)
    assert call.body["extension"] == "pdf"


@pytest.mark.parametrize(
    "reason", [DegradedReason.SESSION_INCOMPLETE, DegradedReason.TIMEOUT_OR_GATEWAY]
)
async def test_degraded_session_is_blocked_with_no_provider_call_and_a_failed_row(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, reason: DegradedReason
) -> None:
    """Degraded instances never reach the provider; the failure carries the reason as code."""
    sim_add(wapi_simulator, phone=None)
    await health.put("inst-1", InstanceState.DEGRADED, reason=reason.value, phone=None)

    outcome = await send_message(command("c-deg"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == reason.value
    assert outcome.error.message == MESSAGES_PT_BR[ErrorCode(reason.value)]
    assert wapi_simulator.calls(instance_id="inst-1") == []
    row = await deps.store.get("c-deg")
    assert row is not None
    assert row.status == RowStatus.FAILED.value
    assert row.error_code == reason.value
    assert row.session_health == f"degraded/{reason.value}"
    assert row.failed_at is not None


async def test_disconnected_instance_that_is_actually_connected_is_sent_and_observed(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, stored: Any
) -> None:
    """The live check finds a complete session: health hears it, and the message goes out."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.DISCONNECTED, phone=None)

    outcome = await send_message(command("c-live"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    operations = [call.operation for call in wapi_simulator.calls(instance_id="inst-1")]
    assert operations == ["status-instance", "fetch-instance", "send-text"]
    (observed,) = [
        SessionObserved.model_validate_json(data)
        for data in await stored(
            subjects.STREAM_HEALTH, subjects.session_observed_subject("inst-1")
        )
    ]
    assert observed.reachable
    assert observed.connected is True
    assert observed.phone == PHONE
    assert (
        await stored(subjects.STREAM_HEALTH, subjects.reconnect_requested_subject("inst-1")) == []
    )


async def test_truly_disconnected_instance_fails_with_the_message_and_asks_for_reconnect(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, stored: Any
) -> None:
    """Disconnected for real: failed/INSTANCE_DISCONNECTED in pt-BR, and a reconnect request."""
    sim_add(wapi_simulator, connected=False)
    await health.put("inst-1", InstanceState.DISCONNECTED, phone=None)

    outcome = await send_message(command("c-down"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.INSTANCE_DISCONNECTED.value
    assert outcome.error.message == "Sessão desconectada. Tentativa de reconexão em andamento."
    assert wapi_simulator.calls(operation="send-text") == []
    (request,) = [
        ReconnectRequested.model_validate_json(data)
        for data in await stored(
            subjects.STREAM_HEALTH, subjects.reconnect_requested_subject("inst-1")
        )
    ]
    assert request.requested_by == "sender"
    row = await deps.store.get("c-down")
    assert row is not None
    assert row.status == RowStatus.FAILED.value


@pytest.mark.parametrize(
    ("put", "code"),
    [
        ({"state": InstanceState.CONNECTED, "paused": True}, ErrorCode.INSTANCE_PAUSED),
        ({"state": InstanceState.UNKNOWN, "checked": False}, ErrorCode.INSTANCE_NOT_CHECKED),
        (None, ErrorCode.INSTANCE_UNKNOWN),
    ],
)
async def test_paused_unchecked_and_unknown_instances_fail_with_their_own_codes(
    deps: SenderDeps,
    health: Any,
    wapi_simulator: Simulator,
    put: dict[str, Any] | None,
    code: ErrorCode,
) -> None:
    """Each kind of not-sendable instance fails at once with its own code, no provider call."""
    sim_add(wapi_simulator)
    if put is not None:
        state = put.pop("state")
        await health.put("inst-1", state, **put)

    outcome = await send_message(command("c-x"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == code.value
    assert wapi_simulator.calls() == []


async def test_redelivered_and_concurrent_copies_of_a_command_call_the_provider_once(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """Ten concurrent deliveries and a later resend of one command make exactly one send."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)

    results = await asyncio.gather(*(send_message(command("c-dup"), deps) for _ in range(10)))
    later = await send_message(command("c-dup"), deps)

    assert len(wapi_simulator.calls(operation="send-text")) == 1
    decided = [result for result in results if result is not None]
    assert {result.status for result in decided} == {SendStatus.SENT}
    assert later is not None
    assert later.replayed
    assert later.status is SendStatus.SENT
    assert {result.provider_message_id for result in [*decided, later]} == {
        later.provider_message_id
    }


async def test_provider_unavailable_is_retried_and_then_sent(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """A 503 (certainly not accepted) is retried; the third try is accepted."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)
    wapi_simulator.fail("inst-1", FaultKind.SERVICE_UNAVAILABLE, times=2)

    outcome = await send_message(command("c-503"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.attempts == 3
    assert len(wapi_simulator.calls(operation="send-text")) == 3


async def test_provider_unavailable_every_time_fails_as_unavailable(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """After the bounded tries the outcome is failed/PROVIDER_UNAVAILABLE, never sent."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)
    wapi_simulator.fail("inst-1", FaultKind.BAD_GATEWAY)

    outcome = await send_message(command("c-502"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.PROVIDER_UNAVAILABLE.value
    assert outcome.provider_message_id is None
    assert len(wapi_simulator.calls(operation="send-text")) == 3


@pytest.mark.parametrize("fault", [FaultKind.GATEWAY_TIMEOUT, FaultKind.NO_MESSAGE_ID])
async def test_timeout_after_sending_or_a_reply_without_message_id_is_uncertain(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, fault: FaultKind
) -> None:
    """The provider may have sent: uncertain/PROVIDER_UNCERTAIN, and no automatic retry."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)
    wapi_simulator.fail("inst-1", fault)

    outcome = await send_message(command("c-unc"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.UNCERTAIN
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.PROVIDER_UNCERTAIN.value
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_provider_rejection_fails_with_the_providers_message(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """A 4xx is failed/PROVIDER_REJECTED, its message kept as the detail, not retried."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.CONNECTED)
    wapi_simulator.fail("inst-1", FaultKind.REJECT, status_code=400, message="Número inválido.")

    outcome = await send_message(command("c-400"), deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.PROVIDER_REJECTED.value
    assert outcome.error.detail == "Número inválido."
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_failed_send_is_retried_explicitly_as_a_new_linked_attempt(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """A failed send retried by the caller goes through the preflight again and is sent."""
    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    first = await send_message(command("c-orig"), deps)
    assert first is not None
    assert first.status is SendStatus.FAILED
    await health.put("inst-1", InstanceState.CONNECTED)

    lanes = Lanes()
    direct = lanes.turn
    reply = await retry_send(RetrySend(command_id="c-orig", new_command_id="c-new"), deps, direct)
    again = await retry_send(RetrySend(command_id="c-orig", new_command_id="c-new"), deps, direct)
    refused = await retry_send(RetrySend(command_id="c-new", new_command_id="c-3"), deps, direct)

    assert reply.ok
    assert reply.outcome is not None
    assert reply.outcome.status is SendStatus.SENT
    assert reply.outcome.retry_of == "c-orig"
    assert again.outcome is not None
    assert again.outcome.replayed
    assert refused.error is not None
    assert refused.error.code == ErrorCode.NOT_RETRYABLE.value
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_held_command_is_sent_when_the_instance_recovers(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, stored: Any
) -> None:
    """With hold_for, a degraded instance holds the command; recovery sends it."""
    from zapgate.sender.service import release_held  # noqa: PLC0415

    sim_add(wapi_simulator)
    await health.put("inst-1", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    held = await send_message(command("c-hold", hold_for=timedelta(minutes=5)), deps)
    assert held is not None
    assert held.status is SendStatus.HELD
    assert wapi_simulator.calls() == []

    await health.put("inst-1", InstanceState.CONNECTED)
    sent = await release_held("c-hold", deps)

    assert sent is not None
    assert sent.status is SendStatus.SENT
    assert len(wapi_simulator.calls(operation="send-text")) == 1
    published = await stored(subjects.STREAM_SEND, subjects.send_outcome_subject("c-hold"))
    assert [SendOutcome.model_validate_json(data).status for data in published] == [
        SendStatus.HELD,
        SendStatus.SENT,
    ]
