"""Hand-written in-memory fakes of every health port, recording what happened.

`FakeRepository` keeps the same rules as the PostgreSQL adapter (claim gaps, restart cooldown,
notice claims and leases, abandoned notices of removed instances) so use cases can be tested
without servers; `test_*_real.py` cover the SQL itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from zapgate.contracts.health import (
    EvidenceSource,
    InstanceHealth,
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    InstanceSummary,
)
from zapgate.health.domain import Status
from zapgate.health.ports import (
    AlreadyRegisteredError,
    Change,
    CheckTarget,
    ClaimedNotice,
    HealthEvent,
    InstanceCensus,
    InstanceRecord,
    NoticeDelivery,
    NotRegisteredError,
)
from zapgate.runtime.clock import ManualClock
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import ProviderFailure
from zapgate.wapi.results import (
    Acknowledged,
    DeviceInfo,
    InstanceDetails,
    InstanceStatus,
    PairingCode,
    QrCode,
)


@dataclass
class FakeProvider:
    """Answers scripted per operation (a list is consumed call by call, its last answer
    repeating); records `(operation, instance_id)` calls."""

    status: InstanceStatus | ProviderFailure | list[InstanceStatus | ProviderFailure] = field(
        default_factory=lambda: InstanceStatus(connected=True)
    )
    details: InstanceDetails | ProviderFailure = field(
        default_factory=lambda: InstanceDetails(connected=True, connected_phone="5511999990000")
    )
    device_info: DeviceInfo | ProviderFailure = field(
        default_factory=lambda: DeviceInfo(
            connected_phone=None, lid=None, name=None, platform=None, status=None, is_business=None
        )
    )
    calls: list[tuple[str, str]] = field(default_factory=list)

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure:
        self.calls.append(("status-instance", credentials.instance_id))
        if isinstance(self.status, list):
            return self.status.pop(0) if len(self.status) > 1 else self.status[0]
        return self.status

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure:
        self.calls.append(("fetch-instance", credentials.instance_id))
        return self.details

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure:
        self.calls.append(("device", credentials.instance_id))
        return self.device_info

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        self.calls.append(("restart", credentials.instance_id))
        return Acknowledged(message="ok")

    async def qr_code(self, credentials: InstanceCredentials) -> QrCode | ProviderFailure:
        self.calls.append(("qr-code", credentials.instance_id))
        return QrCode(qrcode="data:image/png;base64,iVBORw0KGgo=", connected=False)

    async def pairing_code(
        self, credentials: InstanceCredentials, phone_number: str
    ) -> PairingCode | ProviderFailure:
        self.calls.append(("pairing-code", credentials.instance_id))
        del phone_number
        return PairingCode(code="K7QZ-4M2P")


@dataclass
class FakePublisher:
    """Records published events; `fail` makes the next publishes raise."""

    events: list[HealthEvent] = field(default_factory=list)
    fail: bool = False

    async def publish(self, event: HealthEvent) -> None:
        if self.fail:
            raise ConnectionError("bus down")
        self.events.append(event)


@dataclass
class AdvancingTimer:
    """`Timer` that moves a ManualClock instead of waiting; records every delay."""

    clock: ManualClock
    delays: list[timedelta] = field(default_factory=list)

    async def sleep(self, delay: timedelta) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)  # a real yield point, as a real sleep is


@dataclass
class FakeOperator:
    """`OperatorChannel` recording deliveries; `outcomes` scripts them (default delivered)."""

    target: str = "target-a"
    outcomes: list[NoticeDelivery] = field(default_factory=list)
    delivered: list[InstanceNotification] = field(default_factory=list)

    async def deliver(self, notification: InstanceNotification) -> NoticeDelivery:
        outcome = (
            self.outcomes.pop(0) if self.outcomes else NoticeDelivery(delivered=True, attempts=1)
        )
        if outcome.delivered:
            self.delivered.append(notification)
        return outcome


@dataclass
class _Row:
    display_name: str
    token: str
    managed: bool
    paused: bool = False
    status: Status = field(default_factory=Status)
    last_check_at: datetime | None = None
    last_restart_attempt_at: datetime | None = None


@dataclass
class _Notice:
    notification: InstanceNotification
    target: str | None
    published: bool = False
    delivered_at: datetime | None = None
    attempts: int = 0
    claimed_until: datetime | None = None
    next_attempt_at: datetime | None = None


class _Locked:
    def __init__(self, records: dict[str, InstanceRecord]) -> None:
        self._records = records
        self.changes: list[Change] = []

    @property
    def records(self) -> Mapping[str, InstanceRecord]:
        return self._records

    def save(self, change: Change) -> None:
        self.changes.append(change)


@dataclass
class FakeRepository:
    """In-memory `HealthRepository`."""

    rows: dict[str, _Row] = field(default_factory=dict)
    transitions: list[tuple[InstanceStateChanged, bool]] = field(default_factory=list)
    notices: list[_Notice] = field(default_factory=list)
    restart_claims: list[str] = field(default_factory=list)

    def add(self, instance_id: str, *, managed: bool = True, status: Status | None = None) -> None:
        self.rows[instance_id] = _Row(
            display_name=f"Loja {instance_id}",
            token="tok",
            managed=managed,
            status=status or Status(),
        )

    def state(self, instance_id: str) -> Status:
        return self.rows[instance_id].status

    def notice_kinds(self, instance_id: str | None = None) -> list[str]:
        return [
            n.notification.kind.value
            for n in self.notices
            if instance_id is None or n.notification.instance_id == instance_id
        ]

    # --- registry ---

    async def register(  # noqa: PLR0913 - the port's signature
        self,
        *,
        instance_id: str,
        display_name: str,
        token: str,
        managed: bool,
        replace_existing: bool,
        now: datetime,
    ) -> InstanceSummary:
        del now
        if instance_id in self.rows and not replace_existing:
            raise AlreadyRegisteredError(instance_id)
        row = self.rows.get(instance_id)
        if row is None:
            self.rows[instance_id] = _Row(display_name=display_name, token=token, managed=managed)
        else:
            row.display_name, row.token, row.managed = display_name, token, managed
        return self._summary(instance_id)

    async def set_paused(self, instance_id: str, *, paused: bool, now: datetime) -> InstanceSummary:
        del now
        self._row(instance_id).paused = paused
        return self._summary(instance_id)

    async def remove(self, instance_id: str) -> InstanceSummary:
        summary = self._summary(instance_id)
        del self.rows[instance_id]
        for notice in self.notices:
            if notice.notification.instance_id == instance_id and notice.delivered_at is None:
                notice.target = None
        return summary

    async def list_instances(self) -> list[InstanceSummary]:
        return [self._summary(i) for i in sorted(self.rows)]

    async def census(self) -> InstanceCensus:
        by_state: dict[tuple[str, str | None], int] = {}
        for row in self.rows.values():
            key = (row.status.state.value, row.status.reason)
            by_state[key] = by_state.get(key, 0) + 1
        episodes = sum(1 for row in self.rows.values() if row.status.in_episode)
        return InstanceCensus(by_state=by_state, open_episodes=episodes)

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        ids = (
            sorted(self.rows)
            if instance_id is None
            else [i for i in [instance_id] if i in self.rows]
        )
        out = []
        for i in ids:
            row = self.rows[i]
            out.append(
                InstanceHealth(
                    instance_id=i,
                    display_name=row.display_name,
                    managed=row.managed,
                    paused=row.paused,
                    state=row.status.state,
                    reason=row.status.reason,
                    phone=row.status.phone,
                    since=row.status.since,
                    last_check_at=row.last_check_at,
                    last_restart_attempt_at=row.last_restart_attempt_at,
                    outage_started_at=row.status.outage_started_at,
                    episode_flaps=row.status.flaps,
                    unstable=row.status.instability_notified,
                    blips=row.status.blips,
                )
            )
        return out

    # --- checks ---

    async def claim_due(self, *, now: datetime, min_gap: timedelta) -> list[CheckTarget]:
        due = [
            i
            for i, row in sorted(self.rows.items())
            if not row.paused and (row.last_check_at is None or row.last_check_at <= now - min_gap)
        ]
        for i in due:
            self.rows[i].last_check_at = now
        return [self._target(i) for i in due]

    async def mark_checking(
        self, instance_ids: Sequence[str] | None, *, now: datetime
    ) -> list[CheckTarget]:
        if instance_ids is None:
            ids = [i for i, row in sorted(self.rows.items()) if not row.paused]
        else:
            ids = [i for i in instance_ids if i in self.rows]
        for i in ids:
            self.rows[i].last_check_at = now
        return [self._target(i) for i in ids]

    async def target(self, instance_id: str) -> CheckTarget | None:
        return self._target(instance_id) if instance_id in self.rows else None

    async def status(self, instance_id: str) -> Status | None:
        row = self.rows.get(instance_id)
        return row.status if row is not None else None

    @asynccontextmanager
    async def locked(self, instance_ids: Sequence[str], *, now: datetime) -> AsyncIterator[_Locked]:
        unit = _Locked({i: self._record(i) for i in instance_ids if i in self.rows})
        yield unit
        self._save(unit.changes, now)

    @asynccontextmanager
    async def settling(self, *, now: datetime, settle_window: timedelta) -> AsyncIterator[_Locked]:
        ids = [
            i
            for i, row in self.rows.items()
            if row.status.state is InstanceState.CONNECTED
            and row.status.good_since is not None
            and row.status.good_since <= now - settle_window
        ]
        unit = _Locked({i: self._record(i) for i in ids})
        yield unit
        self._save(unit.changes, now)

    async def try_claim_restart(
        self, instance_id: str, *, now: datetime, cooldown: timedelta
    ) -> CheckTarget | None:
        row = self.rows.get(instance_id)
        if row is None or not row.managed or row.paused:
            return None
        last = row.last_restart_attempt_at
        if last is not None and last > now - cooldown:
            return None
        row.last_restart_attempt_at = now
        self.restart_claims.append(instance_id)
        return self._target(instance_id)

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]:
        mine = [event for event, _ in self.transitions if event.instance_id == instance_id]
        # Newest observation first; among equal times the later recorded first (id desc).
        order = sorted(enumerate(mine), key=lambda n: (n[1].observed_at, n[0]), reverse=True)
        return [event for _, event in order[:limit]]

    # --- outboxes ---

    async def publish_pending(
        self, publish: Callable[[HealthEvent], Awaitable[None]], *, now: datetime
    ) -> tuple[int, int]:
        del now
        counts = [0, 0]
        for index, (event, published) in enumerate(self.transitions):
            if not published:
                await publish(event)
                self.transitions[index] = (event, True)
                counts[0] += 1
        for notice in self.notices:
            if not notice.published:
                await publish(notice.notification)
                notice.published = True
                counts[1] += 1
        return counts[0], counts[1]

    async def claim_notices(
        self, *, target: str, now: datetime, lease: timedelta, max_attempts: int, limit: int = 50
    ) -> list[ClaimedNotice]:
        claimed = []
        for notice in self.notices:
            if (
                notice.target == target
                and notice.delivered_at is None
                and notice.attempts < max_attempts
                and (notice.next_attempt_at is None or notice.next_attempt_at <= now)
                and (notice.claimed_until is None or notice.claimed_until <= now)
            ):
                notice.claimed_until = now + lease
                claimed.append(
                    ClaimedNotice(notification=notice.notification, attempts=notice.attempts)
                )
        return claimed[:limit]

    async def record_notice_delivery(
        self,
        event_id: str,
        *,
        delivered: bool,
        attempts: int,
        now: datetime,
        next_attempt_at: datetime | None,
    ) -> None:
        for notice in self.notices:
            if str(notice.notification.event_id) == event_id:
                notice.attempts += attempts
                notice.claimed_until = None
                notice.next_attempt_at = next_attempt_at
                if delivered:
                    notice.delivered_at = now

    # --- helpers ---

    def _row(self, instance_id: str) -> _Row:
        row = self.rows.get(instance_id)
        if row is None:
            raise NotRegisteredError(instance_id)
        return row

    def _summary(self, instance_id: str) -> InstanceSummary:
        row = self._row(instance_id)
        return InstanceSummary(
            instance_id=instance_id,
            display_name=row.display_name,
            managed=row.managed,
            paused=row.paused,
        )

    def _record(self, instance_id: str) -> InstanceRecord:
        row = self.rows[instance_id]
        return InstanceRecord(
            instance_id=instance_id,
            display_name=row.display_name,
            managed=row.managed,
            paused=row.paused,
            status=row.status,
        )

    def _target(self, instance_id: str) -> CheckTarget:
        row = self.rows[instance_id]
        status = row.status
        return CheckTarget(
            instance_id=instance_id,
            token=row.token,
            managed=row.managed,
            state=status.state,
            reason=status.reason,
            since=status.since,
            phone=status.phone,
            phone_observed_at=status.phone_observed_at,
        )

    def _save(self, changes: list[Change], now: datetime) -> None:
        for change in changes:
            instance_id = change.record.instance_id
            row = self.rows[instance_id]
            row.status = change.decision.status
            transition = change.decision.transition
            observation = change.observation
            if transition is not None:
                event = InstanceStateChanged(
                    occurred_at=now,
                    instance_id=instance_id,
                    from_state=transition.from_state,
                    from_reason=transition.from_reason,
                    to_state=transition.to_state,
                    reason=transition.reason,
                    source=observation.source if observation else EvidenceSource.TICK,
                    phone=change.decision.status.phone,
                    observed_at=observation.observed_at if observation else now,
                )
                self.transitions.append((event, False))
            intent = change.decision.notification
            if intent is not None:
                notification = InstanceNotification(
                    event_id=uuid.uuid4(),
                    occurred_at=now,
                    instance_id=instance_id,
                    kind=intent.kind,
                    state=intent.state,
                    reason=intent.reason,
                    since=intent.since,
                    text=change.notice_text or "",
                    flaps=intent.flaps,
                )
                self.notices.append(
                    _Notice(notification=notification, target=change.webhook_target)
                )


__all__ = [
    "AdvancingTimer",
    "FakeOperator",
    "FakeProvider",
    "FakePublisher",
    "FakeRepository",
]
