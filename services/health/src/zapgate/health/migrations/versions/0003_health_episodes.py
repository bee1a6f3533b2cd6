"""Health: outage episodes, blips and claimed, signed operator notices.

instances: `good_since`, `episode_flaps`, `instability_notified`, `blip_count`.
instance_notifications: `flaps`; `webhook_target` (which operator URL the notice is for, as a
hash; NULL = none configured when it was created, so it is never sent), the claim lease and the
next attempt of its delivery.

Revision ID: 0003_health
Revises: 0002_health
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_health"
down_revision = "0002_health"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("instances", sa.Column("good_since", TZ, nullable=True))
    op.add_column(
        "instances",
        sa.Column("episode_flaps", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "instances",
        sa.Column(
            "instability_notified", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    op.add_column(
        "instances", sa.Column("blip_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "instance_notifications",
        sa.Column("flaps", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "instance_notifications", sa.Column("webhook_target", sa.String(64), nullable=True)
    )
    op.add_column("instance_notifications", sa.Column("webhook_claimed_until", TZ, nullable=True))
    op.add_column(
        "instance_notifications", sa.Column("webhook_next_attempt_at", TZ, nullable=True)
    )
    # Notices created before this revision were never meant for a URL configured later.
    op.create_index(
        "instance_notifications_webhook_due",
        "instance_notifications",
        ["id"],
        postgresql_where=sa.text("webhook_delivered_at IS NULL AND webhook_target IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("instance_notifications_webhook_due", table_name="instance_notifications")
    for column in ("webhook_next_attempt_at", "webhook_claimed_until", "webhook_target", "flaps"):
        op.drop_column("instance_notifications", column)
    for column in ("blip_count", "instability_notified", "episode_flaps", "good_since"):
        op.drop_column("instances", column)
