"""The archive's per-instance counts for the webhook counts API (`WebhookCounter`).

Two grouped reads in one short read-only transaction, each a range scan of one instance's window
on an `(instance_id, received_at)` index, under a statement timeout: a busy hour costs one index
range, never a table scan, and a slow database answers with an error instead of holding the
connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from zapgate.contracts.webhooks import QUARANTINE_KIND
from zapgate.ingest.ports import ArchivedCount
from zapgate.ingest.tables import payloads_table, quarantine_table

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

_payloads = payloads_table()
_quarantine = quarantine_table()


def payload_counts_query(
    instance_id: str, since: datetime, until: datetime
) -> sa.Select[str, int, datetime]:
    """Archived payloads of one instance in `[since, until]`, per kind."""
    p = _payloads.c
    return (
        sa.select(p.kind, sa.func.count(), sa.func.max(p.received_at))
        .where(p.instance_id == instance_id, p.received_at >= since, p.received_at <= until)
        .group_by(p.kind)
    )


def quarantine_counts_query(
    instance_id: str, since: datetime, until: datetime
) -> sa.Select[str, int, datetime]:
    """Quarantined bodies of one instance (as read from them) in `[since, until]`, per code."""
    q = _quarantine.c
    return (
        sa.select(q.code, sa.func.count(), sa.func.max(q.received_at))
        .where(q.instance_id == instance_id, q.received_at >= since, q.received_at <= until)
        .group_by(q.code)
    )


class PostgresWebhookCounts:
    """`WebhookCounter` over ingest's archive tables; `statement_timeout_ms` bounds each read."""

    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int = 2000) -> None:
        self._engine = engine
        self._timeout = f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"

    async def instance_counts(
        self, instance_id: str, *, since: datetime, until: datetime
    ) -> list[ArchivedCount]:
        async with self._engine.connect() as conn, conn.begin():
            await conn.execute(sa.text(self._timeout))
            payloads = (await conn.execute(payload_counts_query(instance_id, since, until))).all()
            quarantined = (
                await conn.execute(quarantine_counts_query(instance_id, since, until))
            ).all()
        return [
            *(ArchivedCount(kind, None, int(count), last) for kind, count, last in payloads),
            *(
                ArchivedCount(QUARANTINE_KIND, code, int(count), last)
                for code, count, last in quarantined
            ),
        ]
