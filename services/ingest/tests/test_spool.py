"""The local spool: appended records survive a crash and drain once, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from zapgate.ingest.adapters.spool import FileSpool as Spool
from zapgate.ingest.adapters.spool import (
    SpoolLockedError,
    decode_record,
    encode_record,
    read_segment,
)
from zapgate.ingest.ports import SpoolError, SpoolRecord

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit


def record(number: int) -> SpoolRecord:
    return SpoolRecord(subject="zg.webhook.x", msg_id=f"id-{number}", body=b'{"n":%d}' % number)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def append_torn_record(segment: Path) -> None:
    segment.write_bytes(segment.read_bytes() + encode_record(record(3))[:-3])


class Sink:
    """Collects published records; fails on the records named in `fail_on`."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.published: list[SpoolRecord] = []
        self.fail_on = fail_on or set()

    async def publish(self, item: SpoolRecord) -> None:
        if item.msg_id in self.fail_on:
            raise ConnectionError("nats down")
        self.published.append(item)


def test_record_round_trips_through_its_frame() -> None:
    """Subject, id and body (any bytes) come back as written."""
    original = SpoolRecord(subject="zg.webhook.a", msg_id="k:1", body=b"\x00\xffbody")
    frame = encode_record(original)
    assert decode_record(frame[10:]) == original


async def test_appended_records_drain_in_order_and_leave_nothing(tmp_path: Path) -> None:
    """Everything appended is published once, in order, and the segment files are gone."""
    spool = Spool(tmp_path).open()
    for number in range(5):
        spool.append(record(number))
    assert spool.pending == 5
    sink = Sink()
    assert await spool.drain(sink.publish) == 5
    assert [item.msg_id for item in sink.published] == [f"id-{n}" for n in range(5)]
    assert spool.pending == 0
    assert segments(tmp_path) == []
    spool.close()


async def test_records_survive_a_process_that_never_closed_the_spool(tmp_path: Path) -> None:
    """A new owner of the directory finds and drains what the dead one appended."""
    crashed = Spool(tmp_path).open()
    crashed.append(record(1))
    crashed.append(record(2))
    crashed.close()  # releases the lock as the kernel would when the process dies
    reopened = Spool(tmp_path).open()
    assert reopened.pending == 2
    sink = Sink()
    await reopened.drain(sink.publish)
    assert [item.msg_id for item in sink.published] == ["id-1", "id-2"]
    reopened.close()


async def test_a_torn_tail_is_ignored_and_earlier_records_drain(tmp_path: Path) -> None:
    """A record cut short by a crash (never acknowledged) does not hide the ones before it."""
    spool = Spool(tmp_path).open()
    spool.append(record(1))
    spool.append(record(2))
    spool.close()
    (segment,) = segments(tmp_path)
    append_torn_record(segment)
    assert [item.msg_id for _, item in read_segment(segment)] == ["id-1", "id-2"]
    reopened = Spool(tmp_path).open()
    sink = Sink()
    await reopened.drain(sink.publish)
    assert [item.msg_id for item in sink.published] == ["id-1", "id-2"]
    reopened.close()


async def test_failed_publish_stops_the_drain_and_resumes_without_repeats(tmp_path: Path) -> None:
    """After a failure, the next drain starts at the first unpublished record."""
    spool = Spool(tmp_path).open()
    for number in range(4):
        spool.append(record(number))
    sink = Sink(fail_on={"id-2"})
    with pytest.raises(ConnectionError):
        await spool.drain(sink.publish)
    assert spool.pending == 2
    sink.fail_on.clear()
    assert await spool.drain(sink.publish) == 2
    assert [item.msg_id for item in sink.published] == ["id-0", "id-1", "id-2", "id-3"]
    spool.close()


async def test_appends_during_a_drain_go_to_a_new_segment_and_drain_next_time(
    tmp_path: Path,
) -> None:
    """A record appended while draining is neither lost nor deleted with the old segment."""
    spool = Spool(tmp_path).open()
    spool.append(record(1))
    published: list[str] = []

    async def publish_and_append(item: SpoolRecord) -> None:
        published.append(item.msg_id)
        if item.msg_id == "id-1":
            spool.append(record(2))

    await spool.drain(publish_and_append)
    assert published == ["id-1"]
    await spool.drain(publish_and_append)
    assert published == ["id-1", "id-2"]
    spool.close()


async def test_segments_roll_over_at_their_size_limit(tmp_path: Path) -> None:
    """Small segments: several files, drained in order."""
    spool = Spool(tmp_path, segment_bytes=64).open()
    for number in range(6):
        spool.append(record(number))
    assert len(segments(tmp_path)) > 1
    sink = Sink()
    await spool.drain(sink.publish)
    assert [item.msg_id for item in sink.published] == [f"id-{n}" for n in range(6)]
    spool.close()


def test_a_second_owner_of_the_directory_is_refused(tmp_path: Path) -> None:
    """Two processes never drain the same records."""
    owner = Spool(tmp_path).open()
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path).open()
    owner.close()


def test_append_on_a_closed_spool_fails_loudly(tmp_path: Path) -> None:
    """The caller learns the record is not durable (and answers 503)."""
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError):
        spool.append(record(1))
