"""Cancelling a held command and the outcome's timeline, over real PostgreSQL, NATS, simulator."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.errors import MESSAGES_PT_BR, ErrorCode
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import (
    CancelSend,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.sender.service import cancel_held, get_outcome, release_held, send_message

if TYPE_CHECKING:
    from zapgate.sender.service import SenderDeps
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

TOKEN = "tok-sender-test"


def held_command(command_id: str) -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id="inst-c",
        phone="5511988887777",
        body=TextContent(message="olá"),
        hold_for=timedelta(minutes=5),
    )


async def test_cancelled_held_command_fails_as_cancelled_and_is_never_sent(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator, stored: Any
) -> None:
    """A held command cancelled before recovery fails with CANCELLED; recovery sends nothing."""
    wapi_simulator.add_instance("inst-c", TOKEN, phone="5511999990000")
    await health.put("inst-c", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    held = await send_message(held_command("c-cancel"), deps)
    assert held is not None
    assert held.status is SendStatus.HELD

    reply = await cancel_held(CancelSend(command_id="c-cancel"), deps)
    await health.put("inst-c", InstanceState.CONNECTED)
    released = await release_held("c-cancel", deps)

    assert reply.ok
    assert reply.outcome is not None
    assert reply.outcome.status is SendStatus.FAILED
    assert reply.outcome.error is not None
    assert reply.outcome.error.code == ErrorCode.CANCELLED.value
    assert reply.outcome.error.message == MESSAGES_PT_BR[ErrorCode.CANCELLED]
    assert released is None
    assert wapi_simulator.calls() == []
    published = await stored(subjects.STREAM_SEND, subjects.send_outcome_subject("c-cancel"))
    assert [SendOutcome.model_validate_json(data).status for data in published] == [
        SendStatus.HELD,
        SendStatus.FAILED,
    ]


async def test_cancel_is_refused_for_a_decided_or_unknown_command(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """Only a held command can be cancelled: a sent one is NOT_CANCELLABLE, a missing NOT_FOUND."""
    wapi_simulator.add_instance("inst-c", TOKEN, phone="5511999990000")
    await health.put("inst-c", InstanceState.CONNECTED)
    sent = await send_message(held_command("c-sent"), deps)
    assert sent is not None
    assert sent.status is SendStatus.SENT

    decided = await cancel_held(CancelSend(command_id="c-sent"), deps)
    missing = await cancel_held(CancelSend(command_id="c-missing"), deps)

    assert decided.error is not None
    assert decided.error.code == ErrorCode.NOT_CANCELLABLE.value
    assert missing.error is not None
    assert missing.error.code == ErrorCode.NOT_FOUND.value
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_outcome_reply_carries_the_timeline_oldest_first(
    deps: SenderDeps, health: Any, wapi_simulator: Simulator
) -> None:
    """The outcome query lists accepted, held and sent with their times, in order."""
    wapi_simulator.add_instance("inst-c", TOKEN, phone="5511999990000")
    await health.put("inst-c", InstanceState.DEGRADED, reason="TIMEOUT_OR_GATEWAY")
    await send_message(held_command("c-line"), deps)
    await health.put("inst-c", InstanceState.CONNECTED)
    await release_held("c-line", deps)

    reply = await get_outcome("c-line", deps.store)

    assert reply.outcome is not None
    assert reply.outcome.status is SendStatus.SENT
    assert [step.status for step in reply.timeline] == ["accepted", "held", "sent"]
    assert [step.at for step in reply.timeline] == sorted(step.at for step in reply.timeline)
