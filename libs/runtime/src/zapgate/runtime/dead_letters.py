"""Dead letters: the failure ledger and the kept messages a consumer gave up on.

Each service owns its table (declared with `dead_letter_table(metadata)` in its `tables.py`,
created by `create_dead_letter_table()` in one of its own Alembic revisions); the runtime only
provides the mechanism. One row per (consumer, stream, stream sequence): it counts the failures
of the message itself (`attempts`; dependency outages never count), keeps the last reason and,
once `dead_lettered_at` is set, is the dead letter an operator reads:

```sql
SELECT consumer, subject, stream_seq, reason_code, reason, attempts, dead_lettered_at
FROM <svc>_dead_letters WHERE dead_lettered_at IS NOT NULL ORDER BY dead_lettered_at DESC;
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

REASON_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedMessage:
    """One delivery that failed because of the message itself.

    `reason_code` is a stable snake_case code (e.g. `invalid_message`, `handler_error`);
    `reason` a human-readable detail (English, cut to 2,000 characters).
    """

    consumer: str
    stream: str
    sequence: int
    subject: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    num_delivered: int = 1
    reason_code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A row of the ledger; `dead_lettered_at` is None while the message is still retried."""

    consumer: str
    stream: str
    sequence: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    num_delivered: int
    reason_code: str
    reason: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    dead_lettered_at: datetime | None


class DeadLetterStore(Protocol):
    """Where a consumer counts failures of messages and keeps the ones it gives up on."""

    async def record_failure(self, failed: FailedMessage, at: datetime) -> int:
        """Count one failure of `failed`'s message; return its failures so far (>= 1)."""
        ...

    async def mark_dead(self, failed: FailedMessage, at: datetime) -> DeadLetter:
        """Keep the message as dead-lettered (idempotent: the first time stays)."""
        ...

    async def forget(self, consumer: str, stream: str, sequence: int) -> None:
        """Drop the failure count of a message that was finally processed."""
        ...

    async def uncount(self, consumer: str, stream: str, sequence: int) -> None:
        """Take back one failure counted in advance (the delivery ended without a failure of
        the message itself); the row goes when no failure is left."""
        ...

    async def list_dead(self, *, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        ...


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("stream_seq", sa.BigInteger(), primary_key=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", JSONB(), nullable=False),
        sa.Column("num_delivered", sa.Integer(), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True),
    ]


def dead_letter_table(metadata: sa.MetaData, name: str) -> sa.Table:
    """Declare a service's dead-letter table (e.g. `"ingest_dead_letters"`) in its metadata."""
    return sa.Table(
        name,
        metadata,
        *_columns(),
        sa.Index(f"ix_{name}_dead_lettered_at", "dead_lettered_at"),
    )


def create_dead_letter_table(name: str) -> None:
    """Alembic `upgrade()` step creating the table `dead_letter_table(metadata, name)` declares."""
    from alembic import op  # noqa: PLC0415 - only exists while Alembic runs a revision

    op.create_table(name, *_columns())
    op.create_index(f"ix_{name}_dead_lettered_at", name, ["dead_lettered_at"])


def drop_dead_letter_table(name: str) -> None:
    """Alembic `downgrade()` step for `create_dead_letter_table(name)`."""
    from alembic import op  # noqa: PLC0415 - only exists while Alembic runs a revision

    op.drop_index(f"ix_{name}_dead_lettered_at", table_name=name)
    op.drop_table(name)


class SqlDeadLetterStore:
    """`DeadLetterStore` over a service's table in PostgreSQL."""

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        self._engine = engine
        self._table = table

    async def record_failure(self, failed: FailedMessage, at: datetime) -> int:
        table = self._table
        statement = (
            pg_insert(table)
            .values(**_row(failed), attempts=1, first_failed_at=at, last_failed_at=at)
            .on_conflict_do_update(
                index_elements=[table.c.consumer, table.c.stream, table.c.stream_seq],
                set_={
                    "attempts": table.c.attempts + 1,
                    "reason_code": failed.reason_code,
                    "reason": _cut(failed.reason),
                    "num_delivered": failed.num_delivered,
                    "last_failed_at": at,
                },
            )
            .returning(table.c.attempts)
        )
        async with self._engine.begin() as conn:
            attempts: int = (await conn.execute(statement)).scalar_one()
        return attempts

    async def mark_dead(self, failed: FailedMessage, at: datetime) -> DeadLetter:
        table = self._table
        statement = (
            pg_insert(table)
            .values(
                **_row(failed),
                attempts=1,
                first_failed_at=at,
                last_failed_at=at,
                dead_lettered_at=at,
            )
            .on_conflict_do_update(
                index_elements=[table.c.consumer, table.c.stream, table.c.stream_seq],
                set_={
                    "reason_code": failed.reason_code,
                    "reason": _cut(failed.reason),
                    "num_delivered": failed.num_delivered,
                    "dead_lettered_at": sa.func.coalesce(table.c.dead_lettered_at, at),
                },
            )
            .returning(*table.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).one()
        return _dead_letter(row)

    async def forget(self, consumer: str, stream: str, sequence: int) -> None:
        table = self._table
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(table).where(
                    table.c.consumer == consumer,
                    table.c.stream == stream,
                    table.c.stream_seq == sequence,
                    table.c.dead_lettered_at.is_(None),
                )
            )

    async def uncount(self, consumer: str, stream: str, sequence: int) -> None:
        table = self._table
        key = (
            table.c.consumer == consumer,
            table.c.stream == stream,
            table.c.stream_seq == sequence,
            table.c.dead_lettered_at.is_(None),
        )
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(table).where(*key).values(attempts=table.c.attempts - 1))
            await conn.execute(sa.delete(table).where(*key, table.c.attempts <= 0))

    async def list_dead(self, *, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        table = self._table
        query = (
            sa.select(table)
            .where(table.c.dead_lettered_at.is_not(None))
            .order_by(table.c.dead_lettered_at.desc(), table.c.stream_seq.desc())
            .limit(limit)
        )
        if consumer is not None:
            query = query.where(table.c.consumer == consumer)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_dead_letter(row) for row in rows]


def _text(value: str) -> str:
    # PostgreSQL text refuses NUL and lone surrogates; both occur in hostile payloads.
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _cut(reason: str) -> str:
    return _text(reason[:REASON_MAX_CHARS])


def _row(failed: FailedMessage) -> dict[str, object]:
    return {
        "consumer": failed.consumer,
        "stream": failed.stream,
        "stream_seq": failed.sequence,
        "subject": _text(failed.subject),
        "payload": failed.payload,
        "headers": {_text(key): _text(value) for key, value in failed.headers.items()},
        "num_delivered": failed.num_delivered,
        "reason_code": failed.reason_code,
        "reason": _cut(failed.reason),
    }


def _dead_letter(row: sa.Row[object]) -> DeadLetter:
    data = row._mapping  # noqa: SLF001 - SQLAlchemy's documented Row mapping accessor
    return DeadLetter(
        consumer=data["consumer"],
        stream=data["stream"],
        sequence=data["stream_seq"],
        subject=data["subject"],
        payload=bytes(data["payload"]),
        headers=dict(data["headers"]),
        num_delivered=data["num_delivered"],
        reason_code=data["reason_code"],
        reason=data["reason"],
        attempts=data["attempts"],
        first_failed_at=data["first_failed_at"],
        last_failed_at=data["last_failed_at"],
        dead_lettered_at=data["dead_lettered_at"],
    )
