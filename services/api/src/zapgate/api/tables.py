"""The API's tables (it is their only writer): API keys and idempotency keys per API key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

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
