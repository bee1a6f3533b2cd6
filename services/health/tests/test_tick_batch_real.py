"""A tick's state writes in batches, and phone lookups only where the phone is unknown or stale
(issue 17 item 3), over the real PostgreSQL and the W-API simulator over HTTP.

Which transaction wrote a row is PostgreSQL's own record: rows written by one transaction share
its id in the `xmin` system column.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from zapgate.contracts.health import EvidenceSource, InstanceState
from zapgate.health.domain import Observation, Seen
from zapgate.health.service import HealthService
from zapgate.runtime.db import create_engine
from zapgate.wapi.simulator.models import FaultKind, RestartMode

from .conftest import Harness

pytestmark = pytest.mark.real

PHONE = "5511999990000"
LINGER = timedelta(hours=1)
"""Batches close only when full or at the round's end (a loaded machine never splits them)."""


async def rows(harness: Harness, table: str = "instances") -> dict[str, dict[str, Any]]:
    """Every row of `table` by instance id, with the id of the transaction that wrote it."""
    engine = create_engine(harness.database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.text(f"SELECT xmin::text AS written_by, * FROM {table}")  # noqa: S608 - ours
            )
            return {row.instance_id: dict(row._mapping) for row in result}
    finally:
        await engine.dispose()


async def transitions(harness: Harness) -> list[tuple[str, str, str | None, str]]:
    engine = create_engine(harness.database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.text(
                    "SELECT instance_id, to_state, reason, source FROM instance_transitions "
                    "ORDER BY instance_id"
                )
            )
            return [(r.instance_id, r.to_state, r.reason, r.source) for r in result]
    finally:
        await engine.dispose()


def operations(harness: Harness, instance_id: str) -> list[str]:
    return [call.operation for call in harness.simulator.calls(instance_id=instance_id)]


async def test_one_tick_writes_mixed_outcomes_in_one_transaction(harness: Harness) -> None:
    """Five instances, five outcomes, one batch: each row, transition and notice is right, and
    the four rows whose state the batch wrote were written by one transaction."""
    service = await harness.start(apply_batch_size=50, apply_batch_linger=LINGER)
    await harness.register(service, "OK", phone=PHONE)
    await harness.register(service, "NOPHONE")  # connected, no phone: incomplete session
    await harness.register(service, "DOWN", phone=PHONE, connected=False)
    await harness.register(service, "GATEWAY", phone=PHONE)
    await harness.register(service, "REFUSED", phone=PHONE)
    await harness.register(service, "PAUSED", phone=PHONE)
    await service.set_paused("PAUSED", paused=True)
    harness.simulator.set_restart("DOWN", RestartMode.NEVER)
    harness.simulator.fail("GATEWAY", FaultKind.GATEWAY_TIMEOUT)
    harness.simulator.fail("REFUSED", FaultKind.REJECT, status_code=401)

    report = await service.tick()

    assert (report.checked, report.transitions, report.restarts) == (5, 5, 1)
    stored = await rows(harness)
    states = {i: (r["state"], r["reason"], r["phone"]) for i, r in stored.items()}
    assert states == {
        "OK": ("connected", None, PHONE),
        "NOPHONE": ("degraded", "SESSION_INCOMPLETE", None),
        "DOWN": ("disconnected", None, None),
        "GATEWAY": ("degraded", "TIMEOUT_OR_GATEWAY", None),
        "REFUSED": ("degraded", "CREDENTIALS_REJECTED", None),
        "PAUSED": ("unknown", None, None),
    }
    now = harness.clock.now()
    assert stored["OK"]["phone_observed_at"] == now
    assert all(stored[i]["state_observed_at"] == now for i in states if i != "PAUSED")
    assert stored["PAUSED"]["state_observed_at"] is None
    # DOWN's row was written again by the restart claim (its own compare-and-set).
    assert stored["DOWN"]["last_restart_attempt_at"] == now
    writers = {stored[i]["written_by"] for i in ("OK", "NOPHONE", "GATEWAY", "REFUSED")}
    assert len(writers) == 1
    assert await transitions(harness) == [
        ("DOWN", "disconnected", None, "tick"),
        ("GATEWAY", "degraded", "TIMEOUT_OR_GATEWAY", "tick"),
        ("NOPHONE", "degraded", "SESSION_INCOMPLETE", "tick"),
        ("OK", "connected", None, "tick"),
        ("REFUSED", "degraded", "CREDENTIALS_REJECTED", "tick"),
    ]
    notices = await rows(harness, "instance_notifications")
    assert {i: n["kind"] for i, n in notices.items()} == {
        "DOWN": "outage",
        "GATEWAY": "outage",
        "NOPHONE": "outage",
        "REFUSED": "outage",
    }
    assert operations(harness, "DOWN") == ["status-instance", "restart"]
    assert operations(harness, "PAUSED") == []


async def test_a_tick_writes_one_transaction_per_batch_of_instances(harness: Harness) -> None:
    """Seven connected instances, batches of three: the steady tick's state writes (the time of
    the evidence) come from three transactions of three, three and one rows."""
    service = await harness.start(apply_batch_size=3, apply_batch_linger=LINGER)
    ids = [f"I{n}" for n in range(7)]
    for instance_id in ids:
        await harness.register(service, instance_id, phone=PHONE)
    await service.tick()
    harness.clock.advance(timedelta(minutes=5))

    report = await service.tick()

    assert (report.checked, report.transitions) == (7, 0)
    stored = await rows(harness)
    assert {r["state_observed_at"] for r in stored.values()} == {harness.clock.now()}
    sizes = sorted(
        sum(1 for r in stored.values() if r["written_by"] == writer)
        for writer in {r["written_by"] for r in stored.values()}
    )
    assert sizes == [1, 3, 3]


async def test_a_batch_with_a_suspicion_confirms_it_and_saves_the_rest(harness: Harness) -> None:
    """In one batch: a connected instance that drops and one whose session came back without
    its phone (both suspected, then confirmed by a second check; the drop restarted), and one
    that stays good."""
    service = await harness.start(apply_batch_size=50)
    for instance_id in ("DROPS", "STAYS", "LOSES_PHONE"):
        await harness.register(service, instance_id, phone=PHONE)
    harness.simulator.set_restart("DROPS", RestartMode.NEVER)
    await service.tick()
    harness.simulator.clear_records()
    harness.simulator.set_connected("DROPS", connected=False)
    harness.simulator.set_phone("LOSES_PHONE", None)
    # LOSES_PHONE's phone is stale by then: the tick looks it up and finds none.
    harness.clock.advance(timedelta(hours=1, minutes=5))

    report = await service.tick()

    assert (report.confirmations, report.restarts) == (2, 1)
    stored = await rows(harness)
    assert {i: (r["state"], r["reason"]) for i, r in stored.items()} == {
        "DROPS": ("disconnected", None),
        "STAYS": ("connected", None),
        "LOSES_PHONE": ("degraded", "SESSION_INCOMPLETE"),
    }
    assert operations(harness, "DROPS") == ["status-instance", "status-instance", "restart"]
    assert operations(harness, "STAYS") == ["status-instance", "fetch-instance"]
    look = ["status-instance", "fetch-instance", "device"]
    assert operations(harness, "LOSES_PHONE") == look + look


async def test_fetch_instance_only_where_the_phone_is_unknown_or_stale(harness: Harness) -> None:
    """phone_max_age PT1H. At the second tick: FRESH's phone was shown by a webhook 25 minutes
    ago (status-instance only), STALE's by the first tick 65 minutes ago, INCOMPLETE has none
    and NEW was never checked (status-instance + fetch-instance, the simulator's log says)."""
    service = await harness.start(phone_max_age=timedelta(hours=1))
    for instance_id in ("FRESH", "STALE"):
        await harness.register(service, instance_id, phone=PHONE)
    await harness.register(service, "INCOMPLETE")
    await service.tick()
    harness.clock.advance(timedelta(minutes=40))
    await service.observe(
        "FRESH",
        Observation(
            seen=Seen.CONNECTED,
            source=EvidenceSource.WEBHOOK,
            observed_at=harness.clock.now(),
            phone=PHONE,
        ),
    )
    await harness.register(service, "NEW", phone=PHONE)
    harness.clock.advance(timedelta(minutes=25))
    harness.simulator.clear_records()

    await service.tick()

    assert operations(harness, "FRESH") == ["status-instance"]
    for instance_id in ("STALE", "NEW"):
        assert operations(harness, instance_id) == ["status-instance", "fetch-instance"]
    # INCOMPLETE: fetch-instance has no phone, so device is asked too.
    assert operations(harness, "INCOMPLETE") == ["status-instance", "fetch-instance", "device"]
    stored = await rows(harness)
    assert stored["STALE"]["phone_observed_at"] == harness.clock.now()
    assert stored["FRESH"]["phone_observed_at"] == harness.clock.now() - timedelta(minutes=25)


async def test_a_phone_changed_while_connected_is_stored_when_it_goes_stale(
    harness: Harness,
) -> None:
    """The session was paired again to another number without a drop any check saw: status-only
    ticks keep the old phone until its age reaches phone_max_age; then fetch-instance shows the
    new one, stored with a fresh age (no state change: still connected)."""
    service = await harness.start(phone_max_age=timedelta(minutes=30))
    await harness.register(service, "I1", phone=PHONE)
    await service.tick()
    harness.simulator.set_phone("I1", "5511988887777")
    harness.clock.advance(timedelta(minutes=20))
    await service.tick()
    [health] = await service.health("I1")
    assert health.phone == PHONE
    harness.clock.advance(timedelta(minutes=20))
    await service.tick()
    [health] = await service.health("I1")
    assert (health.state, health.phone) == (InstanceState.CONNECTED, "5511988887777")
    assert health.phone_observed_at == harness.clock.now()


async def test_a_session_seen_down_has_its_phone_looked_up_when_it_is_back(
    harness: Harness,
) -> None:
    """A drop a tick saw makes the phone unknown-as-current: the first connected check after it
    looks the phone up, however fresh the old one is (a new pairing shows at once)."""
    service: HealthService = await harness.start(phone_max_age=timedelta(hours=1))
    await harness.register(service, "I1", phone=PHONE)
    harness.simulator.set_restart("I1", RestartMode.NEVER)
    await service.tick()
    harness.simulator.set_connected("I1", connected=False)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    [health] = await service.health("I1")
    assert health.state is InstanceState.DISCONNECTED
    harness.simulator.set_phone("I1", "5511988887777")
    harness.simulator.set_connected("I1", connected=True)
    harness.simulator.clear_records()
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    assert operations(harness, "I1") == ["status-instance", "fetch-instance"]
    [health] = await service.health("I1")
    assert (health.state, health.phone) == (InstanceState.CONNECTED, "5511988887777")
