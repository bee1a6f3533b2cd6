"""The archiver on the runtime's pull consumer: a message that cannot be archived is kept as a
dead letter with its reason after `archiver_max_failures` tries, and the others flow on."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy as sa

from zapgate.contracts import subjects
from zapgate.runtime.consumer import DEAD_LETTER_HEADER_PREFIX
from zapgate.runtime.db import create_engine
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import SECRET, make_settings, query, start_ingest, stream_messages

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client

pytestmark = [pytest.mark.real]

DEAD_LETTER_SUBJECT = "zg.deadletter.ingest.archiver"


POISON = "3EB0POISON"


async def refuse_poison(database_url: str) -> None:
    """PostgreSQL refuses the rows of one message (a constraint the archive does not expect): a
    failure of that message itself, on every try, and no data error it could quarantine."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "ALTER TABLE webhook_payloads ADD CONSTRAINT refuse_one_message "
                    "CHECK (raw->>'messageId' IS DISTINCT FROM '3EB0POISON')"
                )
            )
    finally:
        await engine.dispose()


async def test_a_message_that_cannot_be_archived_is_dead_lettered_and_the_rest_are_archived(
    nats_url: str, database_url: str, tmp_path: Path, nc: Client
) -> None:
    await refuse_poison(database_url)
    settings = make_settings(nats_url, database_url, tmp_path / "spool", archiver_max_failures=3)
    copies = await nc.subscribe(DEAD_LETTER_SUBJECT)
    await nc.flush()
    ingest = await start_ingest(settings)
    archiver = ingest.runtime.archiver
    assert archiver is not None
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as http:
            # One batch (posted before the archiver reads them) holds the poison and two others.
            for message_id in ("3EB0BEFORE", POISON, "3EB0AFTER"):
                answer = await http.post(
                    f"/webhooks/{SECRET}", json=samples.received_text(message_id)
                )
                assert answer.json()["disposition"] == "published"
            copy = await copies.next_msg(timeout=60)
            await archiver.wait_archived(2, timeout=30)
            later = await http.post(f"/webhooks/{SECRET}", json=samples.received_text("3EB0LATER"))
            assert later.status_code == 200
            await archiver.wait_archived(3, timeout=30)
    finally:
        await ingest.stop()

    rows = await query(database_url, "SELECT raw->>'messageId' AS id FROM webhook_payloads")
    assert sorted(row.id for row in rows) == ["3EB0AFTER", "3EB0BEFORE", "3EB0LATER"]
    dead = await query(
        database_url,
        "SELECT consumer, subject, payload, reason_code, reason, attempts, dead_lettered_at "
        "FROM ingest_dead_letters",
    )
    assert len(dead) == 1
    letter = dead[0]
    assert (letter.consumer, letter.reason_code, letter.attempts) == (
        "ingest-archiver",
        "archive_failed",
        3,
    )
    assert "refuse_one_message" in letter.reason
    assert letter.dead_lettered_at is not None
    assert letter.subject == subjects.webhook_subject("message_received")
    assert json.loads(bytes(letter.payload))["raw"]["messageId"] == POISON
    # The copy on the bus is the message as it was in ZG_WEBHOOKS, with the reason.
    assert copy.data == bytes(letter.payload)
    assert copy.headers is not None
    assert copy.headers[f"{DEAD_LETTER_HEADER_PREFIX}Reason"] == "archive_failed"
    assert copy.headers[f"{DEAD_LETTER_HEADER_PREFIX}Attempts"] == "3"
    # Dead-lettering terminates the delivery; the stream keeps the message.
    assert len(await stream_messages(nc)) == 4
