"""sample dead letters

Revision ID: 0002
Revises: 0001
"""

from zapgate.runtime.dead_letters import create_dead_letter_table, drop_dead_letter_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_dead_letter_table("sample_dead_letters")


def downgrade() -> None:
    drop_dead_letter_table("sample_dead_letters")
