"""The audit log in PostgreSQL (the console's own table)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.console.ports import AuditEntry
from zapgate.console.tables import audit_log


class SqlAuditLog:
    """Append-only rows in `console_audit_log`; newest first when read."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, entry: AuditEntry) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                audit_log.insert().values(
                    at=entry.at,
                    operator=entry.operator,
                    action=entry.action,
                    instance_id=entry.instance_id,
                    outcome=entry.outcome,
                    detail=(entry.detail or None) and entry.detail[:500],
                )
            )

    async def recent(self, *, limit: int, instance_id: str | None = None) -> list[AuditEntry]:
        query = sa.select(
            audit_log.c.at,
            audit_log.c.operator,
            audit_log.c.action,
            audit_log.c.instance_id,
            audit_log.c.outcome,
            audit_log.c.detail,
        ).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        if instance_id is not None:
            query = query.where(audit_log.c.instance_id == instance_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [
            AuditEntry(
                at=row.at,
                operator=row.operator,
                action=row.action,
                instance_id=row.instance_id,
                outcome=row.outcome,
                detail=row.detail,
            )
            for row in rows
        ]
