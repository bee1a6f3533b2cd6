"""The sender's tables (it is their only writer) and health's read-only `instance_gate_view`.

`send_commands` holds one row per command: the inbox claim, the decision and every status time.
Internal statuses `claimed` and `sending` are never published: they mark a command whose
decision is under way (`sending` = the provider may have been called).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from zapgate.runtime.dead_letters import dead_letter_table

# The sender's own MetaData: other services' SQLModel tables in the same process stay out of
# its migrations.
metadata = sa.MetaData()


class SenderTable(SQLModel, registry=registry(metadata=metadata)):
    pass


class RowStatus(StrEnum):
    """Stored status: the public SendStatus values plus two internal ones."""

    CLAIMED = "claimed"
    SENDING = "sending"
    HELD = "held"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


def _aware(**kwargs: Any) -> Any:  # noqa: ANN401 - SQLModel's Field returns Any
    return Field(sa_type=sa.DateTime(timezone=True), **kwargs)


class SendCommandRow(SenderTable, table=True):
    """One command and everything that happened to it."""

    __tablename__ = "send_commands"
    __table_args__ = (
        sa.Index("ix_send_commands_instance_status", "instance_id", "status"),
        sa.Index("ix_send_commands_status_sent_at", "status", "sent_at"),
    )

    command_id: str = Field(primary_key=True, max_length=128)
    instance_id: str = Field(max_length=100)
    phone: str = Field(max_length=120)
    kind: str = Field(max_length=16)
    body: dict[str, Any] = Field(sa_type=JSONB)
    quoted_message_id: str | None = Field(default=None, max_length=200)
    delay_message: int | None = None
    correlation_id: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=16)
    provider_message_id: str | None = Field(default=None, max_length=200, index=True)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = None
    error_detail: str | None = None
    error_fields: dict[str, str] | None = Field(default=None, sa_type=JSONB)
    attempts: int = 0
    session_health: str | None = Field(default=None, max_length=64)
    retry_of: str | None = Field(default=None, max_length=128, index=True)
    hold_until: datetime | None = _aware(default=None)
    created_at: datetime = _aware()
    updated_at: datetime = _aware()
    held_at: datetime | None = _aware(default=None)
    sending_at: datetime | None = _aware(default=None)
    sent_at: datetime | None = _aware(default=None)
    delivered_at: datetime | None = _aware(default=None)
    read_at: datetime | None = _aware(default=None)
    played_at: datetime | None = _aware(default=None)
    failed_at: datetime | None = _aware(default=None)
    uncertain_at: datetime | None = _aware(default=None)
    stuck_alerted_at: datetime | None = _aware(default=None)


class DeliveryStallRow(SenderTable, table=True):
    """An instance whose deliveries stalled; `resumed_at` set once a receipt arrived again."""

    __tablename__ = "send_delivery_stalls"

    instance_id: str = Field(primary_key=True, max_length=100)
    stalled_at: datetime = _aware()
    message_ids: list[str] = Field(sa_type=JSONB)
    resumed_at: datetime | None = _aware(default=None)


class EarlyReceiptRow(SenderTable, table=True):
    """A delivery receipt that arrived before the answer of its send (kept, applied later)."""

    __tablename__ = "send_early_receipts"
    __table_args__ = (sa.Index("ix_send_early_receipts_received_at", "received_at"),)

    message_id: str = Field(primary_key=True, max_length=200)
    status: str = Field(primary_key=True, max_length=16)
    status_raw: str = Field(max_length=64)
    instance_id: str | None = Field(default=None, max_length=100)
    received_at: datetime = _aware()


class SendPartitionRow(SenderTable, table=True):
    """Who holds a send-command partition: the pin JetStream gave a replica, as an epoch.

    A replica that receives a new pin bumps `epoch` (compare-and-set on the epoch it read);
    before each provider call it checks that the epoch is still its own (`SendCallRow`)."""

    __tablename__ = "send_partitions"

    partition: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    epoch: int = Field(sa_type=sa.BigInteger)
    pin_id: str = Field(max_length=64)
    owner: str = Field(max_length=200)
    taken_at: datetime = _aware()


class SendCallRow(SenderTable, table=True):
    """One provider call, recorded right before it under the partition's epoch (the fence):
    the pacing state of an instance (its last call) and proof that a `sending` row was (maybe)
    called, for whichever replica holds the partition next."""

    __tablename__ = "send_calls"
    __table_args__ = (sa.Index("ix_send_calls_instance_called_at", "instance_id", "called_at"),)

    command_id: str = Field(primary_key=True, max_length=128)
    instance_id: str = Field(max_length=100)
    partition: int
    epoch: int = Field(sa_type=sa.BigInteger)
    called_at: datetime = _aware()


# Commands the sender gave up on (unreadable, or failing max_failures times), kept by the
# runtime's pull consumer with their reason (`zapgate.runtime.dead_letters`).
dead_letters = dead_letter_table(metadata, "sender_dead_letters")


# --- health's view, read only -------------------------------------------------------------
# `instance_gate_view` is health's contract on instance state (health migration 0002; columns
# may be appended, never changed). A separate MetaData: the sender's migrations never create it.
health_metadata = sa.MetaData()
instance_gate_view = sa.Table(
    "instance_gate_view",
    health_metadata,
    sa.Column("instance_id", sa.String, primary_key=True),
    sa.Column("token", sa.String),
    sa.Column("paused", sa.Boolean),
    sa.Column("state", sa.String),
    sa.Column("reason", sa.String),
    sa.Column("phone", sa.String),
    sa.Column("last_check_at", sa.DateTime(timezone=True)),
)
