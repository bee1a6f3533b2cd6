"""The PostgreSQL archive keeps every payload, even one PostgreSQL refuses as JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from zapgate.ingest.adapters.db import ARCHIVE_REJECTED, PostgresArchive
from zapgate.ingest.ports import PayloadRow
from zapgate.runtime.db import create_engine
from zapgate.testkit.ingest import query

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.real]


@pytest.fixture
async def archive(database_url: str) -> AsyncIterator[PostgresArchive]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    yield PostgresArchive(engine)
    await engine.dispose()


def payload(dedupe_key: str, raw: dict[str, Any]) -> PayloadRow:
    return PayloadRow(
        received_at=datetime.now(UTC),
        instance_id="inst-1",
        kind="message_received",
        dedupe_key=dedupe_key,
        raw=raw,
        event={},
    )


async def test_a_payload_postgresql_refuses_is_quarantined_and_the_rest_of_its_batch_stored(
    archive: PostgresArchive, database_url: str
) -> None:
    """An infinite number is not JSON for PostgreSQL: that row goes to quarantine as bytes."""
    batch = [
        payload("k-good-1", {"messageId": "A"}),
        payload("k-inf", {"messageId": "B", "n": float("inf")}),
        payload("k-good-2", {"messageId": "C"}),
    ]

    inserted = await archive.store(batch, [])
    again = await archive.store(batch, [])

    stored = await query(database_url, "SELECT dedupe_key FROM webhook_payloads")
    kept = await query(database_url, "SELECT code, dedupe_key, body FROM webhook_quarantine")
    assert inserted.inserted == 2
    assert again.inserted == 0
    assert sorted(row.dedupe_key for row in stored) == ["k-good-1", "k-good-2"]
    assert [(row.code, row.dedupe_key) for row in kept] == [(ARCHIVE_REJECTED, "k-inf")]
    assert b'"n": Infinity' in bytes(kept[0].body)
