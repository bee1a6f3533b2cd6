"""`SendListing` over PostgreSQL: one instance's sends and the stuck counts, read-only.

Built on an engine of its own (a small pool), so the console's reads never wait for a
connection the send path holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from zapgate.contracts.errors import Problem
from zapgate.contracts.sending import MessageKind, SendStatus, SendSummary
from zapgate.sender.tables import RowStatus, SendCommandRow

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.contracts.sending import ListSends

_COMMANDS = SendCommandRow.__table__  # type: ignore[attr-defined]
_PUBLIC = tuple(status.value for status in SendStatus)


class PostgresSendListing:
    """`SendListing` over `send_commands`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def sends(
        self, request: ListSends, *, now: datetime, stuck_window: timedelta
    ) -> list[SendSummary]:
        """`request.instance_id`'s sends, newest first (internal claimed/sending rows left out)."""
        c = _COMMANDS.c
        statement = sa.select(_COMMANDS).where(c.instance_id == request.instance_id)
        wanted = [status.value for status in request.statuses] or list(_PUBLIC)
        statement = statement.where(c.status.in_(wanted))
        if request.stuck:
            statement = statement.where(_stuck(now, stuck_window))
        statement = statement.order_by(c.created_at.desc(), c.command_id).limit(request.limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_summary(row) for row in rows]

    async def stuck_counts(self, *, now: datetime, stuck_window: timedelta) -> dict[str, int]:
        """Stuck sends per instance (instances with none are left out)."""
        c = _COMMANDS.c
        statement = (
            sa.select(c.instance_id, sa.func.count())
            .where(_stuck(now, stuck_window))
            .group_by(c.instance_id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return {row[0]: int(row[1]) for row in rows}


def _stuck(now: datetime, stuck_window: timedelta) -> sa.ColumnElement[bool]:
    return sa.and_(
        _COMMANDS.c.status == RowStatus.SENT.value,
        _COMMANDS.c.sent_at < now - stuck_window,
    )


def _summary(row: Any) -> SendSummary:  # noqa: ANN401 - a SQLAlchemy RowMapping
    error = None
    if row["error_code"]:
        error = Problem(
            code=row["error_code"],
            message=row["error_message"] or row["error_code"],
            detail=row["error_detail"],
        )
    return SendSummary(
        command_id=row["command_id"],
        instance_id=row["instance_id"],
        phone=row["phone"],
        kind=MessageKind(row["kind"]),
        status=SendStatus(row["status"]),
        provider_message_id=row["provider_message_id"],
        error=error,
        attempts=row["attempts"],
        retry_of=row["retry_of"],
        created_at=row["created_at"],
        held_at=row["held_at"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        played_at=row["played_at"],
        failed_at=row["failed_at"],
    )
