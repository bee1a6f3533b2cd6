"""send_early_receipts (receipts that arrive before their send's answer), send_dead_letters,
send_commands.error_fields (pt-BR explanation per refused field)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "send_commands",
        sa.Column("error_fields", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.create_table(
        "send_early_receipts",
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_raw", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=100), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "status"),
    )
    op.create_index(
        "ix_send_early_receipts_received_at", "send_early_receipts", ["received_at"], unique=False
    )
    op.create_table(
        "send_dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("send_dead_letters")
    op.drop_column("send_commands", "error_fields")
    op.drop_index("ix_send_early_receipts_received_at", table_name="send_early_receipts")
    op.drop_table("send_early_receipts")
