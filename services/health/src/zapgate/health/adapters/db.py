"""PostgreSQL adapter of `HealthRepository`: the registry, locked loads and saves of state, the
restart compare-and-set, and the outboxes of events and operator notices.

Health is the only writer of these tables. The repository decides nothing: it locks and loads
(`locked`, `settling`), the service decides with domain code, and the repository saves.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
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
from zapgate.health.domain import Status
from zapgate.health.ports import (
    AlreadyRegisteredError,
    Change,
    CheckTarget,
    ClaimedNotice,
    HealthEvent,
    InstanceCensus,
    InstanceRecord,
    NotRegisteredError,
)
from zapgate.health.tables import Instance, InstanceNotificationRow, InstanceTransition
from zapgate.runtime.token_crypto import DEV_TOKEN_KEY, TokenCipher

instances: sa.Table = Instance.__table__  # type: ignore[attr-defined]
transitions: sa.Table = InstanceTransition.__table__  # type: ignore[attr-defined]
notifications: sa.Table = InstanceNotificationRow.__table__  # type: ignore[attr-defined]


def _status(row: sa.Row[Any]) -> Status:
    return Status(
        state=_STATES[row.state],
        reason=row.reason,
        phone=row.phone,
        phone_observed_at=row.phone_observed_at,
        since=row.since,
        state_observed_at=row.state_observed_at,
        outage_started_at=row.outage_started_at,
        outage_notified=row.outage_notified,
        good_since=row.good_since,
        flaps=row.episode_flaps,
        instability_notified=row.instability_notified,
        blips=row.blip_count,
    )


def _record(row: sa.Row[Any]) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row.instance_id,
        display_name=row.display_name,
        managed=row.managed,
        paused=row.paused,
        status=_status(row),
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
        episode_flaps=row.episode_flaps,
        unstable=row.instability_notified,
        blips=row.blip_count,
        phone_observed_at=row.phone_observed_at,
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
    instances.c.managed,
    instances.c.state,
    instances.c.reason,
    instances.c.since,
    instances.c.phone,
    instances.c.phone_observed_at,
)


_RECORD_COLUMNS = tuple(
    column
    for column in instances.c
    if column.name
    not in {"token", "last_check_at", "last_restart_attempt_at", "created_at", "updated_at"}
)
"""What `locked` loads: the registry flags and the status, never the token."""

_TOKEN_CACHE_SIZE = 250_000

_STATES = {state.value: state for state in InstanceState}


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _json(rows: object) -> str:
    return json.dumps(rows, default=_json_default, separators=(",", ":"))


def _recordset(table: sa.Table, names: Sequence[str]) -> str:
    """`jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(<name> <type>, ...)` over `table`'s
    columns: a batch of rows travels as one JSON parameter (one statement, one round trip, no
    per-row bind parameters to render or per-element array encoding)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    spec = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in names)
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS v({spec})"


_STATUS_COLUMNS = (
    "state",
    "reason",
    "phone",
    "phone_observed_at",
    "since",
    "state_observed_at",
    "outage_started_at",
    "outage_notified",
    "good_since",
    "episode_flaps",
    "instability_notified",
    "blip_count",
)
_UPDATE_STATUSES = sa.text(  # our own column names only
    "UPDATE instances AS i SET "  # noqa: S608
    + ", ".join(f"{name} = v.{name}" for name in _STATUS_COLUMNS)
    + ", updated_at = :now FROM "
    + _recordset(instances, ("instance_id", *_STATUS_COLUMNS))
    + " WHERE i.instance_id = v.instance_id"
)
"""Every changed status of a batch in one statement."""


def _insert_rows(table: sa.Table, names: Sequence[str]) -> sa.TextClause:
    columns = ", ".join(names)
    return sa.text(
        f"INSERT INTO {table.name} ({columns}) "  # noqa: S608 - our own table and column names
        f"SELECT {columns} FROM {_recordset(table, names)}"
    )


_TRANSITION_COLUMNS = (
    "event_id",
    "instance_id",
    "from_state",
    "from_reason",
    "to_state",
    "reason",
    "source",
    "phone",
    "observed_at",
    "recorded_at",
)
_NOTIFICATION_COLUMNS = (
    "event_id",
    "instance_id",
    "kind",
    "state",
    "reason",
    "since",
    "flaps",
    "text",
    "created_at",
    "webhook_target",
)
_INSERT_TRANSITIONS = _insert_rows(transitions, _TRANSITION_COLUMNS)
_INSERT_NOTIFICATIONS = _insert_rows(notifications, _NOTIFICATION_COLUMNS)


def _target(row: sa.Row[Any, Any, Any, Any, Any, Any, Any, Any], token: str) -> CheckTarget:
    return CheckTarget(
        instance_id=row.instance_id,
        token=token,
        managed=row.managed,
        state=InstanceState(row.state),
        reason=row.reason,
        since=row.since,
        phone=row.phone,
        phone_observed_at=row.phone_observed_at,
    )


_ToEvent = Callable[[sa.Row[Any]], InstanceStateChanged | InstanceNotification]


class _Locked:
    """Loaded, locked records plus the changes to write when the transaction ends."""

    def __init__(self, records: dict[str, InstanceRecord]) -> None:
        self._records = records
        self.changes: list[Change] = []

    @property
    def records(self) -> Mapping[str, InstanceRecord]:
        return self._records

    def save(self, change: Change) -> None:
        self.changes.append(change)


class PostgresHealthRepository:
    """`HealthRepository` over PostgreSQL: every SQL statement health runs.

    Tokens are stored encrypted by `cipher` (default: the public dev key, for tests and
    benchmarks; the app passes `settings.token_cipher()`) and decrypted only for checks.
    """

    def __init__(self, engine: AsyncEngine, cipher: TokenCipher | None = None) -> None:
        self._engine = engine
        self._cipher = cipher or TokenCipher([DEV_TOKEN_KEY])
        # Stored ciphertext -> token. A tick needs every token, and decrypting costs about
        # 35 us of CPU per row (a third of a status call's client cost): decrypt each stored
        # ciphertext once. A new ciphertext (register, rotation) is a miss; the tokens are in
        # memory during a tick anyway, and this process holds the key that decrypts them all.
        self._tokens: dict[str, str] = {}

    def _target(self, row: sa.Row[Any, Any, Any, Any, Any, Any, Any, Any]) -> CheckTarget:
        token = self._tokens.get(row.token)
        if token is None:
            if len(self._tokens) >= _TOKEN_CACHE_SIZE:
                self._tokens.clear()
            token = self._tokens[row.token] = self._cipher.decrypt(row.token, allow_plaintext=True)
        return _target(row, token)

    async def reencrypt_tokens(self) -> int:
        """Encrypt under the newest key every token stored in clear (rows from before
        encryption) or under an older key (a key rotation); returns how many rows changed."""
        select = sa.select(instances.c.instance_id, instances.c.token)
        async with self._engine.begin() as conn:
            rows = (await conn.execute(select.with_for_update())).all()
            stale = [row for row in rows if self._cipher.needs_rotation(row.token)]
            for row in stale:
                await conn.execute(
                    instances.update()
                    .where(instances.c.instance_id == row.instance_id)
                    .values(token=self._cipher.rotate(row.token))
                )
        return len(stale)

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
        token = self._cipher.encrypt(token)
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
        abandon = (
            notifications.update()
            .where(
                notifications.c.instance_id == instance_id,
                notifications.c.webhook_delivered_at.is_(None),
            )
            .values(webhook_target=None)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
            if row is not None:
                # A removed instance's notices are never sent, even if it is added again.
                await conn.execute(abandon)
        if row is None:
            raise NotRegisteredError(instance_id)
        return _summary(row)

    async def list_instances(self) -> list[InstanceSummary]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(instances.select().order_by(instances.c.instance_id))
            return [_summary(row) for row in rows]

    async def census(self) -> InstanceCensus:
        statement = sa.select(
            instances.c.state,
            instances.c.reason,
            sa.func.count(),
            sa.func.count(instances.c.outage_started_at),
        ).group_by(instances.c.state, instances.c.reason)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return InstanceCensus(
            by_state={(row[0], row[1]): int(row[2]) for row in rows},
            open_episodes=sum(int(row[3]) for row in rows),
        )

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        statement = instances.select().order_by(instances.c.instance_id)
        if instance_id is not None:
            statement = statement.where(instances.c.instance_id == instance_id)
        async with self._engine.connect() as conn:
            return [_health(row) for row in await conn.execute(statement)]

    # --- checks ------------------------------------------------------------------------------

    async def claim_due(self, *, now: datetime, min_gap: timedelta) -> list[CheckTarget]:
        """Claim every unpaused instance, managed or not, not checked within `min_gap` (one
        statement). A redelivered tick, or a second replica handling a tick, finds nothing left.
        """
        statement = (
            instances.update()
            .where(
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
            return [self._target(row) for row in await conn.execute(statement)]

    async def mark_checking(
        self, instance_ids: Sequence[str] | None, *, now: datetime
    ) -> list[CheckTarget]:
        """Targets for a check now (the given ids, or every unpaused one); stamps last_check_at."""
        statement = instances.update().values(last_check_at=now).returning(*_TARGET_COLUMNS)
        if instance_ids is None:
            statement = statement.where(sa.not_(instances.c.paused))
        else:
            statement = statement.where(instances.c.instance_id.in_(list(instance_ids)))
        async with self._engine.begin() as conn:
            return [self._target(row) for row in await conn.execute(statement)]

    async def target(self, instance_id: str) -> CheckTarget | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_TARGET_COLUMNS).where(instances.c.instance_id == instance_id)
                )
            ).first()
        return self._target(row) if row is not None else None

    # --- state: lock and load, then save what the service decided ---------------------------

    async def status(self, instance_id: str) -> Status | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(instances.select().where(instances.c.instance_id == instance_id))
            ).first()
        return _status(row) if row is not None else None

    @asynccontextmanager
    async def locked(self, instance_ids: Sequence[str], *, now: datetime) -> AsyncIterator[_Locked]:
        """One transaction: the rows locked in one order (no deadlocks), changes saved at exit."""
        ids = sorted(set(instance_ids))
        async with self._engine.begin() as conn:
            wanted = sa.select(
                sa.func.jsonb_array_elements_text(sa.cast(sa.literal(_json(ids)), JSONB))
            )
            rows = await conn.execute(
                sa.select(*_RECORD_COLUMNS)
                .where(instances.c.instance_id.in_(wanted.scalar_subquery()))
                .order_by(instances.c.instance_id)
                .with_for_update()
            )
            unit = _Locked({row.instance_id: _record(row) for row in rows})
            yield unit
            await self._save(conn, unit.changes, now=now)

    @asynccontextmanager
    async def settling(self, *, now: datetime, settle_window: timedelta) -> AsyncIterator[_Locked]:
        """Episodes good for the settle window, locked (SKIP LOCKED: a busy row settles later)."""
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                instances.select()
                .where(
                    instances.c.state == InstanceState.CONNECTED.value,
                    instances.c.good_since <= now - settle_window,
                )
                .order_by(instances.c.instance_id)
                .with_for_update(skip_locked=True)
            )
            unit = _Locked({row.instance_id: _record(row) for row in rows})
            yield unit
            await self._save(conn, unit.changes, now=now)

    async def _save(self, conn: AsyncConnection, changes: list[Change], *, now: datetime) -> None:
        latest: dict[str, Status] = {}
        originals: dict[str, Status] = {}
        for change in changes:
            originals.setdefault(change.record.instance_id, change.record.status)
            latest[change.record.instance_id] = change.decision.status
        updates = [
            {"instance_id": instance_id, **_status_values(status)}
            for instance_id, status in latest.items()
            if status != originals[instance_id]
        ]
        if updates:
            await conn.execute(_UPDATE_STATUSES, {"rows": _json(updates), "now": now})
        transition_rows = [
            _transition_row(change, now) for change in changes if change.decision.transition
        ]
        if transition_rows:
            await conn.execute(_INSERT_TRANSITIONS, {"rows": _json(transition_rows)})
        notification_rows = [
            _notification_row(change, now) for change in changes if change.decision.notification
        ]
        if notification_rows:
            await conn.execute(_INSERT_NOTIFICATIONS, {"rows": _json(notification_rows)})

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
        return self._target(row) if row is not None else None

    # --- outboxes ----------------------------------------------------------------------------

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]:
        """The instance's last `limit` state changes, newest first (observed time, then id)."""
        t = transitions.c
        statement = (
            transitions.select()
            .where(t.instance_id == instance_id)
            .order_by(t.observed_at.desc(), t.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_state_changed(row) for row in rows]

    async def publish_pending(
        self,
        publish: Callable[[HealthEvent], Awaitable[None]],
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

    async def claim_notices(
        self, *, target: str, now: datetime, lease: timedelta, max_attempts: int, limit: int = 50
    ) -> list[ClaimedNotice]:
        """Claim due notices for `target` in one statement (SKIP LOCKED + a lease): of two
        flushes or two replicas, exactly one sends each notice."""
        due = (
            sa.select(notifications.c.id)
            .where(
                notifications.c.webhook_target == target,
                notifications.c.webhook_delivered_at.is_(None),
                notifications.c.webhook_attempts < max_attempts,
                sa.or_(
                    notifications.c.webhook_next_attempt_at.is_(None),
                    notifications.c.webhook_next_attempt_at <= now,
                ),
                sa.or_(
                    notifications.c.webhook_claimed_until.is_(None),
                    notifications.c.webhook_claimed_until <= now,
                ),
            )
            .order_by(notifications.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            notifications.update()
            .where(notifications.c.id.in_(due))
            .values(webhook_claimed_until=now + lease)
            .returning(*notifications.c)
        )
        async with self._engine.begin() as conn:
            rows = sorted(await conn.execute(statement), key=lambda row: row.id)
        return [
            ClaimedNotice(notification=_notification(row), attempts=row.webhook_attempts)
            for row in rows
        ]

    async def record_notice_delivery(
        self,
        event_id: str,
        *,
        delivered: bool,
        attempts: int,
        now: datetime,
        next_attempt_at: datetime | None,
    ) -> None:
        values: dict[str, Any] = {
            "webhook_attempts": notifications.c.webhook_attempts + attempts,
            "webhook_claimed_until": None,
            "webhook_next_attempt_at": next_attempt_at,
        }
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
        "good_since": status.good_since,
        "episode_flaps": status.flaps,
        "instability_notified": status.instability_notified,
        "blip_count": status.blips,
    }


def _transition_row(change: Change, now: datetime) -> dict[str, Any]:
    transition = change.decision.transition
    observation = change.observation
    assert transition is not None  # noqa: S101 - filtered by the caller
    return {
        "event_id": str(uuid.uuid4()),
        "instance_id": change.record.instance_id,
        "from_state": transition.from_state.value,
        "from_reason": transition.from_reason,
        "to_state": transition.to_state.value,
        "reason": transition.reason,
        "source": (observation.source if observation else EvidenceSource.TICK).value,
        "phone": change.decision.status.phone,
        "observed_at": observation.observed_at if observation else now,
        "recorded_at": now,
    }


def _notification_row(change: Change, now: datetime) -> dict[str, Any]:
    intent = change.decision.notification
    assert intent is not None  # noqa: S101 - filtered by the caller
    return {
        "event_id": str(uuid.uuid4()),
        "instance_id": change.record.instance_id,
        "kind": intent.kind.value,
        "state": intent.state.value,
        "reason": intent.reason,
        "since": intent.since,
        "flaps": intent.flaps,
        "text": change.notice_text or "",
        "created_at": now,
        "webhook_target": change.webhook_target,
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
        flaps=row.flaps,
    )


__all__ = ["PostgresHealthRepository"]
