"""Tables ingest owns: every accepted webhook as received, the quarantine, the dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from zapgate.runtime.dead_letters import dead_letter_table


class WebhookPayload(SQLModel, table=True):
    """One accepted webhook: the body as received, its routing and its dedupe key."""

    __tablename__ = "webhook_payloads"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    instance_id: str | None = Field(default=None, max_length=200)
    kind: str = Field(max_length=40)
    dedupe_key: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    raw: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    event: dict[str, Any] = Field(
        sa_column=sa.Column(JSONB, nullable=False), description="Routed event without `raw`."
    )
    body: bytes | None = Field(
        default=None,
        sa_column=sa.Column(sa.LargeBinary, nullable=True),
        description="The body exactly as received (None for rows archived before 0002).",
    )
    message_key: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.Text, nullable=True),
        description="Identity of the provider message (event, instance, messageId); several "
        "rows share it when a message came again with other content.",
    )
    archived_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )

    __table_args__ = (
        sa.Index("ix_webhook_payloads_instance_received", "instance_id", "received_at"),
        sa.Index("ix_webhook_payloads_received", "received_at"),
        sa.Index("ix_webhook_payloads_message_key", "message_key"),
    )


class QuarantinedWebhook(SQLModel, table=True):
    """An authenticated body that was not a JSON object, kept byte for byte; above the size cap
    only its first part, with the ids read from it."""

    __tablename__ = "webhook_quarantine"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    code: str = Field(max_length=40)
    dedupe_key: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    body: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    content_type: str | None = Field(default=None, max_length=200)
    instance_id: str | None = Field(default=None, max_length=200)
    event: str | None = Field(default=None, max_length=200)
    message_id: str | None = Field(default=None, max_length=200)
    size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    archived_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )

    __table_args__ = (
        sa.Index("ix_webhook_quarantine_instance_received", "instance_id", "received_at"),
    )


# Bus messages the archiver gave up on (failures of the message itself, counted by the
# runtime's pull consumer), with their reason (`zapgate.runtime.dead_letters`).
_dead_letter_metadata = sa.MetaData()
dead_letters = dead_letter_table(_dead_letter_metadata, "ingest_dead_letters")


def ingest_metadata() -> sa.MetaData:
    """Only ingest's tables: migrations never see other services' SQLModel tables."""
    metadata = sa.MetaData()
    for table in (payloads_table(), quarantine_table(), dead_letters):
        table.to_metadata(metadata)
    return metadata


def payloads_table() -> sa.Table:
    table: sa.Table = WebhookPayload.__table__  # type: ignore[attr-defined]
    return table


def quarantine_table() -> sa.Table:
    table: sa.Table = QuarantinedWebhook.__table__  # type: ignore[attr-defined]
    return table
