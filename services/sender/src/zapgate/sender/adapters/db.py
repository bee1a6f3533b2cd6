"""The sender's PostgreSQL adapters: the command store and the read-only instance directory.

Every status change is a compare-and-set (`UPDATE ... WHERE status IN (...) RETURNING`), so two
deliveries of one command, or two replicas, can never both move it: exactly one wins.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from zapgate.contracts.health import InstanceState
from zapgate.contracts.webhooks import DeliveryStatus
from zapgate.runtime.token_crypto import DEV_TOKEN_KEY, TokenCipher
from zapgate.sender.domain import EarlyReceipt, InstanceView, StuckMessage
from zapgate.sender.ports import Claim, InstanceStuck, StoreUnavailableError
from zapgate.sender.tables import (
    DeliveryStallRow,
    EarlyReceiptRow,
    RowStatus,
    SendCommandRow,
    instance_gate_view,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from zapgate.contracts.sending import SendMessage

_COMMANDS = SendCommandRow.__table__  # type: ignore[attr-defined]
_STALLS = DeliveryStallRow.__table__  # type: ignore[attr-defined]
_EARLY = EarlyReceiptRow.__table__  # type: ignore[attr-defined]
_STATUS_TIME_COLUMN: dict[RowStatus, str] = {
    RowStatus.HELD: "held_at",
    RowStatus.SENDING: "sending_at",
    RowStatus.SENT: "sent_at",
    RowStatus.DELIVERED: "delivered_at",
    RowStatus.READ: "read_at",
    RowStatus.PLAYED: "played_at",
    RowStatus.FAILED: "failed_at",
    RowStatus.UNCERTAIN: "uncertain_at",
}


# The hot statements are built once and reused: values travel as bound parameters, so SQLAlchemy
# neither rebuilds them nor recomputes their cache key on every send.
@functools.cache
def _claim_statement(columns: tuple[str, ...]) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: a row back only for the first delivery."""
    return (
        insert(_COMMANDS)
        .values({column: sa.bindparam(column) for column in columns})
        .on_conflict_do_nothing(index_elements=["command_id"])
        .returning(*_COMMANDS.c)
    )


@functools.cache
def _move_statement(from_statuses: frozenset[str], columns: tuple[str, ...]) -> sa.Update:
    """The compare-and-set UPDATE for one shape of move (statuses it leaves, columns it sets)."""
    return (
        sa.update(_COMMANDS)
        .where(
            _COMMANDS.c.command_id == sa.bindparam("match_command_id"),
            _COMMANDS.c.status.in_(sorted(from_statuses)),
        )
        .values({column: sa.bindparam(f"set_{column}") for column in columns})
        .returning(*_COMMANDS.c)
    )


def _row(mapping: Any) -> SendCommandRow:  # noqa: ANN401 - a SQLAlchemy RowMapping
    return SendCommandRow(**dict(mapping))


@contextlib.asynccontextmanager
async def _translated(
    connection: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    # A lost server (refused, reset, restarting) is a `StoreUnavailableError` to the use cases,
    # which may wait for it; anything else (a constraint, a bad statement) stays what it is.
    try:
        async with connection as conn:
            yield conn
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
        raise StoreUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        raise


class _Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # One statement is atomic on its own: run it in autocommit, which spares the BEGIN and
        # the COMMIT/ROLLBACK psycopg sends around it (two round trips of three, per statement
        # on the send path). Same pool; the isolation level is reset when the connection returns.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return _translated(self._engine.begin())

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return _translated(self._engine.connect())

    def _single(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for work whose statements are each atomic alone (no transaction)."""
        return _translated(self._autocommit.connect())


class PostgresCommandStore(_Database):
    """`CommandStore` over PostgreSQL (SQLAlchemy Core: one statement per step, no ORM state)."""

    async def claim(
        self,
        command: SendMessage,
        now: datetime,
        *,
        sending: bool = False,
        session_health: str | None = None,
    ) -> Claim:
        values = {
            "command_id": command.command_id,
            "instance_id": command.instance_id,
            "phone": command.phone,
            "kind": command.body.kind.value,
            "body": command.body.model_dump(mode="json"),
            "quoted_message_id": command.quoted_message_id,
            "delay_message": command.delay_message,
            "correlation_id": command.correlation_id,
            "status": RowStatus.CLAIMED.value,
            "attempts": 0,
            "retry_of": command.retry_of,
            "hold_until": now + command.hold_for if command.hold_for > timedelta(0) else None,
            "created_at": now,
            "updated_at": now,
        }
        if sending:
            values |= {
                "status": RowStatus.SENDING.value,
                "sending_at": now,
                "session_health": session_health,
            }
        async with self._single() as conn:
            statement = _claim_statement(tuple(values))
            inserted = (await conn.execute(statement, values)).mappings().first()
            if inserted is not None:
                return Claim(new=True, row=_row(inserted))
            existing = (
                (
                    await conn.execute(
                        sa.select(_COMMANDS).where(_COMMANDS.c.command_id == command.command_id)
                    )
                )
                .mappings()
                .one()
            )
        return Claim(new=False, row=_row(existing))

    async def get(self, command_id: str) -> SendCommandRow | None:
        async with self._single() as conn:
            found = (
                (
                    await conn.execute(
                        sa.select(_COMMANDS).where(_COMMANDS.c.command_id == command_id)
                    )
                )
                .mappings()
                .first()
            )
        return _row(found) if found is not None else None

    async def move(
        self,
        command_id: str,
        *,
        from_statuses: Collection[RowStatus],
        to: RowStatus,
        now: datetime,
        **values: Any,  # noqa: ANN401 - column values, checked by the table
    ) -> SendCommandRow | None:
        changes: dict[str, Any] = {"status": to.value, "updated_at": now, **values}
        time_column = _STATUS_TIME_COLUMN.get(to)
        if time_column is not None and time_column not in changes:
            changes[time_column] = now
        statement = _move_statement(
            frozenset(status.value for status in from_statuses), tuple(sorted(changes))
        )
        parameters = {f"set_{column}": value for column, value in changes.items()}
        async with self._single() as conn:
            moved = (
                (await conn.execute(statement, {"match_command_id": command_id, **parameters}))
                .mappings()
                .first()
            )
        return _row(moved) if moved is not None else None

    async def by_provider_message_id(self, message_id: str) -> SendCommandRow | None:
        statement = sa.select(_COMMANDS).where(_COMMANDS.c.provider_message_id == message_id)
        async with self._single() as conn:
            found = (await conn.execute(statement)).mappings().first()
        return _row(found) if found is not None else None

    async def held(self, instance_id: str | None = None) -> list[SendCommandRow]:
        statement = sa.select(_COMMANDS).where(_COMMANDS.c.status == RowStatus.HELD.value)
        if instance_id is not None:
            statement = statement.where(_COMMANDS.c.instance_id == instance_id)
        statement = statement.order_by(_COMMANDS.c.created_at, _COMMANDS.c.command_id)
        async with self._connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_row(row) for row in rows]

    async def unalerted_stuck(self, sent_before: datetime) -> list[SendCommandRow]:
        statement = (
            sa.select(_COMMANDS)
            .where(
                _COMMANDS.c.status == RowStatus.SENT.value,
                _COMMANDS.c.sent_at < sent_before,
                _COMMANDS.c.stuck_alerted_at.is_(None),
            )
            .order_by(_COMMANDS.c.sent_at)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_row(row) for row in rows]

    async def mark_stuck_alerted(self, command_id: str, now: datetime) -> bool:
        statement = (
            sa.update(_COMMANDS)
            .where(
                _COMMANDS.c.command_id == command_id,
                _COMMANDS.c.stuck_alerted_at.is_(None),
            )
            .values(stuck_alerted_at=now)
            .returning(_COMMANDS.c.command_id)
        )
        async with self._begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def stuck_by_instance(
        self, sent_before: datetime, sent_after: datetime
    ) -> list[InstanceStuck]:
        stuck_statement = (
            sa.select(_COMMANDS.c.instance_id, _COMMANDS.c.command_id, _COMMANDS.c.sent_at)
            .where(
                _COMMANDS.c.status == RowStatus.SENT.value,
                _COMMANDS.c.sent_at < sent_before,
                _COMMANDS.c.sent_at >= sent_after,
            )
            .order_by(_COMMANDS.c.instance_id, _COMMANDS.c.sent_at)
        )
        async with self._connect() as conn:
            stuck_rows = (await conn.execute(stuck_statement)).all()
            grouped: dict[str, list[StuckMessage]] = {}
            for instance_id, command_id, sent_at in stuck_rows:
                grouped.setdefault(instance_id, []).append(
                    StuckMessage(command_id=command_id, sent_at=sent_at)
                )
            if not grouped:
                return []
            delivered = (
                await conn.execute(
                    sa.select(_COMMANDS.c.instance_id, sa.func.max(_COMMANDS.c.delivered_at))
                    .where(_COMMANDS.c.instance_id.in_(list(grouped)))
                    .group_by(_COMMANDS.c.instance_id)
                )
            ).all()
        last_delivery: dict[str, datetime | None] = {row[0]: row[1] for row in delivered}
        return [
            InstanceStuck(instance_id, stuck, last_delivery.get(instance_id))
            for instance_id, stuck in grouped.items()
        ]

    async def open_stall(self, instance_id: str, message_ids: list[str], now: datetime) -> bool:
        statement = (
            insert(_STALLS)
            .values(
                instance_id=instance_id, stalled_at=now, message_ids=message_ids, resumed_at=None
            )
            .on_conflict_do_update(
                index_elements=["instance_id"],
                set_={"stalled_at": now, "message_ids": message_ids, "resumed_at": None},
                where=_STALLS.c.resumed_at.is_not(None),
            )
            .returning(_STALLS.c.instance_id)
        )
        async with self._begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def close_stall(self, instance_id: str, now: datetime) -> list[str] | None:
        statement = (
            sa.update(_STALLS)
            .where(_STALLS.c.instance_id == instance_id, _STALLS.c.resumed_at.is_(None))
            .values(resumed_at=now)
            .returning(_STALLS.c.message_ids)
        )
        async with self._begin() as conn:
            closed = (await conn.execute(statement)).first()
        return list(closed[0]) if closed is not None else None

    async def keep_early_receipt(self, receipt: EarlyReceipt) -> None:
        statement = (
            insert(_EARLY)
            .values(
                message_id=receipt.message_id,
                status=receipt.status.value,
                status_raw=receipt.status_raw[:64],
                instance_id=receipt.instance_id,
                received_at=receipt.received_at,
            )
            .on_conflict_do_nothing(index_elements=["message_id", "status"])
        )
        async with self._single() as conn:
            await conn.execute(statement)

    async def early_receipts(self, message_id: str) -> list[EarlyReceipt]:
        statement = (
            sa.select(_EARLY)
            .where(_EARLY.c.message_id == message_id)
            .order_by(_EARLY.c.received_at, _EARLY.c.status)
        )
        async with self._single() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [
            EarlyReceipt(
                message_id=row["message_id"],
                status=DeliveryStatus(row["status"]),
                status_raw=row["status_raw"],
                instance_id=row["instance_id"],
                received_at=row["received_at"],
            )
            for row in rows
        ]

    async def drop_early_receipts(self, message_id: str) -> None:
        async with self._single() as conn:
            await conn.execute(sa.delete(_EARLY).where(_EARLY.c.message_id == message_id))

    async def expire_early_receipts(self, received_before: datetime) -> int:
        statement = sa.delete(_EARLY).where(_EARLY.c.received_at < received_before)
        async with self._begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount or 0)


_INSTANCE_VIEW = sa.select(instance_gate_view).where(
    instance_gate_view.c.instance_id == sa.bindparam("match_instance_id")
)


class PostgresInstanceDirectory(_Database):
    """Reads health's `instance_gate_view`; never writes anything of health's.

    The view's token is encrypted at rest; `cipher` (the app passes `settings.token_cipher()`;
    default: the public dev key of tests) decrypts it for the provider call only.
    """

    def __init__(self, engine: AsyncEngine, cipher: TokenCipher | None = None) -> None:
        super().__init__(engine)
        self._cipher = cipher or TokenCipher([DEV_TOKEN_KEY])

    async def get(self, instance_id: str) -> InstanceView | None:
        async with self._single() as conn:
            found = (
                (await conn.execute(_INSTANCE_VIEW, {"match_instance_id": instance_id}))
                .mappings()
                .first()
            )
        if found is None:
            return None
        return InstanceView(
            instance_id=found["instance_id"],
            token=self._cipher.decrypt(found["token"], allow_plaintext=True),
            paused=bool(found["paused"]),
            state=_state(found["state"]),
            reason=found["reason"],
            phone=found["phone"],
            last_check_at=found["last_check_at"],
        )


def _state(value: str | None) -> InstanceState | str:
    if value is None:
        return InstanceState.UNKNOWN
    try:
        return InstanceState(value)
    except ValueError:
        return value
