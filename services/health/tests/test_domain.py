"""The pure state machine: every state, every kind of evidence, outages and late events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceState,
    NotificationKind,
)
from zapgate.health.domain import Ignored, Observation, Seen, Status, apply_observation

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PHONE = "5511999990000"
C = InstanceState.CONNECTED
D = InstanceState.DEGRADED
X = InstanceState.DISCONNECTED
U = InstanceState.UNKNOWN
INCOMPLETE = DegradedReason.SESSION_INCOMPLETE.value
TIMEOUT = DegradedReason.TIMEOUT_OR_GATEWAY.value
STALLED = DegradedReason.DELIVERY_STALLED.value
CREDENTIALS = DegradedReason.CREDENTIALS_REJECTED.value
REJECTED = DegradedReason.PROVIDER_REJECTED.value


def status(state: InstanceState, reason: str | None = None, **kwargs: object) -> Status:
    in_outage = state in {D, X}
    defaults: dict[str, object] = {
        "phone": PHONE if state is C or reason == STALLED else None,
        "state_observed_at": T0 if state is not U else None,
        "since": T0 if state is not U else None,
        "outage_started_at": T0 if in_outage else None,
        "outage_notified": in_outage,
    }
    defaults.update(kwargs)
    return Status(state=state, reason=reason, **defaults)  # type: ignore[arg-type]


def seen(kind: Seen, *, phone: str | None = None, at: datetime | None = None) -> Observation:
    return Observation(
        seen=kind,
        source=EvidenceSource.TICK,
        observed_at=at or T0 + timedelta(minutes=5),
        phone=phone,
    )


ALL_STATES = [
    status(U),
    status(C),
    status(D, INCOMPLETE),
    status(D, TIMEOUT),
    status(D, STALLED),
    status(D, CREDENTIALS),
    status(X),
]


@pytest.mark.parametrize("current", ALL_STATES, ids=lambda s: f"{s.state}-{s.reason}")
@pytest.mark.parametrize(
    ("kind", "phone", "expected"),
    [
        (Seen.DISCONNECTED, None, (X, None)),
        (Seen.UNREACHABLE, None, (D, TIMEOUT)),
        (Seen.CONNECTED_WITHOUT_PHONE, None, (D, INCOMPLETE)),
        (Seen.CREDENTIALS_REJECTED, None, (D, CREDENTIALS)),
        (Seen.PROVIDER_REJECTED, None, (D, REJECTED)),
    ],
)
def test_provider_evidence_moves_every_state_to_what_the_provider_said(
    current: Status, kind: Seen, phone: str | None, expected: tuple[InstanceState, str | None]
) -> None:
    """Disconnected, no answer, incomplete and refused answers win from any state."""
    decision = apply_observation(current, seen(kind, phone=phone))
    assert (decision.status.state, decision.status.reason) == expected
    assert decision.changed == ((current.state, current.reason) != expected)
    assert decision.restart_wanted == (expected[0] is X)


@pytest.mark.parametrize(
    "current",
    [s for s in ALL_STATES if s.reason != STALLED],
    ids=lambda s: f"{s.state}-{s.reason}",
)
def test_connected_with_phone_restores_connected_from_any_state(current: Status) -> None:
    """Provider connected and the phone known: `connected`, whatever came before."""
    decision = apply_observation(current, seen(Seen.CONNECTED, phone="5511888887777"))
    assert decision.status.state is C
    assert decision.status.reason is None
    assert decision.status.phone == "5511888887777"
    assert decision.status.phone_observed_at == T0 + timedelta(minutes=5)
    assert not decision.restart_wanted


def test_first_check_without_phone_is_session_incomplete_and_an_outage() -> None:
    """Unknown + connected without phone: degraded/SESSION_INCOMPLETE, outage notified once."""
    decision = apply_observation(status(U), seen(Seen.CONNECTED_WITHOUT_PHONE))
    assert decision.transition is not None
    assert decision.transition.from_state is U
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.OUTAGE
    assert decision.notification.since == T0 + timedelta(minutes=5)
    assert decision.status.outage_notified


def test_disconnect_of_a_connected_instance_starts_an_outage_and_wants_a_restart() -> None:
    """Connected -> disconnected: transition, outage notification, restart wanted."""
    at = T0 + timedelta(minutes=5)
    decision = apply_observation(status(C), seen(Seen.DISCONNECTED, at=at))
    assert decision.restart_wanted
    assert decision.status.since == at
    assert decision.status.outage_started_at == at
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.OUTAGE
    assert decision.notification.state is X


def test_an_outage_is_notified_once_however_many_observations_follow() -> None:
    """Degraded -> disconnected -> disconnected...: no second outage notification."""
    current = status(C)
    notifications = []
    kinds = [Seen.UNREACHABLE, Seen.DISCONNECTED, Seen.DISCONNECTED, Seen.UNREACHABLE]
    for minutes, kind in enumerate([*kinds, Seen.DISCONNECTED], start=1):
        decision = apply_observation(current, seen(kind, at=T0 + timedelta(minutes=minutes)))
        current = decision.status
        if decision.notification is not None:
            notifications.append(decision.notification)
    assert [n.kind for n in notifications] == [NotificationKind.OUTAGE]
    assert notifications[0].since == T0 + timedelta(minutes=1)
    assert current.outage_started_at == T0 + timedelta(minutes=1)


def test_recovery_ends_the_outage_with_one_recovered_notification() -> None:
    """Disconnected -> connected: one `recovered` notification carrying the outage start."""
    started = T0 - timedelta(hours=1)
    decision = apply_observation(
        status(X, outage_started_at=started), seen(Seen.CONNECTED, phone=PHONE)
    )
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.RECOVERED
    assert decision.notification.since == started
    assert decision.status.outage_started_at is None
    assert not decision.status.outage_notified
    again = apply_observation(
        decision.status, seen(Seen.CONNECTED, phone=PHONE, at=T0 + timedelta(minutes=9))
    )
    assert again.notification is None
    assert not again.changed


def test_observations_older_than_the_current_state_are_ignored() -> None:
    """A late disconnected webhook does not undo a newer connected check."""
    decision = apply_observation(status(C), seen(Seen.DISCONNECTED, at=T0 - timedelta(seconds=1)))
    assert decision.ignored is Ignored.LATE
    assert decision.status == status(C)
    assert not decision.restart_wanted


def test_a_confirming_observation_moves_state_observed_at_forward_without_a_transition() -> None:
    """Same state again: no transition, newer evidence time, so older events stay ignored."""
    at = T0 + timedelta(minutes=5)
    decision = apply_observation(status(C), seen(Seen.CONNECTED, phone=PHONE, at=at))
    assert not decision.changed
    assert decision.status.state_observed_at == at
    assert decision.status.since == T0


def test_a_connected_claim_without_phone_is_verified_before_being_believed() -> None:
    """A connected webhook without phone on a disconnected instance asks for verification."""
    decision = apply_observation(status(X), seen(Seen.CONNECTED_CLAIM))
    assert decision.verify_wanted
    assert not decision.changed
    assert decision.status == status(X)


def test_a_connected_claim_on_a_connected_instance_just_confirms_it() -> None:
    """Nothing to verify when we already know the session is complete."""
    decision = apply_observation(status(C), seen(Seen.CONNECTED_CLAIM))
    assert not decision.verify_wanted
    assert not decision.changed


def test_a_delivery_stall_degrades_a_connected_instance() -> None:
    """DeliverySignalled(stalled): connected -> degraded/DELIVERY_STALLED, an outage."""
    decision = apply_observation(status(C), seen(Seen.DELIVERY_STALLED))
    assert (decision.status.state, decision.status.reason) == (D, STALLED)
    assert decision.notification is not None
    assert decision.notification.reason == STALLED


def test_a_stall_is_not_cleared_by_the_provider_saying_connected() -> None:
    """The provider's `connected` is the claim the stall contradicts: still stalled."""
    decision = apply_observation(status(D, STALLED), seen(Seen.CONNECTED, phone=PHONE))
    assert (decision.status.state, decision.status.reason) == (D, STALLED)
    assert not decision.changed


def test_a_stall_is_cleared_by_a_resumed_signal() -> None:
    """DeliverySignalled(resumed) restores connected and ends the outage."""
    decision = apply_observation(status(D, STALLED), seen(Seen.DELIVERY_RESUMED))
    assert decision.status.state is C
    assert decision.notification is not None
    assert decision.notification.kind is NotificationKind.RECOVERED


def test_a_stall_is_cleared_by_a_proof_of_delivery() -> None:
    """A proof of life that proves a delivery restores connected."""
    observation = Observation(
        seen=Seen.CONNECTED,
        source=EvidenceSource.PROOF_OF_LIFE,
        observed_at=T0 + timedelta(minutes=1),
        phone=PHONE,
        proves_delivery=True,
    )
    decision = apply_observation(status(D, STALLED), observation)
    assert decision.status.state is C


def test_a_stall_signal_says_nothing_about_a_disconnected_instance() -> None:
    """Already disconnected: the stall is not applicable and changes nothing."""
    decision = apply_observation(status(X), seen(Seen.DELIVERY_STALLED))
    assert decision.ignored is Ignored.NOT_APPLICABLE
    assert not decision.changed


def test_resumed_without_a_stall_changes_nothing() -> None:
    """A `resumed` for an instance that is not stalled is not applicable."""
    decision = apply_observation(status(C), seen(Seen.DELIVERY_RESUMED))
    assert decision.ignored is Ignored.NOT_APPLICABLE


def test_resumed_without_a_known_phone_asks_for_verification() -> None:
    """Connected needs the phone: a resumed stall with no phone is verified first."""
    decision = apply_observation(status(D, STALLED, phone=None), seen(Seen.DELIVERY_RESUMED))
    assert decision.verify_wanted
    assert not decision.changed


def test_a_kept_phone_does_not_look_fresh() -> None:
    """A phone re-used because lookups failed keeps its old sighting time."""
    old = T0 - timedelta(hours=3)
    observation = Observation(
        seen=Seen.CONNECTED,
        source=EvidenceSource.TICK,
        observed_at=T0 + timedelta(minutes=1),
        phone=PHONE,
        phone_fresh=False,
    )
    decision = apply_observation(status(C, phone_observed_at=old), observation)
    assert decision.status.phone_observed_at == old


def test_a_stall_detected_before_the_last_tick_still_gates_the_instance() -> None:
    """A tick that landed between the stall's detection and its handling does not void it."""
    after_tick = status(C, state_observed_at=T0 + timedelta(minutes=10))
    decision = apply_observation(
        after_tick, seen(Seen.DELIVERY_STALLED, at=T0 + timedelta(minutes=9))
    )
    assert decision.ignored is None
    assert (decision.status.state, decision.status.reason) == (D, STALLED)


def test_a_resume_detected_before_the_last_tick_still_clears_the_stall() -> None:
    """Deliveries resuming is not made stale by a later provider check."""
    stalled = status(D, STALLED, state_observed_at=T0 + timedelta(minutes=10))
    decision = apply_observation(stalled, seen(Seen.DELIVERY_RESUMED, at=T0 + timedelta(minutes=9)))
    assert decision.status.state is C
