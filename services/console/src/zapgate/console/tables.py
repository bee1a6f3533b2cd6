"""The console's own tables: the operator audit log. Nothing else is stored by the console.

A MetaData of its own: the console's migrations never see (or create) another service's tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

audit_log = sa.Table(
    "console_audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("operator", sa.String(100), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("instance_id", sa.String(100), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("detail", sa.String(500), nullable=True),
    sa.Index("ix_console_audit_log_at", "at"),
    sa.Index("ix_console_audit_log_instance_at", "instance_id", "at"),
)
