"""Every port the ingest use cases need, and the plain values that cross them.

Real implementations live in `adapters/`; in-memory ones that record calls in `tests/fakes.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from zapgate.contracts import subjects

if TYPE_CHECKING:
    from collections.abc import Sequence


class SpoolError(RuntimeError):
    """The spool cannot make a record durable (disk full, permissions, not open)."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One message that must reach JetStream: where it goes, its dedupe id, and its body."""

    subject: str
    msg_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PayloadRow:
    """One archived webhook: routing, dedupe key, the sanitised JSON, the exact body."""

    received_at: datetime
    instance_id: str | None
    kind: str
    dedupe_key: str
    raw: dict[str, Any]
    event: dict[str, Any]
    body: bytes | None = None
    message_key: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """One quarantined body (or, above the size cap, the part of it that was read)."""

    received_at: datetime
    code: str
    dedupe_key: str
    body: bytes
    content_type: str | None
    instance_id: str | None = None
    event: str | None = None
    message_id: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceKindCount:
    instance_id: str | None
    kind: str
    count: int
    last_received_at: datetime


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one archive batch did: how many payload rows were new, and which new rows are a
    later body of a message already stored (new dedupe key -> the earlier row's dedupe key)."""

    inserted: int
    updates: dict[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    """Publish one message to JetStream and wait for its PubAck; raise when not stored."""

    async def publish(
        self, subject: str, data: bytes, msg_id: str, *, stream: str = subjects.STREAM_WEBHOOKS
    ) -> bool:
        """True when JetStream said duplicate (already stored under this msg id)."""
        ...

    @property
    def max_payload(self) -> int:
        """Largest message the server takes, in bytes."""
        ...


class BodyStore(Protocol):
    """Where bodies too large for one bus message are kept whole (JetStream Object Store)."""

    async def put(self, name: str, data: bytes) -> None:
        """Store `data` under `name` (idempotent: a name always holds the same bytes)."""
        ...

    async def get(self, name: str) -> bytes:
        """The bytes stored under `name`; raises `LookupError` when there are none."""
        ...


class Spool(Protocol):
    """The local fsynced spool: what JetStream could not take right now."""

    @property
    def pending(self) -> int:
        """Records appended and not yet drained."""
        ...

    def append(self, record: SpoolRecord) -> None:
        """Make `record` durable (blocking; run in a thread); raises `SpoolError`."""
        ...


class Archive(Protocol):
    """Where the archiver stores batches; `store` commits or raises (then nothing is acked)."""

    async def store(
        self, payloads: Sequence[PayloadRow], quarantined: Sequence[QuarantineRow]
    ) -> StoreResult:
        """Insert both batches idempotently (by dedupe key) in one commit."""
        ...


@dataclass(frozen=True, slots=True)
class ArchivedCount:
    """One group of one instance's archived webhooks: a payload kind (`code` None), or the
    quarantine (`kind` = `quarantined`) under one quarantine code."""

    kind: str
    code: str | None
    count: int
    last_received_at: datetime


class WebhookCounter(Protocol):
    """Reads the archive for the webhook counts API (bounded: one instance, one window)."""

    async def instance_counts(
        self, instance_id: str, *, since: datetime, until: datetime
    ) -> list[ArchivedCount]:
        """Groups of webhooks received in `[since, until]`; raises when the archive is down."""
        ...
