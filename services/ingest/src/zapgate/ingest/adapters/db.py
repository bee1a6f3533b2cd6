"""The PostgreSQL archive of webhooks: batched idempotent inserts and the operator's queries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert

from zapgate.ingest.ports import InstanceKindCount, PayloadRow, QuarantineRow, StoreResult
from zapgate.ingest.tables import payloads_table, quarantine_table
from zapgate.runtime.db import ping

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

_payloads = payloads_table()
_quarantine = quarantine_table()
_NUL_ESCAPE = "\\u0000"
# One statement text for any batch size: the rows travel as one array per column and the
# statement (and its parameter parsing by the driver) is the same every time. The JSON columns
# arrive as JSON text, serialised once here.
_INSERT_PAYLOADS: Final = f"""
INSERT INTO {_payloads.name}
    (received_at, instance_id, kind, dedupe_key, raw, event, body, message_key)
SELECT r, i, k, d, w::jsonb, e::jsonb, b, m
FROM unnest(
    %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
    %s::bytea[], %s::text[]
) AS t(r, i, k, d, w, e, b, m)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key
"""  # noqa: S608 - the table name is ours; every value is a bound parameter
_INSERT_QUARANTINE: Final = insert(_quarantine).on_conflict_do_nothing(
    index_elements=["dedupe_key"]
)
# Quarantine code of a payload PostgreSQL refused to store as JSON (its bytes are kept).
ARCHIVE_REJECTED: Final = "ARCHIVE_REJECTED"
log = structlog.get_logger("zapgate.ingest.archive")


class PostgresArchive:
    """`INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`, one transaction per batch."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ping(self) -> None:
        await ping(self._engine)

    async def store(
        self, payloads: Sequence[PayloadRow], quarantined: Sequence[QuarantineRow]
    ) -> StoreResult:
        """Insert both batches in one commit; new rows, and which of them update a message.

        When PostgreSQL refuses the data itself (not the connection), the rows go in one by one
        and a row it still refuses is kept as bytes in the quarantine: one odd payload never
        blocks the batches behind it, and nothing is dropped.
        """
        try:
            new = await self._insert(payloads, quarantined)
        except sa.exc.DataError as error:
            log.warning("archive_batch_refused", size=len(payloads), reason=repr(error)[:300])
        else:
            return StoreResult(len(new), await self._updates(new))
        new = []
        for row in payloads:
            try:
                new += await self._insert([row], [])
            except sa.exc.DataError as error:
                log.error(  # noqa: TRY400 - the reason is enough, no traceback
                    "archive_row_quarantined",
                    dedupe_key=_storable_text(row.dedupe_key),
                    code=ARCHIVE_REJECTED,
                    reason=repr(error)[:300],
                )
                await self._insert([], [_rejected(row)])
        if quarantined:
            await self._insert([], quarantined)
        return StoreResult(len(new), await self._updates(new))

    async def _insert(
        self, payloads: Sequence[PayloadRow], quarantined: Sequence[QuarantineRow]
    ) -> list[str]:
        new: list[str] = []
        async with self._engine.begin() as conn:
            # One statement compiled once (SQLAlchemy caches it) and the rows as parameters: the
            # driver sends them as multi-row VALUES pages ("insertmanyvalues"), RETURNING kept.
            if payloads:
                rows = await conn.exec_driver_sql(_INSERT_PAYLOADS, _payload_columns(payloads))
                new = [row[0] for row in rows.all()]
            if quarantined:
                await conn.execute(
                    _INSERT_QUARANTINE, [_quarantine_values(row) for row in quarantined]
                )
        return new

    async def _updates(self, new_keys: list[str]) -> dict[str, str]:
        """New rows whose message (same `message_key`) was stored before with other content."""
        if not new_keys:
            return {}
        newer, older = _payloads.alias("newer"), _payloads.alias("older")
        query = (
            sa.select(newer.c.dedupe_key, sa.func.max(older.c.dedupe_key))
            .join(
                older,
                sa.and_(older.c.message_key == newer.c.message_key, older.c.id < newer.c.id),
            )
            .where(newer.c.dedupe_key.in_(new_keys), newer.c.message_key.is_not(None))
            .group_by(newer.c.dedupe_key)
        )
        async with self._engine.connect() as conn:
            return {row[0]: row[1] for row in await conn.execute(query)}

    async def counts(self, since: datetime | None = None) -> list[InstanceKindCount]:
        query = sa.select(
            _payloads.c.instance_id,
            _payloads.c.kind,
            sa.func.count(),
            sa.func.max(_payloads.c.received_at),
        ).group_by(_payloads.c.instance_id, _payloads.c.kind)
        if since is not None:
            query = query.where(_payloads.c.received_at >= since)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_payloads.c.instance_id))).all()
        return [InstanceKindCount(row[0], row[1], int(row[2]), row[3]) for row in rows]

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(_quarantine).order_by(_quarantine.c.received_at.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]  # noqa: SLF001 - SQLAlchemy's public row mapping

    async def payloads(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        instance_id: str | None = None,
        kind: str | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stored payloads in arrival order, paged by id (no long-held cursor)."""
        last_id = 0
        while True:
            query = sa.select(_payloads).where(_payloads.c.id > last_id)
            if since is not None:
                query = query.where(_payloads.c.received_at >= since)
            if until is not None:
                query = query.where(_payloads.c.received_at < until)
            if instance_id is not None:
                query = query.where(_payloads.c.instance_id == instance_id)
            if kind is not None:
                query = query.where(_payloads.c.kind == kind)
            async with self._engine.connect() as conn:
                page = [
                    dict(row._mapping)  # noqa: SLF001 - SQLAlchemy's public row mapping
                    for row in await conn.execute(query.order_by(_payloads.c.id).limit(page_size))
                ]
            if not page:
                return
            for row in page:
                yield row
            last_id = page[-1]["id"]


def _payload_columns(rows: Sequence[PayloadRow]) -> tuple[list[Any], ...]:
    """The rows as one list per column of `_INSERT_PAYLOADS`, JSON columns as text."""
    return (
        [row.received_at for row in rows],
        [_storable_text(row.instance_id) for row in rows],
        [row.kind for row in rows],
        [_storable_text(row.dedupe_key) for row in rows],
        [_storable_json(row.raw) for row in rows],
        [_storable_json(row.event) for row in rows],
        [row.body for row in rows],
        [row.message_key for row in rows],
    )


def _rejected(row: PayloadRow) -> QuarantineRow:
    return QuarantineRow(
        received_at=row.received_at,
        code=ARCHIVE_REJECTED,
        dedupe_key=row.dedupe_key,
        body=json.dumps(row.raw, ensure_ascii=False).encode(),
        content_type="application/json",
    )


def _quarantine_values(row: QuarantineRow) -> dict[str, Any]:
    return {
        "received_at": row.received_at,
        "code": row.code,
        "dedupe_key": _storable_text(row.dedupe_key),
        "body": row.body,
        "content_type": row.content_type,
        "instance_id": _storable_text(row.instance_id),
        "event": _storable_text(row.event),
        "message_id": _storable_text(row.message_id),
        "size": row.size,
    }


def _storable_text(value: str | None) -> str | None:
    """Text columns refuse NUL too (an instance id or message id taken from the body)."""
    return value.replace("\x00", "\\u0000") if value is not None else None


def _storable_json(value: dict[str, Any]) -> str:
    """`value` as JSON text for a `jsonb` column."""
    # JSONB refuses the NUL character; the stream keeps the exact body, the archive a copy with
    # NUL spelled out, so one odd string cannot block every later batch.
    text = json.dumps(value)
    return text.replace(_NUL_ESCAPE, "\\\\u0000") if _NUL_ESCAPE in text else text
