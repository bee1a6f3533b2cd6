"""Hand-written in-memory fakes behind every ingest port, recording what happened."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from zapgate.contracts import subjects
from zapgate.ingest.ports import SpoolError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from zapgate.ingest.ports import ArchivedCount, PayloadRow, QuarantineRow, SpoolRecord


class FakePublisher:
    """Records publishes; raises `error` when set; answers duplicate for a repeated id."""

    def __init__(self, max_payload: int = 1024 * 1024) -> None:
        self.published: list[tuple[str, bytes, str]] = []
        self.streams: list[str] = []
        self.error: Exception | None = None
        self._max_payload = max_payload

    @property
    def max_payload(self) -> int:
        return self._max_payload

    async def publish(
        self, subject: str, data: bytes, msg_id: str, *, stream: str = subjects.STREAM_WEBHOOKS
    ) -> bool:
        if self.error is not None:
            raise self.error
        duplicate = any(existing == msg_id for _, _, existing in self.published)
        if not duplicate:
            self.published.append((subject, data, msg_id))
            self.streams.append(stream)
        return duplicate

    def on(self, prefix: str) -> list[tuple[str, bytes, str]]:
        """The publishes whose subject starts with `prefix`."""
        return [item for item in self.published if item[0].startswith(prefix)]


class MemorySpool:
    """The spool port in memory; `broken` makes every append fail like a full disk."""

    def __init__(self) -> None:
        self.records: list[SpoolRecord] = []
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self.records)

    def append(self, record: SpoolRecord) -> None:
        if self.broken:
            raise SpoolError("disk full (fake)")
        self.records.append(record)


class FakeArchive:
    """Keeps rows by dedupe key like `ON CONFLICT DO NOTHING`; `error` makes `store` fail."""

    def __init__(self) -> None:
        self.payloads: dict[str, PayloadRow] = {}
        self.quarantined: dict[str, QuarantineRow] = {}
        self.error: Exception | None = None
        self.stored = asyncio.Event()

    async def store(
        self, payloads: Sequence[PayloadRow], quarantined: Sequence[QuarantineRow]
    ) -> int:
        if self.error is not None:
            raise self.error
        inserted = 0
        for row in payloads:
            if row.dedupe_key not in self.payloads:
                self.payloads[row.dedupe_key] = row
                inserted += 1
        for item in quarantined:
            self.quarantined.setdefault(item.dedupe_key, item)
        self.stored.set()
        return inserted


class FakeBodyStore:
    """Bodies by name in memory; `error` makes `put` fail like NATS down."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.error: Exception | None = None

    async def put(self, name: str, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.objects[name] = data

    async def get(self, name: str) -> bytes:
        try:
            return self.objects[name]
        except KeyError as error:
            raise LookupError(name) from error


class FakeWebhookCounter:
    """`WebhookCounter` answering `groups` (what the archive would count), recording each window."""

    def __init__(self, groups: Sequence[ArchivedCount] = ()) -> None:
        self.groups = list(groups)
        self.windows: list[tuple[str, datetime, datetime]] = []

    async def instance_counts(
        self, instance_id: str, *, since: datetime, until: datetime
    ) -> list[ArchivedCount]:
        self.windows.append((instance_id, since, until))
        return list(self.groups)
