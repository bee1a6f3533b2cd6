"""The pure decisions: evidence order, confirmation, episodes, the stall gate, phone age."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceState,
    NotificationKind,
)
from zapgate.health.domain import (
    Decision,
    Ignored,
    Observation,
    Policy,
    Seen,
    Status,
    apply_observation,
    settle,
    stall_recheck_due,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PHONE = "5511999990000"
POLICY = Policy(
    settle_window=timedelta(minutes=2),
    instability_threshold=3,
    stall_recheck_after=timedelta(minutes=10),
)
C = InstanceState.CONNECTED
D = InstanceState.DEGRADED
X = InstanceState.DISCONNECTED
U = InstanceState.UNKNOWN
INCOMPLETE = DegradedReason.SESSION_INCOMPLETE.value
TIMEOUT = DegradedReason.TIMEOUT_OR_GATEWAY.value
STALLED = DegradedReason.DELIVERY_STALLED.value
CREDENTIALS = DegradedReason.CREDENTIALS_REJECTED.value
REJECTED = DegradedReason.PROVIDER_REJECTED.value
BAD = [
    (Seen.DISCONNECTED, (X, None)),
    (Seen.UNREACHABLE, (D, TIMEOUT)),
    (Seen.CONNECTED_WITHOUT_PHONE, (D, INCOMPLETE)),
    (Seen.CREDENTIALS_REJECTED, (D, CREDENTIALS)),
    (Seen.PROVIDER_REJECTED, (D, REJECTED)),
]


def status(state: InstanceState, reason: str | None = None, **kwargs: object) -> Status:
    in_outage = state in {D, X}
    defaults: dict[str, object] = {
        "phone": PHONE if state is C or reason == STALLED else None,
        "phone_observed_at": T0 if state is C else None,
        "state_observed_at": T0 if state is not U else None,
        "since": T0 if state is not U else None,
        "outage_started_at": T0 if in_outage else None,
        "outage_notified": in_outage,
    }
    defaults.update(kwargs)
    return Status(state=state, reason=reason, **defaults)  # type: ignore[arg-type]


def check(
    kind: Seen,
    *,
    at: datetime | None = None,
    phone: str | None = None,
    confirming: bool = False,
    fresh: bool = True,
) -> Observation:
    return Observation(
        seen=kind,
        source=EvidenceSource.TICK,
        observed_at=at or T0 + timedelta(minutes=5),
        phone=phone,
        phone_fresh=fresh,
        live=True,
        confirming=confirming,
    )


def outside(
    kind: Seen, *, at: datetime | None = None, source: EvidenceSource = EvidenceSource.WEBHOOK
) -> Observation:
    return Observation(seen=kind, source=source, observed_at=at or T0 + timedelta(minutes=5))


def decide(current: Status, obs: Observation, now: datetime | None = None) -> Decision:
    return apply_observation(current, obs, now=now or obs.observed_at, policy=POLICY)


# --- a. our clock orders evidence ---------------------------------------------------------------


def test_evidence_older_than_the_last_is_late_and_ignored() -> None:
    """A disconnect webhook received before the last check changes nothing."""
    decision = decide(status(C), outside(Seen.DISCONNECTED, at=T0 - timedelta(seconds=1)), T0)
    assert decision.ignored is Ignored.LATE
    assert decision.status == status(C)


def test_evidence_in_the_same_instant_as_the_last_check_is_not_late() -> None:
    """Equal stamps are not late: only strictly older evidence is dropped."""
    decision = decide(status(X), outside(Seen.CONNECTED, at=T0), T0)
    assert decision.ignored is None


def test_a_future_stamp_is_clamped_to_our_clock() -> None:
    """Evidence claiming to be from 3 h ahead is stored as now, not as the future."""
    now = T0 + timedelta(minutes=1)
    proof = replace(outside(Seen.CONNECTED, at=T0 + timedelta(hours=3)), phone=PHONE)
    decision = decide(status(X), proof, now)
    assert decision.status.state_observed_at == now
    assert decision.status.phone_observed_at == now


def test_a_stored_future_stamp_never_suppresses_a_check_or_later_evidence() -> None:
    """A row stamped 3 h ahead (old data) neither blocks a live check nor fresher webhooks."""
    skewed = status(C, state_observed_at=T0 + timedelta(hours=3))
    now = T0 + timedelta(minutes=1)
    confirmed = decide(skewed, check(Seen.DISCONNECTED, at=now, confirming=True), now)
    assert confirmed.status.state is X
    assert confirmed.status.state_observed_at == now
    webhook = decide(skewed, outside(Seen.DISCONNECTED, at=now), now)
    assert webhook.ignored is Ignored.UNCONFIRMED


# --- b/d. an outage needs confirmation --------------------------------------------------------


@pytest.mark.parametrize(("kind", "expected"), BAD)
def test_one_bad_check_of_a_connected_instance_only_asks_for_confirmation(
    kind: Seen, expected: tuple[InstanceState, str | None]
) -> None:
    """First bad look: no state change, no notice, no restart; a confirming check is wanted."""
    decision = decide(status(C), check(kind))
    assert decision.confirm_wanted
    assert decision.ignored is Ignored.UNCONFIRMED
    assert decision.status == status(C)
    assert (decision.transition, decision.notification, decision.restart_wanted) == (
        None,
        None,
        False,
    )
    confirmed = decide(status(C), check(kind, confirming=True))
    assert (confirmed.status.state, confirmed.status.reason) == expected
    assert confirmed.notification is not None
    assert confirmed.notification.kind is NotificationKind.OUTAGE
    assert confirmed.restart_wanted == (expected[0] is X)


@pytest.mark.parametrize(
    "source",
    [EvidenceSource.WEBHOOK, EvidenceSource.SENDER_PREFLIGHT],
)
def test_outside_evidence_of_a_drop_asks_for_a_live_check_and_never_a_restart(
    source: EvidenceSource,
) -> None:
    """A disconnect webhook or the sender's look: confirm first, restart only from a check."""
    for current in (status(C), status(U)):
        decision = decide(current, outside(Seen.DISCONNECTED, source=source))
        assert decision.confirm_wanted
        assert not decision.restart_wanted
        assert decision.status == current


def test_a_good_confirming_check_is_a_blip_counted_on_the_instance() -> None:
    """The confirming check finds the session good: a blip, counted, nothing else."""
    decision = decide(status(C, blips=2), check(Seen.CONNECTED, phone=PHONE, confirming=True))
    assert decision.blip
    assert decision.status.blips == 3
    assert decision.transition is None
    assert decision.notification is None


@pytest.mark.parametrize("current", [status(D, TIMEOUT), status(X), status(U)])
@pytest.mark.parametrize(("kind", "expected"), BAD)
def test_a_check_of_an_instance_that_could_not_deliver_needs_no_confirmation(
    current: Status, kind: Seen, expected: tuple[InstanceState, str | None]
) -> None:
    """Already bad, or never checked: the check's verdict stands at once."""
    decision = decide(current, check(kind))
    assert not decision.confirm_wanted
    assert (decision.status.state, decision.status.reason) == expected
    assert decision.restart_wanted == (expected[0] is X)


def test_a_disconnect_webhook_on_a_disconnected_instance_restarts_nothing() -> None:
    """Restarts are wished by live checks only."""
    decision = decide(status(X), outside(Seen.DISCONNECTED))
    assert not decision.restart_wanted


# --- c. episodes, not transitions -------------------------------------------------------------


def _run(current: Status, steps: list[tuple[int, Observation]]) -> tuple[Status, list[str]]:
    notices: list[str] = []
    for seconds, obs in steps:
        at = T0 + timedelta(seconds=seconds)
        decision = decide(current, replace(obs, observed_at=at), at)
        current = decision.status
        if decision.notification is not None:
            notices.append(decision.notification.kind.value)
    return current, notices


def test_five_flaps_two_seconds_apart_are_one_episode_with_one_instability_notice() -> None:
    """5 confirmed drop/return pairs: outage once, unstable once, no recovery inside 2 min."""
    steps: list[tuple[int, Observation]] = []
    for n in range(5):
        steps.append((4 * n + 1, check(Seen.DISCONNECTED, confirming=True)))
        steps.append((4 * n + 3, check(Seen.CONNECTED, phone=PHONE)))
    current, notices = _run(status(C), steps)
    assert notices == ["outage", "unstable"]
    assert current.state is C
    assert current.flaps == 4
    assert current.in_episode
    assert current.good_since == T0 + timedelta(seconds=19)


def test_an_episode_closes_with_one_recovery_after_the_settle_window() -> None:
    """Good for 2 minutes: one recovered notice carrying the episode start and its flaps."""
    current = status(
        C, good_since=T0, flaps=4, instability_notified=True,
        outage_started_at=T0 - timedelta(minutes=1), outage_notified=True,
    )  # fmt: skip
    early = settle(current, now=T0 + timedelta(seconds=119), policy=POLICY)
    assert early.notification is None
    closed = settle(current, now=T0 + timedelta(minutes=2), policy=POLICY)
    assert closed.notification is not None
    assert closed.notification.kind is NotificationKind.RECOVERED
    assert closed.notification.since == T0 - timedelta(minutes=1)
    assert closed.notification.flaps == 4
    assert not closed.status.in_episode
    assert (closed.status.flaps, closed.status.instability_notified) == (0, False)


def test_a_check_past_the_settle_window_closes_the_episode_itself() -> None:
    """The next good check after the window closes it too (not only the settle sweep)."""
    current = status(C, good_since=T0, outage_started_at=T0 - timedelta(minutes=5))
    current = replace(current, outage_notified=True)
    decision = decide(current, check(Seen.CONNECTED, phone=PHONE, at=T0 + timedelta(minutes=3)))
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.RECOVERED


def test_a_recovery_opens_the_settle_window_and_sends_nothing_yet() -> None:
    """Disconnected -> connected: state is connected at once (sends flow), notice waits."""
    decision = decide(status(X), check(Seen.CONNECTED, phone=PHONE))
    assert decision.status.state is C
    assert decision.transition is not None
    assert decision.notification is None
    assert decision.status.good_since == T0 + timedelta(minutes=5)


def test_bad_to_other_bad_inside_an_episode_is_neither_a_flap_nor_a_notice() -> None:
    """Degraded -> disconnected -> degraded: still one outage, no flaps counted."""
    current, notices = _run(
        status(D, TIMEOUT),
        [(60, check(Seen.DISCONNECTED)), (120, check(Seen.UNREACHABLE))],
    )
    assert notices == []
    assert current.flaps == 0


def test_the_instability_threshold_is_configurable() -> None:
    """Threshold 1: the first flap sends the instability notice."""
    policy = replace(POLICY, instability_threshold=1)
    current = status(C, good_since=T0, outage_started_at=T0 - timedelta(minutes=1))
    current = replace(current, outage_notified=True)
    decision = apply_observation(
        current, check(Seen.DISCONNECTED, confirming=True), now=T0 + timedelta(minutes=1),
        policy=policy,
    )  # fmt: skip
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.UNSTABLE


# --- h. the stall gate cannot wedge ------------------------------------------------------------


def test_a_stall_is_not_cleared_by_a_plain_connected_check() -> None:
    """Provider `connected` is the claim a stall contradicts: still stalled inside the window."""
    decision = decide(status(D, STALLED), check(Seen.CONNECTED, phone=PHONE))
    assert (decision.status.state, decision.status.reason) == (D, STALLED)


def test_a_stall_older_than_the_recheck_window_clears_on_a_live_check_with_a_fresh_phone() -> None:
    """After 10 minutes, a live check that saw the phone again lifts the stall."""
    at = T0 + timedelta(minutes=10)
    assert stall_recheck_due(status(D, STALLED), now=at, policy=POLICY)
    decision = decide(status(D, STALLED), check(Seen.CONNECTED, phone=PHONE, at=at))
    assert decision.status.state is C
    stale = decide(status(D, STALLED), check(Seen.CONNECTED, phone=PHONE, at=at, fresh=False))
    assert stale.status.state is D


@pytest.mark.parametrize("source", [EvidenceSource.DELIVERY_TRACKING, EvidenceSource.WEBHOOK])
def test_fresh_delivery_evidence_clears_a_stall(source: EvidenceSource) -> None:
    """A resumed signal or a receipt received after the stall began restores connected."""
    decision = decide(status(D, STALLED), outside(Seen.DELIVERY_RESUMED, source=source))
    assert decision.status.state is C


def test_a_receipt_received_before_the_stall_began_does_not_clear_it() -> None:
    """Evidence older than the stall is not fresh."""
    old = outside(Seen.DELIVERY_RESUMED, at=T0 - timedelta(seconds=5))
    decision = decide(status(D, STALLED), old, T0 + timedelta(minutes=1))
    assert decision.ignored is Ignored.NOT_APPLICABLE


def test_a_stall_signal_degrades_a_connected_instance_without_confirmation() -> None:
    """The sender's stall sums up a window of sends: it applies at once."""
    decision = decide(status(C), outside(Seen.DELIVERY_STALLED))
    assert (decision.status.state, decision.status.reason) == (D, STALLED)
    assert decision.notification is not None


def test_a_stall_signal_says_nothing_about_a_disconnected_instance() -> None:
    """Already disconnected: not applicable."""
    decision = decide(status(X), outside(Seen.DELIVERY_STALLED))
    assert decision.ignored is Ignored.NOT_APPLICABLE


# --- k. phone age ------------------------------------------------------------------------------


def test_a_status_only_check_does_not_refresh_the_phone_age() -> None:
    """The known phone repeated by a status-only check keeps its old sighting time."""
    decision = decide(status(C), check(Seen.CONNECTED, phone=PHONE, fresh=False))
    assert decision.status.phone_observed_at == T0


def test_a_phone_shown_again_by_the_provider_or_a_webhook_is_fresh() -> None:
    """fetch-instance / device / connectedPhone reset the phone's age."""
    at = T0 + timedelta(minutes=5)
    decision = decide(status(C), check(Seen.CONNECTED, phone=PHONE, at=at))
    assert decision.status.phone_observed_at == at


# --- claims ------------------------------------------------------------------------------------


def test_a_connected_claim_without_phone_is_verified_before_being_believed() -> None:
    """A connected webhook without phone on a disconnected instance asks for verification."""
    decision = decide(status(X), outside(Seen.CONNECTED_CLAIM))
    assert decision.verify_wanted
    assert not decision.changed


def test_a_first_check_without_phone_is_an_incomplete_session_and_an_outage() -> None:
    """Unknown + connected without phone: degraded/SESSION_INCOMPLETE, outage notice."""
    decision = decide(status(U), check(Seen.CONNECTED_WITHOUT_PHONE))
    assert (decision.status.state, decision.status.reason) == (D, INCOMPLETE)
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.OUTAGE
