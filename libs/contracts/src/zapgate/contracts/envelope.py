"""The envelope every event, command and outcome carries."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every value exchanged between services: immutable, tolerant of unknown fields.

    Unknown fields are ignored so that a consumer keeps working when a producer adds an
    optional field (see VERSIONING.md).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Envelope(Contract):
    """Identity, time and lineage of one message on the bus."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique id of this message.")
    occurred_at: AwareDatetime = Field(
        default_factory=utc_now, description="When the fact happened (UTC, timezone-aware)."
    )
    schema_version: int = Field(default=1, ge=1, description="Version of this model's schema.")
    correlation_id: str | None = Field(
        default=None,
        max_length=200,
        description="Ties together every message caused by one original request or webhook.",
    )
