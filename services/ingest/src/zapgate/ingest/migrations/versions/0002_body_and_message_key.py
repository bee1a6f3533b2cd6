"""exact body and message key on webhook_payloads; ids and size on webhook_quarantine

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_payloads", sa.Column("body", sa.LargeBinary, nullable=True))
    op.add_column("webhook_payloads", sa.Column("message_key", sa.Text, nullable=True))
    op.create_index("ix_webhook_payloads_message_key", "webhook_payloads", ["message_key"])
    op.add_column("webhook_quarantine", sa.Column("instance_id", sa.String(200), nullable=True))
    op.add_column("webhook_quarantine", sa.Column("event", sa.String(200), nullable=True))
    op.add_column("webhook_quarantine", sa.Column("message_id", sa.String(200), nullable=True))
    op.add_column("webhook_quarantine", sa.Column("size", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_quarantine", "size")
    op.drop_column("webhook_quarantine", "message_id")
    op.drop_column("webhook_quarantine", "event")
    op.drop_column("webhook_quarantine", "instance_id")
    op.drop_index("ix_webhook_payloads_message_key", table_name="webhook_payloads")
    op.drop_column("webhook_payloads", "message_key")
    op.drop_column("webhook_payloads", "body")
