"""sender_dead_letters (the runtime's dead-letter ledger) replaces send_dead_letters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from zapgate.runtime.dead_letters import create_dead_letter_table, drop_dead_letter_table

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # send_dead_letters only ever held unreadable commands since 0002 (minutes on main): its
    # rows move over with the runtime's columns so nothing an operator may need is lost.
    create_dead_letter_table("sender_dead_letters")
    op.execute(
        sa.text(
            "INSERT INTO sender_dead_letters (consumer, stream, stream_seq, subject, payload,"
            " headers, num_delivered, reason_code, reason, attempts, first_failed_at,"
            " last_failed_at, dead_lettered_at)"
            " SELECT 'sender-commands', 'ZG_SEND', -id, subject, data, '{}'::jsonb, 1,"
            " 'unreadable_command', reason, 1, dead_lettered_at, dead_lettered_at,"
            " dead_lettered_at FROM send_dead_letters"
        )
    )
    op.drop_table("send_dead_letters")


def downgrade() -> None:
    op.create_table(
        "send_dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    drop_dead_letter_table("sender_dead_letters")
