"""send_partitions (epoch of each command partition's pin) and send_calls (fenced provider calls)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_partitions",
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("pin_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition"),
    )
    op.create_table(
        "send_calls",
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("instance_id", sa.String(length=100), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("command_id"),
    )
    op.create_index(
        "ix_send_calls_instance_called_at", "send_calls", ["instance_id", "called_at"]
    )
    # A command left `sending` before this revision may have reached the provider: record it as
    # called, so it is reconciled after its lease and never taken back and sent again.
    op.execute(
        sa.text(
            "INSERT INTO send_calls (command_id, instance_id, partition, epoch, called_at)"
            " SELECT command_id, instance_id, -1, 0, coalesce(sending_at, updated_at)"
            " FROM send_commands WHERE status = 'sending'"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_send_calls_instance_called_at", table_name="send_calls")
    op.drop_table("send_calls")
    op.drop_table("send_partitions")
