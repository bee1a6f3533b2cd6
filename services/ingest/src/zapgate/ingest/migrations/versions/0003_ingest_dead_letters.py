"""ingest_dead_letters: the runtime's dead-letter ledger for the archiver's consumer

Revision ID: ingest_0003
Revises: ingest_0002
Create Date: 2026-12-01
"""

from zapgate.runtime.dead_letters import create_dead_letter_table, drop_dead_letter_table

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_dead_letter_table("ingest_dead_letters")


def downgrade() -> None:
    drop_dead_letter_table("ingest_dead_letters")
