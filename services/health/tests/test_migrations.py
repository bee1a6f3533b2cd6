"""Health's migrations create the tables other services read, with their contract columns."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from zapgate.runtime.db import create_engine

pytestmark = pytest.mark.real

SENDER_READS = {
    "instance_id", "display_name", "token", "managed", "paused", "state", "reason", "phone",
    "since", "state_observed_at", "last_check_at", "last_restart_attempt_at",
    "outage_started_at", "outage_notified", "created_at", "updated_at",
}  # fmt: skip


async def test_migrations_create_the_instances_table_the_sender_reads(database_url: str) -> None:
    """`instances` has every column the sender's preflight relies on, plus the history tables."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("instances")}
            )
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            versions = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_health"))
    finally:
        await engine.dispose()
    assert columns >= SENDER_READS
    assert {"instance_transitions", "instance_notifications"} <= tables
    assert versions == "0001_health"
