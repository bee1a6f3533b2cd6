"""Health: health_dead_letters, the runtime's dead-letter ledger of health's consumers.

Revision ID: 0004_health
Revises: 0003_health
Create Date: 2026-12-01
"""

from __future__ import annotations

from zapgate.runtime.dead_letters import create_dead_letter_table, drop_dead_letter_table

revision = "0004_health"
down_revision = "0003_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_dead_letter_table("health_dead_letters")


def downgrade() -> None:
    drop_dead_letter_table("health_dead_letters")
