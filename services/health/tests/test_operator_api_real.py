"""Health's operator verbs over NATS (the console's restart, QR, pairing code and history)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.envelope import Contract
from zapgate.contracts.health import (
    CheckNow,
    GetInstanceHealth,
    GetInstanceHistory,
    GetQrCode,
    HealthReply,
    InstanceHistoryReply,
    InstanceState,
    PairingCodeReply,
    QrCodeReply,
    RequestPairingCode,
    RestartInstance,
    RestartReply,
)

from .conftest import Harness

pytestmark = pytest.mark.real


async def ask(harness: Harness, subject: str, command: Contract) -> bytes:
    answer = await harness.nc.request(subject, command.model_dump_json().encode(), timeout=10)
    return answer.data


async def test_an_operator_restart_runs_once_then_waits_for_the_cooldown(
    harness: Harness,
) -> None:
    """The first request restarts at once; the second, inside the cooldown, is refused with
    the time health may restart again."""
    service = await harness.start(restart_cooldown=timedelta(minutes=30))
    await harness.register(service, "R1", phone="5511988887777")
    command = RestartInstance(instance_id="R1", requested_by="ana")

    first = RestartReply.model_validate_json(
        await ask(harness, subjects.API_HEALTH_RESTART, command)
    )
    second = RestartReply.model_validate_json(
        await ask(harness, subjects.API_HEALTH_RESTART, command)
    )

    now = harness.clock.now()
    assert (first.ok, first.restarted, first.accepted_by_provider) == (True, True, True)
    assert first.cooldown_until == now + timedelta(minutes=30)
    assert (second.ok, second.restarted, second.cooldown_until) == (
        True,
        False,
        now + timedelta(minutes=30),
    )
    restarts = [c for c in harness.simulator.calls() if c.operation == "restart"]
    assert len(restarts) == 1


async def test_the_read_api_says_until_when_the_restart_cooldown_runs(harness: Harness) -> None:
    """Health's read API carries the cooldown (until, and seconds left by health's clock), so
    the console never keeps its own copy of the setting."""
    service = await harness.start(restart_cooldown=timedelta(minutes=30))
    await harness.register(service, "C1", phone="5511988887777")
    query = GetInstanceHealth(instance_id="C1")
    before = HealthReply.model_validate_json(await ask(harness, subjects.API_HEALTH_GET, query))
    restarted_at = harness.clock.now()
    await ask(
        harness, subjects.API_HEALTH_RESTART, RestartInstance(instance_id="C1", requested_by="ana")
    )
    harness.clock.advance(timedelta(minutes=10))

    during = HealthReply.model_validate_json(await ask(harness, subjects.API_HEALTH_GET, query))
    harness.clock.advance(timedelta(minutes=25))
    after = HealthReply.model_validate_json(await ask(harness, subjects.API_HEALTH_GET, query))

    assert (
        before.instances[0].restart_cooldown_until,
        before.instances[0].restart_cooldown_left_s,
    ) == (None, 0)
    assert during.instances[0].restart_cooldown_until == restarted_at + timedelta(minutes=30)
    assert during.instances[0].restart_cooldown_left_s == 20 * 60
    assert after.instances[0].restart_cooldown_until == restarted_at + timedelta(minutes=30)
    assert after.instances[0].restart_cooldown_left_s == 0


async def test_an_unknown_instance_is_refused_by_every_operator_verb(harness: Harness) -> None:
    """Coded refusals, never a timeout."""
    await harness.start()
    replies: list[RestartReply | QrCodeReply | PairingCodeReply | InstanceHistoryReply] = [
        RestartReply.model_validate_json(
            await ask(
                harness,
                subjects.API_HEALTH_RESTART,
                RestartInstance(instance_id="nope", requested_by="ana"),
            )
        ),
        QrCodeReply.model_validate_json(
            await ask(harness, subjects.API_HEALTH_QR_CODE, GetQrCode(instance_id="nope"))
        ),
        PairingCodeReply.model_validate_json(
            await ask(
                harness,
                subjects.API_HEALTH_PAIRING_CODE,
                RequestPairingCode(instance_id="nope", phone="5511988887777"),
            )
        ),
        InstanceHistoryReply.model_validate_json(
            await ask(harness, subjects.API_HEALTH_HISTORY, GetInstanceHistory(instance_id="nope"))
        ),
    ]
    assert [(r.ok, r.error.code if r.error else None) for r in replies] == [
        (False, "INSTANCE_UNKNOWN")
    ] * 4


async def test_qr_and_pairing_code_come_from_the_provider(harness: Harness) -> None:
    """The console never sees the token: health asks the provider with it."""
    service = await harness.start()
    await harness.register(service, "Q1", phone="5511988887777", connected=False)

    qr = QrCodeReply.model_validate_json(
        await ask(harness, subjects.API_HEALTH_QR_CODE, GetQrCode(instance_id="Q1"))
    )
    pairing = PairingCodeReply.model_validate_json(
        await ask(
            harness,
            subjects.API_HEALTH_PAIRING_CODE,
            RequestPairingCode(instance_id="Q1", phone="5511988887777"),
        )
    )

    assert qr.ok
    assert qr.image is not None or qr.connected
    assert pairing.ok
    assert pairing.code
    operations = {c.operation for c in harness.simulator.calls()}
    assert {"qr-code", "pairing-code"} <= operations


async def test_a_malformed_request_gets_invalid_command(harness: Harness) -> None:
    """A phone that is not digits is refused before any provider call."""
    await harness.start()
    answer = await harness.nc.request(
        subjects.API_HEALTH_PAIRING_CODE,
        b'{"instance_id": "Q1", "phone": "not-a-phone"}',
        timeout=10,
    )
    reply = PairingCodeReply.model_validate_json(answer.data)
    assert (reply.ok, reply.error.code if reply.error else None) == (False, "INVALID_COMMAND")


async def test_history_lists_state_changes_newest_first(harness: Harness) -> None:
    """After a check the instance's transition is in its history."""
    service = await harness.start()
    await harness.register(service, "H1", phone="5511988887777")
    await ask(harness, subjects.API_HEALTH_CHECK_NOW, CheckNow(instance_id="H1"))

    reply = InstanceHistoryReply.model_validate_json(
        await ask(harness, subjects.API_HEALTH_HISTORY, GetInstanceHistory(instance_id="H1"))
    )

    assert reply.ok
    assert [(t.from_state, t.to_state) for t in reply.transitions] == [
        (InstanceState.UNKNOWN, InstanceState.CONNECTED)
    ]
    # The read model carries what the console shows: the phone's last sighting, the flaps.
    health = HealthReply.model_validate_json(
        await ask(harness, subjects.API_HEALTH_GET, GetInstanceHealth(instance_id="H1"))
    )
    assert health.instances[0].phone_observed_at is not None
    assert health.instances[0].episode_flaps == 0
