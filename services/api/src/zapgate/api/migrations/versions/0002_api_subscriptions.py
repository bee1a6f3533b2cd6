"""webhook subscriptions, deliveries and dead letters

Revision ID: 0002_api
Revises: 0001_api
Create Date: 2026-11-30 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from zapgate.runtime.dead_letters import create_dead_letter_table, drop_dead_letter_table

revision: str = "0002_api"
down_revision: str | None = "0001_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_subscriptions",
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("events", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    op.create_index("ix_api_subscriptions_key_id", "api_subscriptions", ["key_id"])
    op.create_table(
        "api_webhook_deliveries",
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("webhook_id", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subscription_id", "webhook_id"),
    )
    create_dead_letter_table("api_dead_letters")


def downgrade() -> None:
    drop_dead_letter_table("api_dead_letters")
    op.drop_table("api_webhook_deliveries")
    op.drop_index("ix_api_subscriptions_key_id", table_name="api_subscriptions")
    op.drop_table("api_subscriptions")
