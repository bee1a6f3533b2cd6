"""The API's tables (it is their only writer): API keys and idempotency keys per API key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from zapgate.runtime.dead_letters import dead_letter_table

# The API's own MetaData: other services' tables in the same process stay out of its migrations.
metadata = sa.MetaData()


class ApiTable(SQLModel, registry=registry(metadata=metadata)):
    pass


def _aware(**kwargs: Any) -> Any:  # noqa: ANN401 - SQLModel's Field returns Any
    return Field(sa_type=sa.DateTime(timezone=True), **kwargs)


class ApiKeyRow(ApiTable, table=True):
    """One API key: an Argon2id hash of the token (never the token) and its instance scope."""

    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    secret_hash: str
    instances: list[str] = Field(sa_type=JSONB)
    created_at: datetime = _aware()
    revoked_at: datetime | None = _aware(default=None)


class IdempotencyKeyRow(ApiTable, table=True):
    """The first request for one (API key, idempotency key): its command id and fingerprint."""

    __tablename__ = "api_idempotency_keys"
    __table_args__ = (sa.Index("ix_api_idempotency_keys_key_id", "key_id"),)

    command_id: str = Field(primary_key=True, max_length=128)
    key_id: str = Field(max_length=32)
    instance_id: str = Field(max_length=100)
    fingerprint: str = Field(max_length=64)
    created_at: datetime = _aware()


class SubscriptionRow(ApiTable, table=True):
    """A webhook subscription of one API key. `secret` signs (HMAC), so it is kept readable."""

    __tablename__ = "api_subscriptions"
    __table_args__ = (sa.Index("ix_api_subscriptions_key_id", "key_id"),)

    subscription_id: str = Field(primary_key=True, max_length=40)
    key_id: str = Field(max_length=32)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=200)
    events: list[str] = Field(sa_type=JSONB)
    created_at: datetime = _aware()
    removed_at: datetime | None = _aware(default=None)


class WebhookDeliveryRow(ApiTable, table=True):
    """One event for one subscription: attempts, the first attempt's time, delivered or not."""

    __tablename__ = "api_webhook_deliveries"

    subscription_id: str = Field(primary_key=True, max_length=40)
    webhook_id: str = Field(primary_key=True, max_length=200)
    attempts: int = 0
    first_attempt_at: datetime = _aware()
    last_attempt_at: datetime = _aware()
    last_status: int | None = None
    delivered_at: datetime | None = _aware(default=None)
    gave_up_at: datetime | None = _aware(default=None)


dead_letters = dead_letter_table(metadata, "api_dead_letters")
