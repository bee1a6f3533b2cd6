"""The sender's PostgreSQL adapters: the command store and the read-only instance directory.

Every status change is a compare-and-set (`UPDATE ... WHERE status IN (...) RETURNING`), so two
deliveries of one command, or two replicas, can never both move it: exactly one wins.

The statements every send makes (the claim, the move that stores the answer, the look for
early receipts) go through `GroupCommit`: the items of many lanes that are ready together run
as one statement over a JSON array (`jsonb_to_recordset`), each row keeping its own
compare-and-set. A claim straight into `sending` also re-checks health's view in the same
statement (`claim_sending`), so a directory answer kept in memory can never make a false send.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert

from zapgate.contracts.health import InstanceState
from zapgate.contracts.webhooks import DeliveryStatus
from zapgate.runtime.token_crypto import DEV_TOKEN_KEY, TokenCipher
from zapgate.sender.adapters.batching import GroupCommit
from zapgate.sender.domain import EarlyReceipt, InstanceView, StuckMessage
from zapgate.sender.ports import Claim, InstanceStuck, StoreUnavailableError
from zapgate.sender.tables import (
    DeliveryStallRow,
    EarlyReceiptRow,
    RowStatus,
    SendCommandRow,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Sequence
    from contextlib import AbstractAsyncContextManager

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


def _claim_values(
    command: SendMessage,
    now: datetime,
    sending: bool,  # noqa: FBT001 - positional inside this module only
    session_health: str | None,
) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "instance_id": command.instance_id,
        "phone": command.phone,
        "kind": command.body.kind.value,
        "body": command.body.model_dump(mode="json"),
        "quoted_message_id": command.quoted_message_id,
        "delay_message": command.delay_message,
        "correlation_id": command.correlation_id,
        "status": (RowStatus.SENDING if sending else RowStatus.CLAIMED).value,
        "attempts": 0,
        "retry_of": command.retry_of,
        "hold_until": now + command.hold_for if command.hold_for > timedelta(0) else None,
        "created_at": now,
        "updated_at": now,
        "sending_at": now if sending else None,
        "session_health": session_health if sending else None,
    }


_ROW_MANAGER = sa.orm.instrumentation.manager_of_class(SendCommandRow)


def _row(mapping: Any) -> SendCommandRow:  # noqa: ANN401 - a SQLAlchemy RowMapping
    """A `SendCommandRow` holding a whole row the database returned, made without SQLModel's
    per-field `__setattr__` (about 30x faster; the profile at 500 instances had
    `SendCommandRow(**row)` at 13 % of the sender's time, two rows per send).

    The object is what `SendCommandRow(**row)` gives for a complete row: SQLAlchemy's instance
    state from the mapper's `new_instance()`, the values in `__dict__` (where both SQLAlchemy's
    attributes and pydantic read them), every field marked set. Table models skip validation
    in `__init__` too, so nothing is checked here that was checked before.
    """
    values = dict(mapping)
    if not _ROW_MANAGER.mapper.configured:
        # `SendCommandRow(...)` configures the mappers on its first call; `new_instance` does
        # not, and an unconfigured attribute cannot be read.
        sa.orm.configure_mappers()
    row = _ROW_MANAGER.new_instance()
    row.__dict__.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return row


@contextlib.asynccontextmanager
async def _translated(
    connection: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    # A lost server (refused, reset, restarting) is a `StoreUnavailableError` to the use cases,
    # which may wait for it; anything else (a constraint, a bad statement) stays what it is.
    try:
        async with connection as conn:
            yield conn
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError) as exc:
        # `sa.exc.TimeoutError`: no pooled connection came within the pool timeout. Left
        # untranslated, an accepted send's answer was not retried and its messageId was lost.
        raise StoreUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        raise


@contextlib.asynccontextmanager
async def driver_cursor(
    engine: AsyncEngine,
) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
    """A psycopg cursor (rows as dicts) on a pooled connection of `engine`, for the hot batch
    statements of every send: SQLAlchemy's execution and result layers (greenlet hops,
    execution context, result metadata, row mappings) were 11 % of the sender's CPU at 500
    instances, for statements that are plain SQL text with one JSON parameter anyway.

    The pool still hands out and takes back the connection. Errors keep the store's contract:
    a lost server is `StoreUnavailableError` and the connection is invalidated (the pool
    replaces it instead of handing it out again); anything else the database refuses is
    SQLAlchemy's wrapper of it (`sa.exc.DBAPIError`, e.g. `DataError`), as before.
    """
    async with _translated(engine.connect()) as conn:
        raw = await conn.get_raw_connection()
        driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
        try:
            async with driver.cursor(row_factory=dict_row) as cursor:
                yield cursor
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            await conn.invalidate(exc)
            raise StoreUnavailableError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc


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

    def _driver(self) -> AbstractAsyncContextManager[psycopg.AsyncCursor[dict[str, Any]]]:
        """A cursor of psycopg itself on a pooled autocommit connection (see `driver_cursor`)."""
        return driver_cursor(self._autocommit)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
_CLAIM_COLUMNS: tuple[str, ...] = (
    "command_id",
    "instance_id",
    "phone",
    "kind",
    "body",
    "quoted_message_id",
    "delay_message",
    "correlation_id",
    "status",
    "attempts",
    "retry_of",
    "hold_until",
    "created_at",
    "updated_at",
    "sending_at",
    "session_health",
)
# The fingerprint of one row of health's view: what the preflight read. The directory returns
# it as `InstanceView.version`; `claim_sending` compares it in the same statement as the insert.
_VIEW_VERSION = "md5(ROW({p}token, {p}paused, {p}state, {p}reason, {p}phone)::text)"


def _record_columns(columns: Sequence[str]) -> str:
    """`"name" TYPE, ...` of `send_commands` columns, for `jsonb_to_recordset(...) AS r(...)`."""
    return ", ".join(f'"{name}" {_COMMANDS.c[name].type.compile(dialect=_PG)}' for name in columns)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rows_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_default, ensure_ascii=False)


# Fixed names from this module only (table columns, statuses of `RowStatus`): no user input.
_CLAIM_SQL = f"""
    INSERT INTO send_commands ({", ".join(_CLAIM_COLUMNS)})
    SELECT {", ".join(f"r.{name}" for name in _CLAIM_COLUMNS)}
    FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb))
        AS r({_record_columns(_CLAIM_COLUMNS)}, view_version text)
    WHERE r.view_version IS NULL OR EXISTS (
        SELECT 1 FROM instance_gate_view AS g
        WHERE g.instance_id = r.instance_id AND {_VIEW_VERSION.format(p="g.")} = r.view_version
    )
    ON CONFLICT (command_id) DO NOTHING
    RETURNING *
    """  # noqa: S608 - see above
_EXISTING_SQL = "SELECT * FROM send_commands WHERE command_id = ANY(%(ids)s)"
_EARLY_SQL = (
    "SELECT message_id, status, status_raw, instance_id, received_at FROM send_early_receipts "
    "WHERE message_id = ANY(%(ids)s) ORDER BY received_at, status"
)


@functools.cache
def _move_sql(from_statuses: frozenset[str], columns: tuple[str, ...]) -> str:
    """The batched compare-and-set UPDATE for one shape of move (statuses left, columns set)."""
    assignments = ", ".join(f'"{name}" = r."{name}"' for name in columns)
    statuses = ", ".join(f"'{RowStatus(status).value}'" for status in sorted(from_statuses))
    return f"""
        UPDATE send_commands AS c SET {assignments}
        FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb))
            AS r(match_command_id text, {_record_columns(columns)})
        WHERE c.command_id = r.match_command_id AND c.status IN ({statuses})
        RETURNING c.*
        """  # noqa: S608 - fixed names of this module only


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, StoreUnavailableError)


@dataclass(frozen=True, slots=True)
class _ClaimItem:
    values: dict[str, Any]
    view_version: str | None
    gated: bool


@dataclass(frozen=True, slots=True)
class _MoveItem:
    command_id: str
    from_statuses: frozenset[str]
    changes: dict[str, Any]

    @property
    def shape(self) -> tuple[frozenset[str], tuple[str, ...]]:
        return self.from_statuses, tuple(sorted(self.changes))


class PostgresCommandStore(_Database):
    """`CommandStore` over PostgreSQL (SQLAlchemy Core, no ORM state).

    Claims, moves and early-receipt lookups run batched across lanes (`GroupCommit`); the
    rest, rare or periodic, one statement each.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256) -> None:
        super().__init__(engine)
        self.claims = GroupCommit(self._claim_batch, max_batch=max_batch, shared=_unavailable)
        self.moves = GroupCommit(self._move_batch, max_batch=max_batch, shared=_unavailable)
        self._early = GroupCommit(self._early_batch, max_batch=max_batch, shared=_unavailable)

    async def claim(
        self,
        command: SendMessage,
        now: datetime,
        *,
        sending: bool = False,
        session_health: str | None = None,
    ) -> Claim:
        claim = await self.claims.submit(
            _ClaimItem(_claim_values(command, now, sending, session_health), None, gated=False)
        )
        if claim is None:  # pragma: no cover - an ungated claim always inserts or finds a row
            raise RuntimeError(f"claim of {command.command_id} found no row")
        return claim

    async def claim_sending(
        self,
        command: SendMessage,
        now: datetime,
        *,
        session_health: str | None,
        view_version: str | None,
    ) -> Claim | None:
        """Claim straight into `sending` while health's view row of the instance still has
        `view_version` (checked in the insert itself); None: it changed, nothing written."""
        return await self.claims.submit(
            _ClaimItem(
                _claim_values(command, now, True, session_health),  # noqa: FBT003 - sending
                view_version,
                gated=True,
            )
        )

    async def _claim_batch(self, items: Sequence[_ClaimItem]) -> list[Claim | None]:
        rows = [{**item.values, "view_version": item.view_version} for item in items]
        async with self._driver() as cursor:
            await cursor.execute(_CLAIM_SQL, {"rows": _rows_json(rows)})
            inserted = {row["command_id"]: _row(row) for row in await cursor.fetchall()}
            missing = [
                item.values["command_id"]
                for item in items
                if item.values["command_id"] not in inserted
            ]
            existing: dict[str, SendCommandRow] = {}
            if missing:
                await cursor.execute(_EXISTING_SQL, {"ids": missing})
                existing = {row["command_id"]: _row(row) for row in await cursor.fetchall()}
        results: list[Claim | None] = []
        for item in items:
            command_id = item.values["command_id"]
            new = inserted.pop(command_id, None)  # a copy of one id twice: only the first is new
            if new is not None:
                results.append(Claim(new=True, row=new))
                existing[command_id] = new
            elif command_id in existing:
                results.append(Claim(new=False, row=existing[command_id]))
            else:
                results.append(None)  # the gate refused: health's view changed
        return results

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
        return await self.moves.submit(
            _MoveItem(command_id, frozenset(status.value for status in from_statuses), changes)
        )

    async def _move_batch(self, items: Sequence[_MoveItem]) -> list[SendCommandRow | None]:
        # One statement per shape, and per wave: a command id twice in one UPDATE would be
        # moved once only, so a second copy waits for the next wave (its own compare-and-set).
        results: list[SendCommandRow | None] = [None] * len(items)
        pending = list(enumerate(items))
        async with self._driver() as cursor:
            while pending:
                wave: dict[tuple[frozenset[str], tuple[str, ...]], list[tuple[int, _MoveItem]]]
                wave, seen, later = {}, set(), []
                for index, item in pending:
                    if item.command_id in seen:
                        later.append((index, item))
                        continue
                    seen.add(item.command_id)
                    wave.setdefault(item.shape, []).append((index, item))
                for (from_statuses, columns), members in wave.items():
                    rows = [
                        {"match_command_id": item.command_id, **item.changes} for _, item in members
                    ]
                    await cursor.execute(
                        _move_sql(from_statuses, columns), {"rows": _rows_json(rows)}
                    )
                    moved = {row["command_id"]: _row(row) for row in await cursor.fetchall()}
                    for index, item in members:
                        results[index] = moved.get(item.command_id)
                pending = later
        return results

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
        return await self._early.submit(message_id)

    async def _early_batch(self, message_ids: Sequence[str]) -> list[list[EarlyReceipt]]:
        async with self._driver() as cursor:
            await cursor.execute(_EARLY_SQL, {"ids": list(set(message_ids))})
            rows = await cursor.fetchall()
            found: dict[str, list[EarlyReceipt]] = {}
            for row in rows:
                found.setdefault(row["message_id"], []).append(
                    EarlyReceipt(
                        message_id=row["message_id"],
                        status=DeliveryStatus(row["status"]),
                        status_raw=row["status_raw"],
                        instance_id=row["instance_id"],
                        received_at=row["received_at"],
                    )
                )
        return [list(found.get(message_id, [])) for message_id in message_ids]

    async def drop_early_receipts(self, message_id: str) -> None:
        async with self._single() as conn:
            await conn.execute(sa.delete(_EARLY).where(_EARLY.c.message_id == message_id))

    async def expire_early_receipts(self, received_before: datetime) -> int:
        statement = sa.delete(_EARLY).where(_EARLY.c.received_at < received_before)
        async with self._begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount or 0)


_INSTANCE_VIEW = sa.text(
    "SELECT instance_id, token, paused, state, reason, phone, last_check_at, "  # noqa: S608 - fixed names
    f"{_VIEW_VERSION.format(p='')} AS version "
    "FROM instance_gate_view WHERE instance_id = :match_instance_id"
)


class PostgresInstanceDirectory(_Database):
    """Reads health's `instance_gate_view`; never writes anything of health's.

    The view's token is encrypted at rest; `cipher` (the app passes `settings.token_cipher()`;
    default: the public dev key of tests) decrypts it for the provider call only. Each view
    carries `version`, the fingerprint of the row `CommandStore.claim_sending` re-checks.
    """

    def __init__(self, engine: AsyncEngine, cipher: TokenCipher | None = None) -> None:
        super().__init__(engine)
        self._cipher = cipher or TokenCipher([DEV_TOKEN_KEY])

    async def get(self, instance_id: str, *, fresh: bool = False) -> InstanceView | None:  # noqa: ARG002 - every read here is fresh
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
            version=found["version"],
        )

    def forget(self, instance_id: str) -> None:
        """Nothing is kept here: every `get` reads the view."""


def _state(value: str | None) -> InstanceState | str:
    if value is None:
        return InstanceState.UNKNOWN
    try:
        return InstanceState(value)
    except ValueError:
        return value
