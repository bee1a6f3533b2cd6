"""The audit log over a real, migrated PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.console.adapters.db import SqlAuditLog
from zapgate.console.ports import AuditEntry
from zapgate.runtime.db import create_engine

pytestmark = pytest.mark.real

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


async def test_audit_rows_come_back_newest_first_and_per_instance(database_url: str) -> None:
    """Who, what, when are stored; reads are newest first and can be narrowed to one instance."""
    engine = create_engine(database_url)
    audit = SqlAuditLog(engine)
    try:
        await audit.record(AuditEntry(T0, "ana", "login", None, "ok"))
        await audit.record(AuditEntry(T0 + timedelta(seconds=1), "ana", "pause", "demo", "ok"))
        await audit.record(
            AuditEntry(T0 + timedelta(seconds=2), "bia", "remove", "loja", "failed", "X" * 900)
        )
        every = await audit.recent(limit=10)
        assert [(e.operator, e.action) for e in every] == [
            ("bia", "remove"),
            ("ana", "pause"),
            ("ana", "login"),
        ]
        assert every[0].detail == "X" * 500
        assert every[0].at == T0 + timedelta(seconds=2)
        demo = await audit.recent(limit=10, instance_id="demo")
        assert [(e.action, e.outcome) for e in demo] == [("pause", "ok")]
        assert len(await audit.recent(limit=1)) == 1
    finally:
        await engine.dispose()
