"""webhook_payloads and webhook_quarantine

Revision ID: ingest_0001
Revises:
Create Date: 2025-10-09
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "ingest_0001"
down_revision = None
branch_labels = ("ingest",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_payloads",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
        sa.Column("raw", JSONB, nullable=False),
        sa.Column("event", JSONB, nullable=False),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_webhook_payloads_instance_received", "webhook_payloads", ["instance_id", "received_at"]
    )
    op.create_index("ix_webhook_payloads_received", "webhook_payloads", ["received_at"])
    op.create_table(
        "webhook_quarantine",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("content_type", sa.String(200), nullable=True),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("webhook_quarantine")
    op.drop_index("ix_webhook_payloads_received", table_name="webhook_payloads")
    op.drop_index("ix_webhook_payloads_instance_received", table_name="webhook_payloads")
    op.drop_table("webhook_payloads")
