"""PostgreSQL adapter: the registry, state changes in batches, the restart compare-and-set and
the outboxes of events and notifications. Health is the only writer of these tables."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zapgate.contracts.health import (
    EvidenceSource,
    InstanceHealth,
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    InstanceSummary,
    NotificationKind,
)
from zapgate.health.check import CheckTarget
from zapgate.health.domain import Decision, Observation, Status, apply_observation
from zapgate.health.tables import Instance, InstanceNotificationRow, InstanceTransition
from zapgate.health.texts import notification_text

instances: sa.Table = Instance.__table__  # type: ignore[attr-defined]
transitions: sa.Table = InstanceTransition.__table__  # type: ignore[attr-defined]
notifications: sa.Table = InstanceNotificationRow.__table__  # type: ignore[attr-defined]


class AlreadyRegisteredError(Exception):
    pass


class NotRegisteredError(Exception):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """The outcome of one observation on one instance, after it was stored."""

    instance_id: str
    display_name: str
    managed: bool
    paused: bool
    observation: Observation
    before: Status
    decision: Decision


def _status(row: sa.Row[Any]) -> Status:
    return Status(
        state=InstanceState(row.state),
        reason=row.reason,
        phone=row.phone,
        phone_observed_at=row.phone_observed_at,
        since=row.since,
        state_observed_at=row.state_observed_at,
        outage_started_at=row.outage_started_at,
        outage_notified=row.outage_notified,
    )


def _health(row: sa.Row[Any]) -> InstanceHealth:
    return InstanceHealth(
        instance_id=row.instance_id,
        display_name=row.display_name,
        managed=row.managed,
        paused=row.paused,
        state=InstanceState(row.state),
        reason=row.reason,
        phone=row.phone,
        since=row.since,
        last_check_at=row.last_check_at,
        last_restart_attempt_at=row.last_restart_attempt_at,
        outage_started_at=row.outage_started_at,
    )


def _summary(row: sa.Row[Any]) -> InstanceSummary:
    return InstanceSummary(
        instance_id=row.instance_id,
        display_name=row.display_name,
        managed=row.managed,
        paused=row.paused,
    )


_TARGET_COLUMNS = (
    instances.c.instance_id,
    instances.c.token,
    instances.c.state,
    instances.c.phone,
    instances.c.phone_observed_at,
)


def _target(row: sa.Row[Any, Any, Any, Any, Any]) -> CheckTarget:
    return CheckTarget(
        instance_id=row.instance_id,
        token=row.token,
        state=InstanceState(row.state),
        phone=row.phone,
        phone_observed_at=row.phone_observed_at,
    )


_ToEvent = Callable[[sa.Row[Any]], InstanceStateChanged | InstanceNotification]


class HealthRepository:
    """Every SQL statement health runs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- registry ------------------------------------------------------------------------------

    async def register(  # noqa: PLR0913 - the registry fields, keyword-only
        self,
        *,
        instance_id: str,
        display_name: str,
        token: str,
        managed: bool,
        replace_existing: bool,
        now: datetime,
    ) -> InstanceSummary:
        values = {
            "instance_id": instance_id,
            "display_name": display_name,
            "token": token,
            "managed": managed,
            "created_at": now,
            "updated_at": now,
        }
        insert = pg_insert(instances).values(values)
        if replace_existing:
            statement = insert.on_conflict_do_update(
                index_elements=[instances.c.instance_id],
                set_={
                    "display_name": display_name,
                    "token": token,
                    "managed": managed,
                    "updated_at": now,
                },
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=[instances.c.instance_id])
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement.returning(*instances.c))).first()
        if row is None:
            raise AlreadyRegisteredError(instance_id)
        return _summary(row)

    async def set_paused(self, instance_id: str, *, paused: bool, now: datetime) -> InstanceSummary:
        statement = (
            instances.update()
            .where(instances.c.instance_id == instance_id)
            .values(paused=paused, updated_at=now)
            .returning(*instances.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            raise NotRegisteredError(instance_id)
        return _summary(row)

    async def remove(self, instance_id: str) -> InstanceSummary:
        statement = (
            instances.delete().where(instances.c.instance_id == instance_id).returning(*instances.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            raise NotRegisteredError(instance_id)
        return _summary(row)

    async def list_instances(self) -> list[InstanceSummary]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(instances.select().order_by(instances.c.instance_id))
            return [_summary(row) for row in rows]

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        statement = instances.select().order_by(instances.c.instance_id)
        if instance_id is not None:
            statement = statement.where(instances.c.instance_id == instance_id)
        async with self._engine.connect() as conn:
            return [_health(row) for row in await conn.execute(statement)]

    # --- checks ------------------------------------------------------------------------------

    async def claim_due(self, *, now: datetime, min_gap: timedelta) -> list[CheckTarget]:
        """Claim every managed, unpaused instance not checked within `min_gap` (one statement).

        A redelivered tick, or a second replica handling a tick, finds nothing left to claim.
        """
        statement = (
            instances.update()
            .where(
                instances.c.managed,
                sa.not_(instances.c.paused),
                sa.or_(
                    instances.c.last_check_at.is_(None),
                    instances.c.last_check_at <= now - min_gap,
                ),
            )
            .values(last_check_at=now)
            .returning(*_TARGET_COLUMNS)
        )
        async with self._engine.begin() as conn:
            return [_target(row) for row in await conn.execute(statement)]

    async def mark_checking(
        self, instance_ids: Sequence[str] | None, *, now: datetime
    ) -> list[CheckTarget]:
        """Targets for a check now (one instance or every managed one), stamping last_check_at."""
        statement = instances.update().values(last_check_at=now).returning(*_TARGET_COLUMNS)
        if instance_ids is None:
            statement = statement.where(instances.c.managed)
        else:
            statement = statement.where(instances.c.instance_id.in_(list(instance_ids)))
        async with self._engine.begin() as conn:
            return [_target(row) for row in await conn.execute(statement)]

    async def target(self, instance_id: str) -> CheckTarget | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_TARGET_COLUMNS).where(instances.c.instance_id == instance_id)
                )
            ).first()
        return _target(row) if row is not None else None

    # --- state -------------------------------------------------------------------------------

    async def apply(
        self, observations: Sequence[tuple[str, Observation]], *, now: datetime
    ) -> list[Applied]:
        """Apply observations in one transaction, rows locked; unknown instances are skipped."""
        if not observations:
            return []
        ids = sorted({instance_id for instance_id, _ in observations})
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                instances.select()
                .where(instances.c.instance_id.in_(ids))
                .order_by(instances.c.instance_id)  # one lock order: no deadlocks
                .with_for_update()
            )
            current = {row.instance_id: row for row in rows}
            statuses = {instance_id: _status(row) for instance_id, row in current.items()}
            applied: list[Applied] = []
            for instance_id, observation in observations:
                row = current.get(instance_id)
                if row is None:
                    continue
                before = statuses[instance_id]
                decision = apply_observation(before, observation)
                statuses[instance_id] = decision.status
                applied.append(
                    Applied(
                        instance_id=instance_id,
                        display_name=row.display_name,
                        managed=row.managed,
                        paused=row.paused,
                        observation=observation,
                        before=before,
                        decision=decision,
                    )
                )
            await self._store(
                conn, applied, statuses, {i: _status(r) for i, r in current.items()}, now
            )
        return applied

    async def _store(
        self,
        conn: AsyncConnection,
        applied: list[Applied],
        statuses: dict[str, Status],
        originals: dict[str, Status],
        now: datetime,
    ) -> None:
        updates = [
            {"b_id": instance_id, **_status_values(status), "updated_at": now}
            for instance_id, status in statuses.items()
            if status != originals[instance_id]
        ]
        if updates:
            await conn.execute(
                instances.update()
                .where(instances.c.instance_id == sa.bindparam("b_id"))
                .values({key: sa.bindparam(key) for key in updates[0] if key != "b_id"}),
                updates,
            )
        transition_rows = [
            _transition_row(item, now) for item in applied if item.decision.transition is not None
        ]
        if transition_rows:
            await conn.execute(transitions.insert(), transition_rows)
        notification_rows = [
            _notification_row(item, now)
            for item in applied
            if item.decision.notification is not None
        ]
        if notification_rows:
            await conn.execute(notifications.insert(), notification_rows)

    async def try_claim_restart(
        self, instance_id: str, *, now: datetime, cooldown: timedelta
    ) -> CheckTarget | None:
        """Compare-and-set on `last_restart_attempt_at`: one winner per cooldown and replicas."""
        statement = (
            instances.update()
            .where(
                instances.c.instance_id == instance_id,
                instances.c.managed,
                sa.not_(instances.c.paused),
                sa.or_(
                    instances.c.last_restart_attempt_at.is_(None),
                    instances.c.last_restart_attempt_at <= now - cooldown,
                ),
            )
            .values(last_restart_attempt_at=now)
            .returning(*_TARGET_COLUMNS)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return _target(row) if row is not None else None

    # --- outboxes ----------------------------------------------------------------------------

    async def publish_pending(
        self,
        publish: Callable[[InstanceStateChanged | InstanceNotification], Awaitable[None]],
        *,
        now: datetime,
        limit: int = 500,
    ) -> tuple[int, int]:
        """Publish unpublished transitions and notifications, oldest first; mark them published.

        Rows stay locked (SKIP LOCKED) while published, so two replicas never race on one row;
        a publish that fails leaves its row for the next sweep (same Nats-Msg-Id: deduped).
        """
        counts = []
        to_events: tuple[tuple[sa.Table, _ToEvent], ...] = (
            (transitions, _state_changed),
            (notifications, _notification),
        )
        for table, to_event in to_events:
            async with self._engine.begin() as conn:
                rows = list(
                    await conn.execute(
                        table.select()
                        .where(table.c.published_at.is_(None))
                        .order_by(table.c.id)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                )
                done: list[int] = []
                try:
                    for row in rows:
                        await publish(to_event(row))
                        done.append(row.id)
                finally:
                    if done:
                        await conn.execute(
                            table.update().where(table.c.id.in_(done)).values(published_at=now)
                        )
            counts.append(len(done))
        return counts[0], counts[1]

    async def undelivered_notifications(
        self, *, max_attempts: int, limit: int = 100
    ) -> list[InstanceNotification]:
        statement = (
            notifications.select()
            .where(
                notifications.c.webhook_delivered_at.is_(None),
                notifications.c.webhook_attempts < max_attempts,
            )
            .order_by(notifications.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_notification(row) for row in await conn.execute(statement)]

    async def record_webhook_delivery(
        self, event_id: str, *, delivered: bool, attempts: int, now: datetime
    ) -> None:
        values: dict[str, Any] = {"webhook_attempts": notifications.c.webhook_attempts + attempts}
        if delivered:
            values["webhook_delivered_at"] = now
        async with self._engine.begin() as conn:
            await conn.execute(
                notifications.update().where(notifications.c.event_id == event_id).values(values)
            )


def _status_values(status: Status) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "reason": status.reason,
        "phone": status.phone,
        "phone_observed_at": status.phone_observed_at,
        "since": status.since,
        "state_observed_at": status.state_observed_at,
        "outage_started_at": status.outage_started_at,
        "outage_notified": status.outage_notified,
    }


def _transition_row(item: Applied, now: datetime) -> dict[str, Any]:
    transition = item.decision.transition
    assert transition is not None  # noqa: S101 - filtered by the caller
    return {
        "event_id": str(uuid.uuid4()),
        "instance_id": item.instance_id,
        "from_state": transition.from_state.value,
        "from_reason": transition.from_reason,
        "to_state": transition.to_state.value,
        "reason": transition.reason,
        "source": item.observation.source.value,
        "phone": item.decision.status.phone,
        "observed_at": item.observation.observed_at,
        "recorded_at": now,
    }


def _notification_row(item: Applied, now: datetime) -> dict[str, Any]:
    intent = item.decision.notification
    assert intent is not None  # noqa: S101 - filtered by the caller
    return {
        "event_id": str(uuid.uuid4()),
        "instance_id": item.instance_id,
        "kind": intent.kind.value,
        "state": intent.state.value,
        "reason": intent.reason,
        "since": intent.since,
        "text": notification_text(
            intent.kind,
            item.display_name,
            item.instance_id,
            intent.state,
            intent.reason,
            intent.since,
        ),
        "created_at": now,
    }


def _state_changed(row: sa.Row[Any]) -> InstanceStateChanged:
    return InstanceStateChanged(
        event_id=uuid.UUID(row.event_id),
        occurred_at=row.recorded_at,
        instance_id=row.instance_id,
        from_state=InstanceState(row.from_state),
        from_reason=row.from_reason,
        to_state=InstanceState(row.to_state),
        reason=row.reason,
        source=EvidenceSource(row.source),
        phone=row.phone,
        observed_at=row.observed_at,
    )


def _notification(row: sa.Row[Any]) -> InstanceNotification:
    return InstanceNotification(
        event_id=uuid.UUID(row.event_id),
        occurred_at=row.created_at,
        instance_id=row.instance_id,
        kind=NotificationKind(row.kind),
        state=InstanceState(row.state),
        reason=row.reason,
        since=row.since,
        text=row.text,
    )


__all__ = ["AlreadyRegisteredError", "Applied", "HealthRepository", "NotRegisteredError"]
