"""Outbound events over fakes: who gets what, stable webhook ids, retries and giving up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from zapgate.api.domain import EventType, Subscription, retry_delay
from zapgate.api.outbound import Outbound, RetryPolicy, to_event
from zapgate.contracts.sending import MessageKind, SendOutcome, SendStatus
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.consumer import Postpone
from zapgate.runtime.signing import new_secret

from .fakes import FakeDeliveryLog, FakeJobs, FakePoster, FakeSubscriptions

pytestmark = pytest.mark.unit

ALICE = "a" * 12
BOB = "b" * 12


def outcome(command_id: str, *, replayed: bool = False) -> bytes:
    return (
        SendOutcome(
            command_id=command_id,
            instance_id="inst-1",
            phone="5511988887777",
            kind=MessageKind.TEXT,
            status=SendStatus.SENT,
            attempts=1,
            replayed=replayed,
        )
        .model_dump_json()
        .encode()
    )


def subscription(sub_id: str, key_id: str, *events: EventType) -> Subscription:
    return Subscription(
        subscription_id=sub_id,
        key_id=key_id,
        url=f"https://example.com/{sub_id}",
        secret=new_secret(),
        events=frozenset(events or EventType),
        instances=frozenset({"*"}),
    )


def outbound(
    poster: FakePoster | None = None,
) -> tuple[Outbound, FakeSubscriptions, FakeJobs, FakePoster, ManualClock]:
    subs, jobs, poster = FakeSubscriptions(), FakeJobs(), poster or FakePoster()
    # Real time: the reference verifier checks the signed timestamp against its own clock.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    policy = RetryPolicy(schedule=(5, 300), retry_for=timedelta(hours=24))
    made = Outbound(subs, FakeDeliveryLog(), poster, jobs=jobs, clock=clock, policy=policy)
    return made, subs, jobs, poster, clock


async def test_an_outcome_goes_only_to_the_key_that_sent_the_command() -> None:
    """Alice's outcome reaches Alice's outcome subscription, not Bob's nor a status-only one."""
    made, subs, jobs, _, _ = outbound()
    for sub in (
        subscription("s1", ALICE, EventType.MESSAGE_OUTCOME),
        subscription("s2", ALICE, EventType.MESSAGE_STATUS),
        subscription("s3", BOB),
    ):
        await subs.add(sub, datetime.now(UTC))

    queued = await made.fan_out(f"zg.send.outcome.{ALICE}-p1", outcome(f"{ALICE}-p1"))

    assert queued == 1
    assert [job.subscription_id for job in jobs.jobs] == ["s1"]
    assert jobs.jobs[0].webhook_id == f"outcome-{ALICE}-p1-sent"


async def test_replayed_outcomes_are_never_sent_again() -> None:
    """A replay (the sender answering a repeated command) is not a new event."""
    made, subs, jobs, _, _ = outbound()
    await subs.add(subscription("s1", ALICE), datetime.now(UTC))

    queued = await made.fan_out(
        f"zg.send.outcome.{ALICE}-p1", outcome(f"{ALICE}-p1", replayed=True)
    )

    assert queued == 0
    assert jobs.jobs == []


async def test_failed_post_is_retried_on_schedule_then_delivered_once_and_signed() -> None:
    """500, then timeout, then 204: Postpone(5 s), Postpone(300 s), delivered; a later
    redelivery of the same job is a duplicate, never a second POST."""
    made, subs, jobs, poster, _ = outbound(FakePoster(statuses=[500, None]))
    sub = subscription("s1", ALICE)
    await subs.add(sub, datetime.now(UTC))
    await made.fan_out(f"zg.send.outcome.{ALICE}-p1", outcome(f"{ALICE}-p1"))
    job = jobs.jobs[0]

    delays = []
    for _ in range(2):
        with pytest.raises(Postpone) as later:
            await made.deliver(job)
        delays.append(later.value.delay)
    delivered = await made.deliver(job)
    again = await made.deliver(job)

    assert delays == [timedelta(seconds=5), timedelta(seconds=300)]
    assert (delivered, again) == ("delivered", "duplicate")
    assert len(poster.posts) == 3
    assert {headers["webhook-id"] for _, _, headers in poster.posts} == {job.webhook_id}
    _, body, headers = poster.posts[-1]
    Webhook(sub.secret).verify(body, headers)


async def test_delivery_gives_up_after_the_retry_window() -> None:
    """A receiver failing for the whole window: the last attempt past it gives up."""
    made, subs, jobs, _, clock = outbound(FakePoster(statuses=[500] * 10))
    await subs.add(subscription("s1", ALICE), datetime.now(UTC))
    await made.fan_out(f"zg.send.outcome.{ALICE}-p1", outcome(f"{ALICE}-p1"))

    with pytest.raises(Postpone):
        await made.deliver(jobs.jobs[0])
    clock.advance(timedelta(hours=24, seconds=1))
    result = await made.deliver(jobs.jobs[0])

    assert result == "gave_up"
    assert await made.deliver(jobs.jobs[0]) == "duplicate"


async def test_removed_subscription_stops_its_pending_retries() -> None:
    """A job whose subscription is gone is dropped without a POST."""
    made, subs, jobs, poster, _ = outbound()
    await subs.add(subscription("s1", ALICE), datetime.now(UTC))
    await made.fan_out(f"zg.send.outcome.{ALICE}-p1", outcome(f"{ALICE}-p1"))
    await subs.remove(ALICE, "s1", datetime.now(UTC))

    assert await made.deliver(jobs.jobs[0]) == "removed"
    assert poster.posts == []


def test_retry_delays_follow_the_standard_webhooks_schedule_and_last_one_repeats() -> None:
    """5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then 10 h again; the sum passes 24 h."""
    delays = [retry_delay(n) for n in range(1, 10)]

    assert delays[:7] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert delays[7:] == [36000, 36000]
    assert sum(delays[:7]) > 24 * 3600


def test_unknown_subjects_are_not_events() -> None:
    """Anything but outcomes, statuses and received messages is ignored."""
    assert to_event("zg.send.alert.inst-1", b"{}") is None
