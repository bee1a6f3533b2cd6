"""Read-only listing verbs for the operator console: one instance's sends (filtered by status
or stuck) and the count of stuck sends per instance.

One module with its own queries so the rest of the sender does not change: `subscribe()` adds
the two verbs to the sender's broker (same queue group as the other API verbs).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.sending import (
    CountStuck,
    ListSends,
    MessageKind,
    SendListReply,
    SendStatus,
    SendSummary,
    StuckCountsReply,
)
from zapgate.runtime.clock import Clock
from zapgate.runtime.db import create_engine
from zapgate.sender.tables import RowStatus, SendCommandRow

_log = structlog.get_logger("zapgate.sender.listing")
_COMMANDS = SendCommandRow.__table__  # type: ignore[attr-defined]
_PUBLIC = tuple(status.value for status in SendStatus)
_NOT_READY = Problem.of(ErrorCode.INTERNAL, detail="sender starting")


def _stuck(now: datetime, stuck_window: timedelta) -> sa.ColumnElement[bool]:
    return sa.and_(
        _COMMANDS.c.status == RowStatus.SENT.value,
        _COMMANDS.c.sent_at < now - stuck_window,
    )


async def list_sends(
    engine: AsyncEngine, request: ListSends, *, now: datetime, stuck_window: timedelta
) -> SendListReply:
    """`request.instance_id`'s sends, newest first (internal claimed/sending rows left out)."""
    c = _COMMANDS.c
    statement = sa.select(_COMMANDS).where(c.instance_id == request.instance_id)
    wanted = [status.value for status in request.statuses] or list(_PUBLIC)
    statement = statement.where(c.status.in_(wanted))
    if request.stuck:
        statement = statement.where(_stuck(now, stuck_window))
    statement = statement.order_by(c.created_at.desc(), c.command_id).limit(request.limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).mappings().all()
    return SendListReply(ok=True, sends=[_summary(row) for row in rows])


async def stuck_counts(
    engine: AsyncEngine, *, now: datetime, stuck_window: timedelta
) -> StuckCountsReply:
    """Stuck sends per instance (instances with none are left out)."""
    c = _COMMANDS.c
    statement = (
        sa.select(c.instance_id, sa.func.count())
        .where(_stuck(now, stuck_window))
        .group_by(c.instance_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return StuckCountsReply(ok=True, counts={row[0]: int(row[1]) for row in rows})


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


def subscribe(
    broker: NatsBroker,
    *,
    queue: str,
    engine: Callable[[], AsyncEngine | None],
    clock: Clock,
    stuck_window: timedelta,
) -> None:
    """Add `zg.api.sender.list` and `zg.api.sender.stuck_counts` to `broker`."""

    @broker.subscriber(subjects.API_SENDER_LIST, queue=queue)
    async def on_list_sends(msg: NatsMessage) -> SendListReply:
        try:
            request = ListSends.model_validate_json(msg.body)
        except ValidationError as exc:
            detail = str(exc.errors(include_url=False))[:500]
            return SendListReply(
                ok=False, error=Problem.of(ErrorCode.INVALID_COMMAND, detail=detail)
            )
        current = engine()
        if current is None:
            return SendListReply(ok=False, error=_NOT_READY)
        try:
            return await list_sends(current, request, now=clock.now(), stuck_window=stuck_window)
        except Exception as exc:  # noqa: BLE001 - the caller gets a coded answer, not a timeout
            _log.exception("list_sends_failed")
            return SendListReply(
                ok=False, error=Problem.of(ErrorCode.INTERNAL, detail=type(exc).__name__)
            )

    @broker.subscriber(subjects.API_SENDER_STUCK_COUNTS, queue=queue)
    async def on_count_stuck(msg: NatsMessage) -> StuckCountsReply:
        try:
            CountStuck.model_validate_json(msg.body)
        except ValidationError as exc:
            detail = str(exc.errors(include_url=False))[:500]
            return StuckCountsReply(
                ok=False, error=Problem.of(ErrorCode.INVALID_COMMAND, detail=detail)
            )
        current = engine()
        if current is None:
            return StuckCountsReply(ok=False, error=_NOT_READY)
        try:
            return await stuck_counts(current, now=clock.now(), stuck_window=stuck_window)
        except Exception as exc:  # noqa: BLE001 - the caller gets a coded answer, not a timeout
            _log.exception("count_stuck_failed")
            return StuckCountsReply(
                ok=False, error=Problem.of(ErrorCode.INTERNAL, detail=type(exc).__name__)
            )


def attach(  # noqa: PLR0913 - keyword-only, one per part the verbs need
    app: FastStream,
    broker: NatsBroker,
    *,
    queue: str,
    database_url: str,
    clock: Clock,
    stuck_window: timedelta,
) -> None:
    """Subscribe the verbs and give them a small engine of their own for the app's lifetime."""
    engines: list[AsyncEngine] = []
    subscribe(
        broker,
        queue=queue,
        engine=lambda: engines[0] if engines else None,
        clock=clock,
        stuck_window=stuck_window,
    )

    @app.after_startup
    async def open_listing_engine() -> None:
        engines.append(create_engine(database_url, pool_size=2, max_overflow=2))

    @app.on_shutdown
    async def close_listing_engine() -> None:
        while engines:
            await engines.pop().dispose()
