"""Health's use cases over in-memory fakes of every port: no servers, a moving clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from zapgate.contracts.health import EvidenceSource, InstanceState
from zapgate.health.check import phone_refresh_age
from zapgate.health.domain import Observation, Seen, Status
from zapgate.health.ports import NoticeDelivery
from zapgate.health.service import HealthService
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import ManualClock
from zapgate.wapi.failures import ProviderUnavailable
from zapgate.wapi.results import InstanceDetails, InstanceStatus

from .fakes import AdvancingTimer, FakeOperator, FakeProvider, FakePublisher, FakeRepository

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PHONE = "5511999990000"
CONNECTED = Status(
    state=InstanceState.CONNECTED,
    phone=PHONE,
    phone_observed_at=T0,
    since=T0,
    state_observed_at=T0,
)
DOWN = ProviderUnavailable(operation="status-instance", detail="504 html", status_code=504)


@dataclass
class World:
    service: HealthService
    repo: FakeRepository
    provider: FakeProvider
    publisher: FakePublisher
    clock: ManualClock
    timer: AdvancingTimer
    operator: FakeOperator


def world(*, operator: bool = True, **overrides: Any) -> World:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": SecretStr("postgresql://u@127.0.0.1/db"),
        "tick_interval": timedelta(minutes=5),
    }
    values.update(overrides)
    clock = ManualClock(T0)
    repo, provider, publisher = FakeRepository(), FakeProvider(), FakePublisher()
    timer, fake_operator = AdvancingTimer(clock), FakeOperator()
    service = HealthService(
        repository=repo,
        provider=provider,
        publisher=publisher,
        clock=clock,
        timer=timer,
        settings=HealthSettings(**values),
        operator=fake_operator if operator else None,
    )
    return World(service, repo, provider, publisher, clock, timer, fake_operator)


async def test_one_failed_check_is_a_blip_confirmed_good_three_seconds_later() -> None:
    """b: status fails once: a second check 3 s later finds it good; no change, blip counted."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    w.clock.advance(timedelta(minutes=5))
    w.provider.status = [DOWN, InstanceStatus(connected=True)]
    with capture_logs() as logs:
        report = await w.service.tick()
    assert w.timer.delays == [timedelta(seconds=3)]
    assert (report.transitions, report.blips, report.confirmations) == (0, 1, 1)
    assert w.repo.state("I1").state is InstanceState.CONNECTED
    assert w.repo.state("I1").blips == 1
    assert w.repo.notice_kinds() == []
    assert any(log["event"] == "check_blip" for log in logs)


async def test_two_failed_checks_make_an_outage_with_one_notice() -> None:
    """b: the confirming check fails too: degraded/TIMEOUT_OR_GATEWAY and one outage notice."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    w.clock.advance(timedelta(minutes=5))
    w.provider.status = DOWN
    report = await w.service.tick()
    assert report.transitions == 1
    state = w.repo.state("I1")
    assert (state.state, state.reason) == (InstanceState.DEGRADED, "TIMEOUT_OR_GATEWAY")
    assert w.repo.notice_kinds() == ["outage"]
    assert [n.kind.value for n in w.operator.delivered] == ["outage"]


async def test_a_phantom_disconnect_webhook_is_checked_and_restarts_nothing() -> None:
    """d: webhookDisconnected while the provider says connected: live check, no change."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    w.clock.advance(timedelta(minutes=1))
    webhook = Observation(
        seen=Seen.DISCONNECTED, source=EvidenceSource.WEBHOOK, observed_at=w.clock.now()
    )
    await w.service.observe("I1", webhook)
    assert "status-instance" in w.provider.operations()
    assert "restart" not in w.provider.operations()
    assert w.repo.state("I1").state is InstanceState.CONNECTED
    assert w.timer.delays == []  # the webhook was the first look: the check runs at once


async def test_a_confirmed_disconnect_of_a_managed_instance_is_restarted_once() -> None:
    """d: webhookDisconnected and the provider agrees: disconnected, one restart."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    w.provider.status = InstanceStatus(connected=False)
    w.clock.advance(timedelta(minutes=1))
    webhook = Observation(
        seen=Seen.DISCONNECTED, source=EvidenceSource.WEBHOOK, observed_at=w.clock.now()
    )
    await w.service.observe("I1", webhook)
    assert w.repo.state("I1").state is InstanceState.DISCONNECTED
    assert w.provider.operations().count("restart") == 1


async def test_unmanaged_instances_are_checked_every_tick_and_never_restarted() -> None:
    """e: an unmanaged disconnected instance: checked each tick, state tracked, no restart."""
    w = world()
    w.repo.add("U1", managed=False)
    w.provider.status = InstanceStatus(connected=False)
    for _ in range(3):
        with capture_logs() as logs:
            report = await w.service.tick()
        assert report.checked == 1
        w.clock.advance(timedelta(minutes=5))
    assert w.repo.state("U1").state is InstanceState.DISCONNECTED
    assert "restart" not in w.provider.operations()
    assert any(log.get("why") == "not managed" for log in logs)


async def test_notices_are_claimed_so_two_flushes_deliver_each_once() -> None:
    """f: two flushes at once (tick and webhook handlers): each notice POSTed once."""
    w = world()
    w.repo.add("I1")
    w.provider.status = InstanceStatus(connected=False)
    await w.service.tick()
    claimed_first = await w.repo.claim_notices(
        target="target-a", now=w.clock.now(), lease=timedelta(minutes=5), max_attempts=15
    )
    await w.service.flush_outbox()
    assert claimed_first == []  # the tick's own flush had it already
    assert len(w.operator.delivered) == 1


async def test_notices_from_before_the_url_or_of_removed_instances_never_leave() -> None:
    """f: no URL when created -> never sent; removed instance -> its notices abandoned."""
    w = world(operator=False)
    w.repo.add("I1")
    w.provider.status = InstanceStatus(connected=False)
    await w.service.tick()
    assert w.repo.notices[0].target is None
    w2 = world()
    w2.repo.add("I2")
    w2.operator.outcomes = [NoticeDelivery(delivered=False, attempts=3, error="HTTP 503")]
    w2.provider.status = InstanceStatus(connected=False)
    await w2.service.tick()
    await w2.service.remove("I2")
    w2.clock.advance(timedelta(hours=2))
    await w2.service.flush_outbox()
    assert w2.operator.delivered == []


async def test_a_failed_notice_is_retried_in_a_later_round_with_backoff() -> None:
    """f: a failed round schedules the next one retry_after later; then it is delivered."""
    w = world()
    w.repo.add("I1")
    w.operator.outcomes = [NoticeDelivery(delivered=False, attempts=3, error="HTTP 503")]
    w.provider.status = InstanceStatus(connected=False)
    await w.service.tick()
    [notice] = w.repo.notices
    assert notice.next_attempt_at == w.clock.now() + timedelta(minutes=1)
    await w.service.flush_outbox()
    assert w.operator.delivered == []  # not due yet
    w.clock.advance(timedelta(minutes=1))
    await w.service.flush_outbox()
    assert [n.event_id for n in w.operator.delivered] == [notice.notification.event_id]
    assert notice.attempts == 4


async def test_a_stall_lifts_on_a_receipt_received_after_it_began() -> None:
    """h: a delivery receipt clears DELIVERY_STALLED; nothing is locked when not stalled."""
    w = world()
    stalled = Status(
        state=InstanceState.DEGRADED,
        reason="DELIVERY_STALLED",
        phone=PHONE,
        since=T0,
        state_observed_at=T0,
        outage_started_at=T0,
        outage_notified=True,
    )
    w.repo.add("I1", status=stalled)
    w.clock.advance(timedelta(minutes=1))
    receipt = Observation(
        seen=Seen.DELIVERY_RESUMED,
        source=EvidenceSource.DELIVERY_TRACKING,
        observed_at=w.clock.now(),
        proves_delivery=True,
    )
    await w.service.delivery_evidence("I1", receipt)
    assert w.repo.state("I1").state is InstanceState.CONNECTED


async def test_a_stall_past_the_recheck_window_is_lifted_by_a_tick_with_a_phone_lookup() -> None:
    """h: 10 minutes into a stall, the tick looks the phone up and the stall lifts."""
    w = world()
    stalled = Status(
        state=InstanceState.DEGRADED,
        reason="DELIVERY_STALLED",
        phone=PHONE,
        phone_observed_at=T0,
        since=T0,
        state_observed_at=T0,
        outage_started_at=T0,
        outage_notified=True,
    )
    w.repo.add("I1", status=stalled)
    w.clock.advance(timedelta(minutes=5))
    await w.service.tick()
    assert w.repo.state("I1").reason == "DELIVERY_STALLED"
    w.clock.advance(timedelta(minutes=5))
    await w.service.tick()
    assert w.repo.state("I1").state is InstanceState.CONNECTED
    assert w.provider.operations()[-2:] == ["status-instance", "fetch-instance"]


async def test_a_connected_instance_looks_its_phone_up_again_at_its_refresh_age() -> None:
    """k: status-only ticks do not refresh the phone; once its age reaches the instance's
    refresh age (within phone_max_age, 1 h) fetch-instance runs, and a session back without its
    phone is confirmed and degraded."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    refresh = phone_refresh_age("I1", timedelta(hours=1))
    assert timedelta(minutes=30) <= refresh < timedelta(hours=1)
    while w.clock.now() + timedelta(minutes=5) - T0 < refresh:
        w.clock.advance(timedelta(minutes=5))
        await w.service.tick()
    assert w.clock.now() - T0 >= timedelta(minutes=30)
    assert "fetch-instance" not in w.provider.operations()
    assert w.repo.state("I1").phone_observed_at == T0
    w.provider.details = InstanceDetails(connected=True, connected_phone=None)
    w.clock.advance(timedelta(minutes=5))
    await w.service.tick()
    assert w.provider.operations().count("fetch-instance") == 2  # the look and its confirmation
    state = w.repo.state("I1")
    assert (state.state, state.reason) == (InstanceState.DEGRADED, "SESSION_INCOMPLETE")


async def test_phones_shown_in_one_tick_are_looked_up_again_over_several_ticks() -> None:
    """k, the herd: 600 phones shown at one moment (a bulk registration's first tick). Over the
    next hour of 5-minute ticks each is looked up exactly once, none later than phone_max_age,
    and no tick looks up more than a quarter of them (without the spread one tick would look
    up all 600)."""
    w = world()
    ids = [f"B{n:04d}" for n in range(600)]
    for instance_id in ids:
        w.repo.add(instance_id, status=CONNECTED)
    per_tick: list[int] = []
    for _ in range(12):
        w.clock.advance(timedelta(minutes=5))
        before = len(w.provider.calls)
        await w.service.tick()
        per_tick.append(sum(op == "fetch-instance" for op, _ in w.provider.calls[before:]))
    fetched = [i for op, i in w.provider.calls if op == "fetch-instance"]
    assert sorted(fetched) == ids
    assert per_tick[:5] == [0] * 5  # half of phone_max_age: every phone still fresh
    assert max(per_tick) <= len(ids) // 4, per_tick
    shown = {w.repo.state(i).phone_observed_at for i in ids}
    assert None not in shown
    assert min(t for t in shown if t is not None) > T0  # each shown again by its lookup


async def test_flapping_gives_one_outage_one_instability_and_one_recovery() -> None:
    """c: five confirmed drops with returns, then two quiet minutes: three notices in all."""
    w = world()
    w.repo.add("I1", status=CONNECTED)
    down = Observation(seen=Seen.DISCONNECTED, source=EvidenceSource.WEBHOOK, observed_at=T0)
    for _ in range(5):
        w.clock.advance(timedelta(seconds=2))
        w.provider.status = InstanceStatus(connected=False)
        await w.service.observe("I1", _at(down, w.clock.now()))
        w.clock.advance(timedelta(seconds=2))
        w.provider.status = InstanceStatus(connected=True)
        await w.service.check_now("I1")
    assert w.repo.notice_kinds() == ["outage", "unstable"]
    w.clock.advance(timedelta(minutes=2))
    await w.service.tick()
    assert w.repo.notice_kinds() == ["outage", "unstable", "recovered"]
    assert w.repo.notices[-1].notification.flaps == 4


def _at(observation: Observation, at: datetime) -> Observation:
    return Observation(seen=observation.seen, source=observation.source, observed_at=at)
