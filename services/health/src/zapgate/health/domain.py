"""The state machine: one pure function decides what an observation does to an instance.

No I/O here. The service layer loads the current state (row locked), calls `apply_observation`,
stores what the decision says, and carries out its wishes (restart, verify, notify).

Rules (issue 4, WAPI.md):
- `connected` needs the provider's `connected: true` AND the instance's own phone.
- Observations older than `state_observed_at` are late and ignored (no flapping).
- A claim of "connected" without a phone (a connected webhook, a status-only preflight) is
  not believed: health verifies it with fetch-instance first.
- `degraded/DELIVERY_STALLED` (the sender saw deliveries stall) is left only by a
  `resumed` signal or a proof of delivery; a provider saying "connected" is exactly the claim
  the stall contradicts, so it does not clear it. A worse observation (disconnected, no answer,
  incomplete session) replaces the stall; the sender signals again if it persists.
- An outage is `degraded` or `disconnected`. Its start is notified once, its end once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceState,
    NotificationKind,
)

OUTAGE_STATES = frozenset({InstanceState.DEGRADED, InstanceState.DISCONNECTED})


class Seen(StrEnum):
    """What an observation says about the session."""

    CONNECTED = "connected"
    """Provider connected and the phone is known (`phone` set)."""
    CONNECTED_WITHOUT_PHONE = "connected_without_phone"
    """Provider connected; fetch-instance and device answered without a phone."""
    CONNECTED_CLAIM = "connected_claim"
    """Someone says connected but brought no phone: verify before believing."""
    DISCONNECTED = "disconnected"
    UNREACHABLE = "unreachable"
    """No answer, 5xx, HTML or an unreadable answer."""
    CREDENTIALS_REJECTED = "credentials_rejected"
    PROVIDER_REJECTED = "provider_rejected"
    DELIVERY_STALLED = "delivery_stalled"
    DELIVERY_RESUMED = "delivery_resumed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One piece of evidence about one instance's session, true at `observed_at`."""

    seen: Seen
    source: EvidenceSource
    observed_at: datetime
    phone: str | None = None
    phone_fresh: bool = True
    """False when `phone` is the one we already knew, not a new sighting of it."""
    proves_delivery: bool = False
    """The evidence shows a message of ours was delivered (clears DELIVERY_STALLED)."""
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """The state part of an instance row."""

    state: InstanceState = InstanceState.UNKNOWN
    reason: str | None = None
    phone: str | None = None
    phone_observed_at: datetime | None = None
    since: datetime | None = None
    state_observed_at: datetime | None = None
    outage_started_at: datetime | None = None
    outage_notified: bool = False

    @property
    def stalled(self) -> bool:
        return (
            self.state is InstanceState.DEGRADED
            and self.reason == DegradedReason.DELIVERY_STALLED.value
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    from_state: InstanceState
    from_reason: str | None
    to_state: InstanceState
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationIntent:
    kind: NotificationKind
    state: InstanceState
    reason: str | None
    since: datetime


class Ignored(StrEnum):
    LATE = "late"
    """Older than the current state's evidence."""
    NOT_APPLICABLE = "not_applicable"
    """Says nothing about the current state (e.g. a stall while already disconnected)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to store and what to do after an observation."""

    status: Status
    ignored: Ignored | None = None
    transition: Transition | None = None
    restart_wanted: bool = False
    verify_wanted: bool = False
    notification: NotificationIntent | None = None

    @property
    def changed(self) -> bool:
        return self.transition is not None


def apply_observation(current: Status, observation: Observation) -> Decision:
    """Decide the next status of one instance from one observation (pure)."""
    last = current.state_observed_at
    if (
        last is not None
        and observation.observed_at < last
        and observation.seen not in _DELIVERY_SIGNALS
    ):
        return Decision(status=current, ignored=Ignored.LATE)
    target = _target(current, observation)
    if isinstance(target, Decision):
        return target
    state, reason, phone = target
    return _move(current, observation, state, reason, phone)


_Target = tuple[InstanceState, str | None, str | None]

# A delivery signal sums up a window of sends, not the session at one instant: a tick that
# saw the provider "connected" after the window closed does not make the stall stale, so
# these are never dropped as late.
_DELIVERY_SIGNALS = frozenset({Seen.DELIVERY_STALLED, Seen.DELIVERY_RESUMED})


_DEGRADING: dict[Seen, DegradedReason] = {
    Seen.UNREACHABLE: DegradedReason.TIMEOUT_OR_GATEWAY,
    Seen.CREDENTIALS_REJECTED: DegradedReason.CREDENTIALS_REJECTED,
    Seen.PROVIDER_REJECTED: DegradedReason.PROVIDER_REJECTED,
}


def _target(current: Status, obs: Observation) -> _Target | Decision:
    seen = obs.seen
    if seen in _DEGRADING:
        return InstanceState.DEGRADED, _DEGRADING[seen].value, current.phone
    if seen is Seen.DISCONNECTED:
        return InstanceState.DISCONNECTED, None, current.phone
    if seen is Seen.CONNECTED_WITHOUT_PHONE:
        return InstanceState.DEGRADED, DegradedReason.SESSION_INCOMPLETE.value, None
    if seen is Seen.CONNECTED:
        if current.stalled and not obs.proves_delivery:
            # Provider "connected" is the very claim a stall contradicts.
            return InstanceState.DEGRADED, DegradedReason.DELIVERY_STALLED.value, obs.phone
        return InstanceState.CONNECTED, None, obs.phone
    return _claim_or_signal(current, seen)


def _claim_or_signal(current: Status, seen: Seen) -> _Target | Decision:
    if seen is Seen.CONNECTED_CLAIM:
        return _claim(current)
    if seen is Seen.DELIVERY_STALLED:
        if current.state in {InstanceState.CONNECTED, InstanceState.UNKNOWN} or current.stalled:
            return InstanceState.DEGRADED, DegradedReason.DELIVERY_STALLED.value, current.phone
        return Decision(status=current, ignored=Ignored.NOT_APPLICABLE)
    # Seen.DELIVERY_RESUMED
    if not current.stalled:
        return Decision(status=current, ignored=Ignored.NOT_APPLICABLE)
    if current.phone:
        return InstanceState.CONNECTED, None, current.phone
    return Decision(status=current, verify_wanted=True)


def _claim(current: Status) -> _Target | Decision:
    if current.state is InstanceState.CONNECTED and current.phone:
        return current.state, current.reason, current.phone
    return Decision(status=current, verify_wanted=True)


def _move(
    current: Status,
    obs: Observation,
    state: InstanceState,
    reason: str | None,
    phone: str | None,
) -> Decision:
    observed_at = max(obs.observed_at, current.state_observed_at or obs.observed_at)
    phone_observed_at = current.phone_observed_at
    if obs.phone is not None and obs.phone_fresh and phone == obs.phone:
        phone_observed_at = obs.observed_at
    elif phone is None:
        phone_observed_at = None
    status = replace(
        current, phone=phone, phone_observed_at=phone_observed_at, state_observed_at=observed_at
    )
    restart = state is InstanceState.DISCONNECTED
    if (state, reason) == (current.state, current.reason):
        return Decision(status=status, restart_wanted=restart)

    transition = Transition(
        from_state=current.state, from_reason=current.reason, to_state=state, reason=reason
    )
    status = replace(status, state=state, reason=reason, since=obs.observed_at)
    notification: NotificationIntent | None = None
    if state in OUTAGE_STATES:
        if current.outage_started_at is None:
            status = replace(status, outage_started_at=obs.observed_at, outage_notified=False)
        if not status.outage_notified:
            since = status.outage_started_at or obs.observed_at
            notification = NotificationIntent(
                kind=NotificationKind.OUTAGE, state=state, reason=reason, since=since
            )
            status = replace(status, outage_notified=True)
    elif state is InstanceState.CONNECTED and current.outage_started_at is not None:
        if current.outage_notified:
            notification = NotificationIntent(
                kind=NotificationKind.RECOVERED,
                state=state,
                reason=None,
                since=current.outage_started_at,
            )
        status = replace(status, outage_started_at=None, outage_notified=False)
    return Decision(
        status=status, transition=transition, restart_wanted=restart, notification=notification
    )
