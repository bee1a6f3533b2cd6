"""`WebhookArchiver` without servers: group commit, isolating a bad message, outages, counts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from zapgate.ingest.handlers import WebhookArchiver
from zapgate.runtime.consumer import Delivery, MessageFailure
from zapgate.testkit.ingest import make_settings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class ArchiveCalls:
    """An archive that records each call and refuses bodies named in `refuse` (a failure of
    that message) or everything while `down` (an outage)."""

    def __init__(self, refuse: frozenset[bytes] = frozenset()) -> None:
        self.calls: list[list[bytes]] = []
        self.refuse = refuse
        self.down = False

    async def __call__(self, messages: Sequence[tuple[str, bytes]]) -> int:
        self.calls.append([data for _, data in messages])
        if self.down:
            raise ConnectionRefusedError("database down")
        bad = [data for _, data in messages if data in self.refuse]
        if bad:
            raise ValueError(f"refused {bad[0]!r}")
        return len(messages)


def delivery(sequence: int, data: bytes, num_delivered: int = 1) -> Delivery:
    return Delivery(
        subject="zg.webhook.message_received",
        headers={},
        stream="ZG_WEBHOOKS",
        consumer="ingest-archiver",
        sequence=sequence,
        num_delivered=num_delivered,
        data=data,
    )


async def handle_all(
    archiver: WebhookArchiver, *deliveries: Delivery
) -> list[BaseException | None]:
    """Hand the deliveries over together, as the batch pull consumer does with one fetch."""
    return list(await archiver([(item.data, item) for item in deliveries]))


async def test_deliveries_that_arrive_together_are_stored_in_one_call() -> None:
    archive = ArchiveCalls()
    archiver = WebhookArchiver(archive, max_batch=100)

    outcomes = await handle_all(archiver, *(delivery(n, b"m%d" % n) for n in range(1, 6)))

    assert outcomes == [None] * 5
    assert archive.calls == [[b"m1", b"m2", b"m3", b"m4", b"m5"]]
    assert archiver.archived == 5


async def test_a_batch_is_never_larger_than_max_batch() -> None:
    archive = ArchiveCalls()
    archiver = WebhookArchiver(archive, max_batch=2)

    await handle_all(archiver, *(delivery(n, b"m%d" % n) for n in range(1, 6)))

    assert [len(call) for call in archive.calls] == [2, 2, 1]


async def test_only_the_message_that_cannot_be_archived_fails_and_the_others_are_stored() -> None:
    archive = ArchiveCalls(refuse=frozenset({b"bad"}))
    archiver = WebhookArchiver(archive, max_batch=100)

    first, bad, last = await handle_all(
        archiver, delivery(1, b"ok-1"), delivery(2, b"bad"), delivery(3, b"ok-3")
    )

    assert first is None
    assert last is None
    assert isinstance(bad, MessageFailure)
    assert bad.code == "archive_failed"
    assert "refused b'bad'" in bad.detail
    assert archive.calls == [[b"ok-1", b"bad", b"ok-3"], [b"ok-1"], [b"bad"], [b"ok-3"]]
    assert archiver.archived == 2


async def test_an_outage_fails_every_delivery_with_the_dependency_error_and_no_split() -> None:
    archive = ArchiveCalls()
    archive.down = True
    archiver = WebhookArchiver(archive, max_batch=100)

    outcomes = await handle_all(archiver, delivery(1, b"a"), delivery(2, b"b"))

    assert all(isinstance(outcome, ConnectionRefusedError) for outcome in outcomes)
    assert len(archive.calls) == 1
    assert archiver.archived == 0


async def test_a_redelivery_of_a_stored_message_is_not_counted_twice() -> None:
    archiver = WebhookArchiver(ArchiveCalls(), max_batch=100)

    await handle_all(archiver, delivery(1, b"a"), delivery(2, b"b"))
    await handle_all(archiver, delivery(2, b"b", num_delivered=2), delivery(3, b"c"))

    assert archiver.archived == 3


def test_the_archiver_linger_stays_well_below_its_ack_wait(tmp_path: Path) -> None:
    """PT0.2S by default; PT0S turns it off; above a quarter of ack_wait, or negative, the
    settings are refused at startup (held webhooks would risk a redelivery)."""
    url = "postgresql+asyncpg://zapgate@127.0.0.1:5432/unused"
    default = make_settings("nats://127.0.0.1:1", url, tmp_path)

    assert default.archiver_linger == timedelta(milliseconds=200)
    assert make_settings(
        "nats://127.0.0.1:1", url, tmp_path, archiver_linger="PT0S"
    ).archiver_linger == timedelta(0)
    for linger in ("PT2S", "-PT0.1S"):
        with pytest.raises(ValidationError, match="archiver_linger"):
            make_settings("nats://127.0.0.1:1", url, tmp_path, archiver_linger=linger)
