"""Health's migrations create its tables and the view that is the sender's contract."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from zapgate.runtime.db import create_engine

pytestmark = pytest.mark.real

GATE_VIEW = "instance_gate_view"
READER_ROLE = "zapgate_instance_gate_reader"
# The snapshot of the contract: (column, PostgreSQL type), in order. Adding a column is allowed
# (append it here); renaming, retyping or dropping one breaks the sender.
GATE_VIEW_COLUMNS = [
    ("instance_id", "character varying"),
    ("token", "character varying"),
    ("paused", "boolean"),
    ("state", "character varying"),
    ("reason", "character varying"),
    ("phone", "character varying"),
    ("last_check_at", "timestamp with time zone"),
]


async def _scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params)
    finally:
        await engine.dispose()


async def test_migrations_create_health_tables_at_the_latest_revision(database_url: str) -> None:
    """`instances`, the history tables and the dead letters exist; the history is at its head."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_health"))
    finally:
        await engine.dispose()
    assert {
        "instances",
        "instance_transitions",
        "instance_notifications",
        "health_dead_letters",
    } <= tables
    assert version == "0004_health"


async def test_instance_gate_view_has_exactly_the_contract_columns(database_url: str) -> None:
    """The view the sender reads has these columns, these types, in this order, and no token
    of any other table."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = :view ORDER BY ordinal_position"
                ),
                {"view": GATE_VIEW},
            )
            columns = [(row.column_name, row.data_type) for row in rows]
    finally:
        await engine.dispose()
    assert columns == GATE_VIEW_COLUMNS


async def test_instance_gate_view_shows_what_health_stored(database_url: str) -> None:
    """A row written to `instances` reads back through the view with the same values."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO instances (instance_id, display_name, token, state, reason, "
                    "phone) VALUES ('gate-1', 'Loja', 'tok', 'degraded', 'delivery_stalled', "
                    "'5584988887777')"
                )
            )
            row = (
                await conn.execute(
                    sa.text(f"SELECT * FROM {GATE_VIEW} WHERE instance_id = 'gate-1'")  # noqa: S608 - constant
                )
            ).one()
    finally:
        await engine.dispose()
    assert row._asdict() == {
        "instance_id": "gate-1",
        "token": "tok",
        "paused": False,
        "state": "degraded",
        "reason": "delivery_stalled",
        "phone": "5584988887777",
        "last_check_at": None,
    }


async def test_the_reader_role_may_read_the_view_and_not_the_table(database_url: str) -> None:
    """The grant is on the view only: the sender's role cannot read health's tables."""
    on_view = await _scalar(
        database_url, "SELECT has_table_privilege(:role, :view, 'SELECT')",
        role=READER_ROLE, view=GATE_VIEW,
    )  # fmt: skip
    on_table = await _scalar(
        database_url, "SELECT has_table_privilege(:role, 'instances', 'SELECT')", role=READER_ROLE
    )
    assert on_view is True
    assert on_table is False
