"""The partition fence over a real PostgreSQL: epochs by compare-and-set, calls under an epoch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from zapgate.contracts.sending import SendMessage, TextContent
from zapgate.contracts.subjects import partition_of_subject, send_partition
from zapgate.runtime.topology import SEND_PARTITIONS, stored_command_subject
from zapgate.sender.adapters.db import PostgresCommandStore
from zapgate.sender.adapters.partitions import UNFENCED, PostgresPartitionFence
from zapgate.sender.tables import RowStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.real

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


async def _yes() -> bool:
    return True


async def _no() -> bool:
    return False


def test_the_partition_of_an_instance_is_the_one_the_stream_stores_it_under() -> None:
    """FNV-1a mod 8 over the subject token (what the server's partition(8,1) computes; the
    cluster e2e and the auth test read the stored subject back from a real server)."""
    assert [send_partition(name, 4) for name in ("a", "b", "inst3", "x")] == [0, 1, 2, 3]
    for name in ("clu-00", "inst-1", "a.b", "x" * 5000):
        subject = stored_command_subject(name)
        assert partition_of_subject(subject) == send_partition(name, SEND_PARTITIONS)
    assert partition_of_subject("zg.send.command.x") is None


async def test_a_new_pin_is_the_next_epoch_and_a_stale_one_cannot_take_it_back(
    engine: AsyncEngine,
) -> None:
    """First pin: epoch 1; the next pin: epoch 2; the same pin again: its own epoch; a pin the
    server no longer has (still_pinned False) gets nothing."""
    fence = PostgresPartitionFence(engine)
    assert await fence.take_over(3, "pin-a", "a:1", NOW, still_pinned=_yes) == 1
    assert await fence.take_over(3, "pin-b", "b:2", NOW, still_pinned=_yes) == 2
    assert await fence.take_over(3, "pin-b", "b:2", NOW, still_pinned=_yes) == 2
    assert await fence.take_over(3, "pin-a", "a:1", NOW, still_pinned=_no) is None
    racers = await asyncio.gather(
        *(fence.take_over(4, f"pin-{n}", f"r:{n}", NOW, still_pinned=_yes) for n in range(5))
    )
    # Racing pins: each winner got its own epoch, none was skipped or given twice.
    won = sorted(epoch for epoch in racers if epoch is not None)
    assert won == list(range(1, len(won) + 1))
    assert won


async def test_a_call_is_recorded_only_under_the_current_epoch_and_once(
    engine: AsyncEngine,
) -> None:
    """The old holder's call fails after a takeover; a command is recorded once; the last call
    is what pacing reads; an uncalled `sending` command is taken back, a called one is not."""
    fence = PostgresPartitionFence(engine)
    store = PostgresCommandStore(engine)
    old = await fence.take_over(1, "pin-old", "old:1", NOW, still_pinned=_yes)
    assert old is not None
    assert await fence.record_call(
        partition=1, epoch=old, command_id="c1", instance_id="i1", now=NOW
    )
    assert not await fence.record_call(
        partition=1, epoch=old, command_id="c1", instance_id="i1", now=NOW
    )
    new = await fence.take_over(1, "pin-new", "new:2", NOW, still_pinned=_yes)
    assert new == old + 1
    later = NOW + timedelta(seconds=1)
    assert not await fence.record_call(
        partition=1, epoch=old, command_id="c2", instance_id="i1", now=later
    )
    assert await fence.last_call_at("i1") == NOW
    for command_id in ("c1", "c3"):
        command = SendMessage(
            command_id=command_id,
            instance_id="i1",
            phone="5584988887777",
            body=TextContent(message="x"),
        )
        await store.claim(command, NOW, sending=True)
    assert not await fence.reclaim_uncalled("c1", later)  # called: wait for its answer
    assert await fence.reclaim_uncalled("c3", later)  # never called: take it back
    row = await store.get("c3")
    assert row is not None
    assert row.status == RowStatus.CLAIMED.value
    assert await fence.prune(later) == 1


async def test_calls_recorded_together_each_keep_their_own_epoch_check(
    engine: AsyncEngine,
) -> None:
    """Records of many lanes run as one statement, and each row is still judged alone: a stale
    epoch fails its own record only, a command twice is recorded once (the first copy), and a
    value the database refuses fails that record only, not its batch-mates."""
    fence = PostgresPartitionFence(engine)
    current = await fence.take_over(5, "pin-5", "a:1", NOW, still_pinned=_yes)
    stale = await fence.take_over(6, "pin-6a", "a:1", NOW, still_pinned=_yes)
    fresh = await fence.take_over(6, "pin-6b", "b:2", NOW, still_pinned=_yes)
    assert current is not None
    assert stale is not None
    assert fresh is not None

    async def record(partition: int, epoch: int, command_id: str) -> bool:
        return await fence.record_call(
            partition=partition, epoch=epoch, command_id=command_id, instance_id="i5", now=NOW
        )

    results = await asyncio.gather(
        record(5, current, "k1"),
        record(6, stale, "k2"),
        record(6, fresh, "k3"),
        record(5, current, "k1"),
        record(5, current, "k" * 200),  # longer than the column: refused by the database
        return_exceptions=True,
    )
    assert list(results[:4]) == [True, False, True, False]
    assert isinstance(results[4], Exception)
    assert fence.records.largest == 5
    assert not await record(5, current, "k3")  # recorded once, whichever batch asks again


async def test_a_call_outside_any_lease_is_recorded_unfenced_and_once(engine: AsyncEngine) -> None:
    """Held commands released by a sweep and API retries have no partition lease: their call is
    recorded all the same (no epoch checked), once, so a `sending` row without a record was
    never called."""
    fence = PostgresPartitionFence(engine)

    async def record(command_id: str) -> bool:
        return await fence.record_call(
            partition=UNFENCED, epoch=0, command_id=command_id, instance_id="i9", now=NOW
        )

    assert await record("u1")
    assert not await record("u1")
    assert await fence.was_called("u1")
    assert await fence.last_call_at("i9") == NOW
