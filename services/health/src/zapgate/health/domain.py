"""Health's pure decisions: what one observation, or the passing of time, does to an instance.

No I/O here. The service asks the repository to lock and load instances, calls these functions,
and hands what they decide back to the repository to save; then it carries out their wishes
(confirm, verify, restart) and the outbox sends the notices.

Rules (issue 13, WAPI.md):
- **Our clock orders evidence.** `observed_at` is when zapgate checked or received the evidence,
  never the provider's `moment` (kept as data). Evidence older than the instance's last evidence
  is late and ignored; a live check is never late: it is the truth now.
- `connected` needs the provider's `connected: true` AND the instance's own phone. A claim of
  "connected" without a phone is verified with fetch-instance before it is believed.
- **An outage needs confirmation.** Evidence that a connected instance went bad (a failed check,
  a disconnect webhook, the sender's failed look) changes nothing by itself: it asks for a
  confirming live check. Only a bad confirming check moves the state; a good one makes the first
  a *blip*, logged and counted.
- **Episodes, not transitions.** An outage episode opens when an instance that could deliver
  becomes unable to (one outage notice). While it is open, good periods and new drops are flaps
  (counted; one instability notice when they reach the threshold). It closes when the session
  stayed good for the settle window (one recovery notice).
- **The stall gate cannot wedge.** `degraded/DELIVERY_STALLED` clears on fresh delivery evidence
  (received after the stall began), or on a live check with a freshly seen phone once the stall
  is older than the re-check window.
- Restarts are wished only for a live check that found the session disconnected (confirmed).
- A phone's age counts from when the provider or a webhook last showed it (`phone_fresh`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceState,
    NotificationKind,
)

OUTAGE_STATES = frozenset({InstanceState.DEGRADED, InstanceState.DISCONNECTED})
LIVE_SOURCES = frozenset({EvidenceSource.TICK, EvidenceSource.CHECK_NOW})
_STALLED = DegradedReason.DELIVERY_STALLED.value


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
    """Fresh delivery evidence: the sender's resumed signal or a receipt webhook."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One piece of evidence about one instance's session.

    `observed_at` is zapgate's clock: when health checked, or when zapgate received the
    evidence. `provider_moment` is the provider's own stamp, data only (never orders anything).
    """

    seen: Seen
    source: EvidenceSource
    observed_at: datetime
    phone: str | None = None
    phone_fresh: bool = True
    """False when `phone` is the one we already knew, not a new sighting of it."""
    proves_delivery: bool = False
    """The evidence shows a message of ours was delivered (clears DELIVERY_STALLED)."""
    live: bool = False
    """A live check health made against the provider just now."""
    confirming: bool = False
    """The confirming second check that follows a suspicion."""
    provider_moment: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The knobs of the decisions (from settings)."""

    settle_window: timedelta = timedelta(minutes=2)
    instability_threshold: int = 3
    stall_recheck_after: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """The state part of an instance row, episode included."""

    state: InstanceState = InstanceState.UNKNOWN
    reason: str | None = None
    phone: str | None = None
    phone_observed_at: datetime | None = None
    since: datetime | None = None
    state_observed_at: datetime | None = None
    outage_started_at: datetime | None = None
    """The open outage episode's start; None when no episode is open."""
    outage_notified: bool = False
    good_since: datetime | None = None
    """Inside an open episode: since when the session has been good again."""
    flaps: int = 0
    """Drops inside the open episode after it started."""
    instability_notified: bool = False
    blips: int = 0
    """Suspicions a confirming check did not confirm (lifetime count)."""

    @property
    def stalled(self) -> bool:
        return self.state is InstanceState.DEGRADED and self.reason == _STALLED

    @property
    def in_episode(self) -> bool:
        return self.outage_started_at is not None


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
    flaps: int = 0


class Ignored(StrEnum):
    LATE = "late"
    """Older than the instance's last evidence (by zapgate's clock)."""
    NOT_APPLICABLE = "not_applicable"
    """Says nothing about the current state (e.g. a stall while already disconnected)."""
    UNCONFIRMED = "unconfirmed"
    """A connected instance looked bad once: a confirming live check decides."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to store and what to do after an observation."""

    status: Status
    ignored: Ignored | None = None
    transition: Transition | None = None
    restart_wanted: bool = False
    verify_wanted: bool = False
    confirm_wanted: bool = False
    blip: bool = False
    """A confirming check found the session good: the suspicion was a blip."""
    notification: NotificationIntent | None = None

    @property
    def changed(self) -> bool:
        return self.transition is not None


def apply_observation(
    current: Status, observation: Observation, *, now: datetime, policy: Policy
) -> Decision:
    """Decide the next status of one instance from one observation (pure).

    `now` is health's clock; evidence stamped later than it is clamped to it.
    """
    obs = observation
    if obs.observed_at > now:
        obs = replace(obs, observed_at=now)
    if _late(current, obs, now):
        return Decision(status=current, ignored=Ignored.LATE)
    target = _target(current, obs, policy)
    if isinstance(target, Decision):
        return target
    state, reason, phone = target
    if _needs_confirmation(current, obs, state, reason):
        return Decision(status=current, ignored=Ignored.UNCONFIRMED, confirm_wanted=True)
    decision = _move(current, obs, (state, reason, phone), now=now, policy=policy)
    if obs.confirming and state is InstanceState.CONNECTED and current.state is state:
        status = replace(decision.status, blips=decision.status.blips + 1)
        return replace(decision, status=status, blip=True)
    return decision


def settle(current: Status, *, now: datetime, policy: Policy) -> Decision:
    """Close an open episode whose session stayed good for the settle window (pure)."""
    if (
        current.state is InstanceState.CONNECTED
        and current.good_since is not None
        and now - current.good_since >= policy.settle_window
    ):
        status, notification = _close_episode(current)
        return Decision(status=status, notification=notification)
    return Decision(status=current, ignored=Ignored.NOT_APPLICABLE)


def _late(current: Status, obs: Observation, now: datetime) -> bool:
    if obs.live or obs.seen in _DELIVERY_SIGNALS:
        # A live check is the truth now; a delivery signal sums up a window of sends.
        return False
    last = current.state_observed_at
    if last is None:
        return False
    # A last stamp in the future (stored by older code from a provider's clock) never
    # suppresses evidence: it counts as now.
    return obs.observed_at < min(last, now)


def _needs_confirmation(
    current: Status, obs: Observation, state: InstanceState, reason: str | None
) -> bool:
    could_deliver = current.state is InstanceState.CONNECTED
    # Outside evidence about an instance never checked yet is confirmed too: a phantom
    # disconnect must not open an outage on its own.
    unverified = current.state is InstanceState.UNKNOWN and not obs.live
    return (
        (could_deliver or unverified)
        and state in OUTAGE_STATES
        and reason != _STALLED
        and not obs.confirming
    )


_Target = tuple[InstanceState, str | None, str | None]

_DELIVERY_SIGNALS = frozenset({Seen.DELIVERY_STALLED, Seen.DELIVERY_RESUMED})

_DEGRADING: dict[Seen, DegradedReason] = {
    Seen.UNREACHABLE: DegradedReason.TIMEOUT_OR_GATEWAY,
    Seen.CREDENTIALS_REJECTED: DegradedReason.CREDENTIALS_REJECTED,
    Seen.PROVIDER_REJECTED: DegradedReason.PROVIDER_REJECTED,
}


def _target(current: Status, obs: Observation, policy: Policy) -> _Target | Decision:
    seen = obs.seen
    if seen in _DEGRADING:
        return InstanceState.DEGRADED, _DEGRADING[seen].value, current.phone
    if seen is Seen.DISCONNECTED:
        return InstanceState.DISCONNECTED, None, current.phone
    if seen is Seen.CONNECTED_WITHOUT_PHONE:
        return InstanceState.DEGRADED, DegradedReason.SESSION_INCOMPLETE.value, None
    if seen is Seen.CONNECTED:
        if current.stalled and not _lifts_stall(current, obs, policy):
            # Provider "connected" is the very claim a stall contradicts.
            return InstanceState.DEGRADED, _STALLED, obs.phone
        return InstanceState.CONNECTED, None, obs.phone
    return _claim_or_signal(current, obs)


def _claim_or_signal(current: Status, obs: Observation) -> _Target | Decision:
    seen = obs.seen
    if seen is Seen.CONNECTED_CLAIM:
        return _claim(current)
    if seen is Seen.DELIVERY_STALLED:
        if current.state in {InstanceState.CONNECTED, InstanceState.UNKNOWN} or current.stalled:
            return InstanceState.DEGRADED, _STALLED, current.phone
        return Decision(status=current, ignored=Ignored.NOT_APPLICABLE)
    # Seen.DELIVERY_RESUMED: fresh only when received after the stall began.
    fresh = current.since is None or obs.observed_at >= current.since
    if not current.stalled or not fresh:
        return Decision(status=current, ignored=Ignored.NOT_APPLICABLE)
    if current.phone:
        return InstanceState.CONNECTED, None, current.phone
    return Decision(status=current, verify_wanted=True)


def _claim(current: Status) -> _Target | Decision:
    if current.state is InstanceState.CONNECTED and current.phone:
        return current.state, current.reason, current.phone
    return Decision(status=current, verify_wanted=True)


def _lifts_stall(current: Status, obs: Observation, policy: Policy) -> bool:
    if obs.proves_delivery:
        return True
    stalled_for = obs.observed_at - (current.since or obs.observed_at)
    return obs.live and obs.phone_fresh and stalled_for >= policy.stall_recheck_after


def stall_recheck_due(current: Status, *, now: datetime, policy: Policy) -> bool:
    """A stalled instance whose stall is older than the re-check window: its next check looks
    the phone up, so a complete session can lift the stall."""
    return (
        current.stalled
        and current.since is not None
        and now - current.since >= policy.stall_recheck_after
    )


def _move(
    current: Status, obs: Observation, target: _Target, *, now: datetime, policy: Policy
) -> Decision:
    state, reason, phone = target
    at = obs.observed_at
    last = current.state_observed_at
    # Monotonic per instance, except that a stamp from the future (a provider's clock stored
    # by older code) is replaced by ours.
    observed_at = at if last is None or last <= at or last > now else last
    phone_observed_at = current.phone_observed_at
    if obs.phone is not None and obs.phone_fresh and phone == obs.phone:
        phone_observed_at = at
    elif phone is None:
        phone_observed_at = None
    status = replace(
        current, phone=phone, phone_observed_at=phone_observed_at, state_observed_at=observed_at
    )
    restart = state is InstanceState.DISCONNECTED and obs.live
    if (state, reason) == (current.state, current.reason):
        if state is InstanceState.CONNECTED:
            settled = settle(status, now=at, policy=policy)
            if settled.notification is not None:
                return settled
        return Decision(status=status, restart_wanted=restart)

    transition = Transition(
        from_state=current.state, from_reason=current.reason, to_state=state, reason=reason
    )
    status = replace(status, state=state, reason=reason, since=at)
    notification: NotificationIntent | None = None
    if state in OUTAGE_STATES:
        status, notification = _went_bad(
            status, current=current, state=state, reason=reason, at=at, policy=policy
        )
    elif state is InstanceState.CONNECTED and status.in_episode:
        status = replace(status, good_since=status.good_since or at)
        settled = settle(status, now=at, policy=policy)
        status, notification = settled.status, settled.notification
    return Decision(
        status=status, transition=transition, restart_wanted=restart, notification=notification
    )


def _went_bad(  # noqa: PLR0913 - one decision's inputs
    status: Status,
    *,
    current: Status,
    state: InstanceState,
    reason: str | None,
    at: datetime,
    policy: Policy,
) -> tuple[Status, NotificationIntent | None]:
    if not current.in_episode:
        opened = replace(
            status,
            outage_started_at=at,
            outage_notified=True,
            good_since=None,
            flaps=0,
            instability_notified=False,
        )
        return opened, NotificationIntent(
            kind=NotificationKind.OUTAGE, state=state, reason=reason, since=at
        )
    if current.good_since is None:
        return status, None  # bad -> another bad inside the episode
    flaps = current.flaps + 1
    status = replace(status, good_since=None, flaps=flaps)
    if flaps >= policy.instability_threshold and not current.instability_notified:
        since = current.outage_started_at or at
        return replace(status, instability_notified=True), NotificationIntent(
            kind=NotificationKind.UNSTABLE, state=state, reason=reason, since=since, flaps=flaps
        )
    return status, None


def _close_episode(current: Status) -> tuple[Status, NotificationIntent | None]:
    notification = None
    if current.outage_notified and current.outage_started_at is not None:
        notification = NotificationIntent(
            kind=NotificationKind.RECOVERED,
            state=InstanceState.CONNECTED,
            reason=None,
            since=current.outage_started_at,
            flaps=current.flaps,
        )
    closed = replace(
        current,
        outage_started_at=None,
        outage_notified=False,
        good_since=None,
        flaps=0,
        instability_notified=False,
    )
    return closed, notification
