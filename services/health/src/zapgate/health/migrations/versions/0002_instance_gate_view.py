"""Health: `instance_gate_view`, the sender's read-only contract on instance state.

The sender's preflight reads exactly these columns; it must read the view, never `instances`.
Columns may be added to the view; renaming or dropping one is a breaking change (new view name,
both kept during a migration window). A NOLOGIN role `zapgate_instance_gate_reader` holds the
SELECT grant; grant it to the sender's login role in production.

Revision ID: 0002_health
Revises: 0001_health
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0002_health"
down_revision = "0001_health"
branch_labels = None
depends_on = None

VIEW = "instance_gate_view"
READER_ROLE = "zapgate_instance_gate_reader"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE VIEW {VIEW} AS
        SELECT instance_id, token, paused, state, reason, phone, last_check_at
        FROM instances
        """
    )
    # A role needs CREATEROLE; a migration user without it still gets the view (and a notice).
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                BEGIN
                    CREATE ROLE {READER_ROLE} NOLOGIN;
                EXCEPTION WHEN duplicate_object THEN
                    NULL;  -- another database of this cluster created it first
                END;
            END IF;
            GRANT SELECT ON {VIEW} TO {READER_ROLE};
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'role {READER_ROLE} not created or granted: insufficient privilege';
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
