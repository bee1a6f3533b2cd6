"""Health: instances registry and state, transitions history, notifications outbox.

Revision ID: 0001_health
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_health"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("instance_id", sa.String(100), primary_key=True),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("token", sa.String(), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("state", sa.String(), nullable=False, server_default="unknown"),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("phone_observed_at", TZ, nullable=True),
        sa.Column("since", TZ, nullable=True),
        sa.Column("state_observed_at", TZ, nullable=True),
        sa.Column("last_check_at", TZ, nullable=True),
        sa.Column("last_restart_attempt_at", TZ, nullable=True),
        sa.Column("outage_started_at", TZ, nullable=True),
        sa.Column("outage_notified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "state IN ('unknown', 'connected', 'degraded', 'disconnected')",
            name="instances_state_valid",
        ),
    )
    op.create_table(
        "instance_transitions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("instance_id", sa.String(100), nullable=False, index=True),
        sa.Column("from_state", sa.String(), nullable=False),
        sa.Column("from_reason", sa.String(), nullable=True),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("observed_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("published_at", TZ, nullable=True),
    )
    op.create_index(
        "instance_transitions_unpublished",
        "instance_transitions",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "instance_notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("instance_id", sa.String(100), nullable=False, index=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("since", TZ, nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("published_at", TZ, nullable=True),
        sa.Column("webhook_delivered_at", TZ, nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index(
        "instance_notifications_unpublished",
        "instance_notifications",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("instance_notifications")
    op.drop_table("instance_transitions")
    op.drop_table("instances")
