"""index webhook_quarantine by (instance_id, received_at) for the webhook counts API

Revision ID: ingest_0004
Revises: ingest_0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "ingest_0004"
down_revision = "ingest_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_quarantine_instance_received",
        "webhook_quarantine",
        ["instance_id", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_quarantine_instance_received", table_name="webhook_quarantine")
