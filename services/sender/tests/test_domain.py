"""Pure decisions: preflight, live-check verdicts, forward-only receipts, stalls, lanes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import SendMessage, SendStatus
from zapgate.contracts.webhooks import DeliveryStatus
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.requests import invalid_request
from zapgate.sender.domain import (
    InstanceView,
    LiveSession,
    PhoneRefused,
    StuckMessage,
    Verdict,
    after_live_check,
    is_stalled,
    next_status,
    preflight,
    resolve_phone,
    with_field_hints,
)
from zapgate.sender.lanes import Lanes, Pacer

pytestmark = [pytest.mark.unit]
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def view(state: InstanceState, **extra: object) -> InstanceView:
    values: dict[str, object] = {
        "instance_id": "i",
        "token": "t",
        "paused": False,
        "state": state,
        "reason": None,
        "phone": "5511999990000",
        "last_check_at": NOW,
    }
    values.update(extra)
    return InstanceView(**values)  # type: ignore[arg-type]


def test_connected_instance_with_a_phone_is_sent() -> None:
    """Connected and complete: send."""
    assert preflight(view(InstanceState.CONNECTED), can_hold=False).verdict is Verdict.SEND


def test_connected_instance_without_a_phone_is_an_incomplete_session() -> None:
    """No phone means incomplete whatever the state says."""
    decision = preflight(view(InstanceState.CONNECTED, phone=None), can_hold=False)
    assert decision.verdict is Verdict.BLOCK
    assert decision.problem is not None
    assert decision.problem.code == ErrorCode.SESSION_INCOMPLETE.value


def test_degraded_instance_is_held_only_when_the_command_may_wait() -> None:
    """hold_for turns a block into a hold for states that may recover."""
    degraded = view(InstanceState.DEGRADED, reason="DELIVERY_STALLED")
    assert preflight(degraded, can_hold=True).verdict is Verdict.HOLD
    blocked = preflight(degraded, can_hold=False)
    assert blocked.verdict is Verdict.BLOCK
    assert blocked.problem is not None
    assert blocked.problem.code == ErrorCode.DELIVERY_STALLED.value


def test_unknown_degraded_reason_keeps_its_code_with_a_portuguese_message() -> None:
    """A reason health adds later is reported as is."""
    decision = preflight(view(InstanceState.DEGRADED, reason="NEW_REASON"), can_hold=False)
    assert decision.problem is not None
    assert decision.problem.code == "NEW_REASON"
    assert "não foi enviada" in decision.problem.message


def test_paused_and_unknown_instances_fail_even_when_the_command_may_wait() -> None:
    """Nothing but a person changes these: no hold."""
    paused = preflight(view(InstanceState.CONNECTED, paused=True), can_hold=True)
    unknown = preflight(None, can_hold=True)
    assert paused.verdict is Verdict.BLOCK
    assert unknown.verdict is Verdict.BLOCK
    assert unknown.problem is not None
    assert unknown.problem.code == ErrorCode.INSTANCE_UNKNOWN.value


def test_disconnected_instance_gets_a_live_check() -> None:
    """Health's `disconnected` is checked live before failing."""
    decision = preflight(view(InstanceState.DISCONNECTED), can_hold=False)
    assert decision.verdict is Verdict.LIVE_CHECK


@pytest.mark.parametrize(
    ("session", "verdict", "code", "reconnect"),
    [
        (LiveSession(reachable=True, connected=True, phone="55"), Verdict.SEND, None, False),
        (
            LiveSession(reachable=True, connected=False),
            Verdict.BLOCK,
            ErrorCode.INSTANCE_DISCONNECTED,
            True,
        ),
        (LiveSession(reachable=False), Verdict.BLOCK, ErrorCode.INSTANCE_DISCONNECTED, True),
        (
            LiveSession(reachable=True, connected=True),
            Verdict.BLOCK,
            ErrorCode.SESSION_INCOMPLETE,
            False,
        ),
    ],
)
def test_live_check_verdicts(
    session: LiveSession,
    verdict: Verdict,
    code: ErrorCode | None,
    reconnect: bool,  # noqa: FBT001 - a parametrized expectation
) -> None:
    """Complete sends; down or silent asks to reconnect; no phone is incomplete."""
    decision = after_live_check(session, can_hold=False, health="disconnected")
    assert decision.verdict is verdict
    assert (decision.problem.code if decision.problem else None) == (code.value if code else None)
    assert decision.request_reconnect is reconnect


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (SendStatus.SENT, DeliveryStatus.DELIVERED, SendStatus.DELIVERED),
        (SendStatus.SENT, DeliveryStatus.READ, SendStatus.READ),
        (SendStatus.READ, DeliveryStatus.DELIVERED, None),
        (SendStatus.READ, DeliveryStatus.READ, None),
        (SendStatus.READ, DeliveryStatus.PLAYED, SendStatus.PLAYED),
        (SendStatus.SENT, DeliveryStatus.FAILED, SendStatus.FAILED),
        (SendStatus.DELIVERED, DeliveryStatus.FAILED, None),
        (SendStatus.SENT, DeliveryStatus.SENT, None),
        (SendStatus.SENT, None, None),
        (SendStatus.FAILED, DeliveryStatus.READ, None),
    ],
)
def test_receipts_only_move_forward(
    current: SendStatus, reported: DeliveryStatus | None, expected: SendStatus | None
) -> None:
    """sent < delivered < read < played; ERROR fails only what was not delivered."""
    assert next_status(current, reported) is expected


def test_stall_needs_enough_stuck_messages_and_no_delivery_since_the_oldest() -> None:
    """Three stuck and no receipt since the oldest: stalled; a newer receipt: not stalled."""
    stuck = [StuckMessage(command_id=f"c{i}", sent_at=NOW + timedelta(minutes=i)) for i in range(3)]
    assert is_stalled(stuck, None, threshold=3)
    assert is_stalled(stuck, NOW - timedelta(minutes=1), threshold=3)
    assert not is_stalled(stuck, NOW + timedelta(seconds=30), threshold=3)
    assert not is_stalled(stuck[:2], None, threshold=3)


async def test_pacer_keeps_the_minimum_gap_per_instance_only() -> None:
    """A second send of one instance waits for the gap; another instance does not."""
    clock = ManualClock(NOW)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    pacer = Pacer(clock, 2.0, fake_sleep)
    await pacer.wait_turn("a")
    clock.advance(0.5)
    await pacer.wait_turn("a")
    await pacer.wait_turn("b")

    assert waits == [1.5]


async def test_pacer_counts_the_gap_from_the_previous_calls_answer() -> None:
    """The gap runs from when the previous call ended, not from when it was about to start: a
    request that left late (a busy loop) and a next one that leaves at once would otherwise
    reach the provider closer together than the gap."""
    clock = ManualClock(NOW)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    pacer = Pacer(clock, 2.0, fake_sleep)
    await pacer.wait_turn("a")
    clock.advance(1.5)  # the call took 1.5 s (it may have reached the provider only now)
    pacer.answered("a")
    clock.advance(0.5)
    await pacer.wait_turn("a")

    assert waits == [1.5]
    assert pacer.min_gap == 2.0


async def test_lanes_run_one_key_in_order_and_keys_in_parallel() -> None:
    """Jobs of one key never overlap and keep order; another key runs meanwhile."""
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, *, wait: bool = False) -> str:
        order.append(f"start {name}")
        if wait:
            await gate.wait()
        order.append(f"end {name}")
        return name

    lanes = Lanes()

    async def in_lane(key: str, name: str, *, wait: bool = False) -> str:
        async with lanes.turn(key):
            return await job(name, wait=wait)

    a1 = asyncio.create_task(in_lane("a", "a1", wait=True))
    a2 = asyncio.create_task(in_lane("a", "a2"))
    b1 = asyncio.create_task(in_lane("b", "b1"))
    assert await asyncio.wait_for(b1, 1) == "b1"
    gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(a1, a2), 1)) == ["a1", "a2"]

    assert order.index("end a1") < order.index("start a2")
    assert order.index("end b1") < order.index("end a1")
    assert lanes.busy == 0


@pytest.mark.parametrize(
    ("phone", "default_country", "expected"),
    [
        ("+5584988887777", None, "5584988887777"),
        ("5584988887777", None, "5584988887777"),
        ("558488887777", None, "558488887777"),
        ("5511988887777", "BR", "5511988887777"),
        ("558488887777", "BR", "558488887777"),
        ("84988887777", "BR", "5584988887777"),
        ("8488887777", "BR", "558488887777"),
        ("084988887777", "BR", "5584988887777"),
        ("+12125551234", "BR", "12125551234"),
        ("12125551234", None, "12125551234"),
        ("447911123456", "BR", "447911123456"),
        ("5491155556666", None, "5491155556666"),
        ("5215512345678", None, "5215512345678"),
        ("120363025555555555@g.us", None, "120363025555555555@g.us"),
        ("1234567890@lid", None, "1234567890@lid"),
    ],
)
def test_phones_a_whatsapp_account_can_have_are_resolved(
    phone: str, default_country: str | None, expected: str
) -> None:
    """Both Brazilian mobile forms, other countries, Mexico's 521 and ids keep being sendable."""
    assert resolve_phone(phone, default_country) == expected


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        ("11988887777", ErrorCode.PHONE_COUNTRY_CODE_MISSING),
        ("1188887777", ErrorCode.PHONE_COUNTRY_CODE_MISSING),
        ("011988887777", ErrorCode.PHONE_COUNTRY_CODE_MISSING),
        ("+11988887777", ErrorCode.PHONE_INVALID),
        ("+551234", ErrorCode.PHONE_INVALID),
        ("+999123456789", ErrorCode.PHONE_INVALID),
    ],
)
def test_numbers_that_cannot_carry_a_country_code_are_refused_with_a_code(
    phone: str, code: ErrorCode
) -> None:
    """No default country: local numbers are refused, never sent to another country."""
    refused = resolve_phone(phone, None)

    assert isinstance(refused, PhoneRefused)
    assert refused.code is code
    assert phone.removeprefix("+") in refused.message


def test_refused_fields_get_how_to_write_them_in_portuguese() -> None:
    """The runtime's pt-BR field errors, plus how to write a phone and the ids."""
    try:
        SendMessage.model_validate({"command_id": "c", "phone": "x", "body": {"kind": "fax"}})
    except ValidationError as error:
        fields = with_field_hints(invalid_request(error)).fields or {}
    else:
        raise AssertionError("the command was valid")

    assert fields["instance_id"] == (
        "campo obrigatório ausente: use de 1 a 100 caracteres entre letras, dígitos, _ e -"
    )
    assert fields["phone"].startswith("formato não aceito: use dígitos com o código do país")
    assert set(fields) == {"instance_id", "phone", "body"}
