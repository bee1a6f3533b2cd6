"""PostgreSQL fence of the send-command partitions (tables `send_partitions`, `send_calls`).

JetStream pins each partition's consumer to one replica; a pin is not a lock (a paused replica
wakes up believing it still holds it). So every pin becomes an epoch here, and a provider call
is recorded under the epoch right before it is made, in one statement that also checks the
epoch is still current. The check takes a share lock on the partition's row, and a takeover
updates that row, so the two serialize: a call recorded before a takeover is visible to the new
holder; after it, the old holder's record fails and it does not call.

Records are the one statement of the fence on every send: they run batched across lanes
(`GroupCommit`, one INSERT over a JSON array, autocommit), each row keeping its own epoch check
and its own share lock, taken and released with that statement (the profile at 500 instances
had the unbatched record, BEGIN + INSERT + COMMIT per send, at a third of the sender's CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from zapgate.sender.adapters.batching import GroupCommit
from zapgate.sender.adapters.db import driver_cursor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

_READ = sa.text("SELECT epoch, pin_id FROM send_partitions WHERE partition = :partition")
_FIRST = sa.text(
    "INSERT INTO send_partitions (partition, epoch, pin_id, owner, taken_at)"
    " VALUES (:partition, 1, :pin_id, :owner, :now)"
    " ON CONFLICT (partition) DO NOTHING RETURNING epoch"
)
_NEXT = sa.text(
    "UPDATE send_partitions SET epoch = epoch + 1, pin_id = :pin_id, owner = :owner,"
    " taken_at = :now WHERE partition = :partition AND epoch = :seen RETURNING epoch"
)
# Each row inserts only while its partition's epoch is current; `FOR SHARE` makes a concurrent
# takeover's UPDATE of that row wait for this statement (or this row re-check the new epoch).
_RECORD_CALLS = (
    "INSERT INTO send_calls (command_id, instance_id, partition, epoch, called_at)"
    " SELECT r.command_id, r.instance_id, r.partition, r.epoch, r.called_at"
    " FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb)) AS r(command_id varchar(128),"
    "   instance_id varchar(100), partition integer, epoch bigint, called_at timestamptz)"
    " WHERE r.partition = %(unfenced)s OR EXISTS (SELECT 1 FROM send_partitions AS p"
    "   WHERE p.partition = r.partition AND p.epoch = r.epoch FOR SHARE)"
    " ON CONFLICT (command_id) DO NOTHING RETURNING command_id"
)
# The call's answer was stored after the provider saw the call: the later of the two times is
# never earlier than the call itself, whoever made it.
_LAST_CALL = sa.text(
    "SELECT greatest(c.called_at, s.updated_at) AS at FROM send_calls c"
    " LEFT JOIN send_commands s ON s.command_id = c.command_id"
    " WHERE c.instance_id = :instance_id ORDER BY c.called_at DESC LIMIT 1"
)
_CALLED = sa.text("SELECT 1 FROM send_calls WHERE command_id = :command_id")
_RECLAIM = sa.text(
    "UPDATE send_commands SET status = 'claimed', sending_at = NULL, updated_at = :now"
    " WHERE command_id = :command_id AND status = 'sending'"
    " AND NOT EXISTS (SELECT 1 FROM send_calls WHERE command_id = :command_id)"
    " RETURNING command_id"
)
_PRUNE = sa.text("DELETE FROM send_calls WHERE called_at < :before")
_TAKEOVER_TRIES = 5
UNFENCED = -1
"""The partition a call made outside any partition's lease is recorded under (held commands
released by a sweep, API retries; the migration's calls from before partitions): recorded all
the same, so a `sending` command without a recorded call was certainly never called."""


@dataclass(frozen=True, slots=True)
class _Call:
    command_id: str
    instance_id: str
    partition: int
    epoch: int
    called_at: datetime


def _outage(error: BaseException) -> bool:
    return isinstance(
        error, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError)
    )


class PostgresPartitionFence:
    """Epochs of partitions and fenced provider calls (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # An outage fails the whole batch; any other error (one row's value refused) runs the
        # batch's rows one by one, so only that command fails.
        self.records = GroupCommit(self._record_batch, max_batch=max_batch, shared=_outage)

    async def take_over(
        self,
        partition: int,
        pin_id: str,
        owner: str,
        now: datetime,
        *,
        still_pinned: Callable[[], Awaitable[bool]],
    ) -> int | None:
        """Make `pin_id` the partition's current epoch and return it; None if `still_pinned()`
        (asked after reading the current epoch) says the pin already moved on.

        Compare-and-set on the epoch read: a stale holder that read an older epoch cannot
        overwrite a newer one."""
        for _ in range(_TAKEOVER_TRIES):
            async with self._engine.connect() as connection:
                current = (await connection.execute(_READ, {"partition": partition})).first()
            if current is not None and current.pin_id == pin_id:
                return int(current.epoch)
            if not await still_pinned():
                return None
            values = {"partition": partition, "pin_id": pin_id, "owner": owner, "now": now}
            async with self._engine.begin() as connection:
                if current is None:
                    won = (await connection.execute(_FIRST, values)).first()
                else:
                    won = (
                        await connection.execute(_NEXT, {**values, "seen": current.epoch})
                    ).first()
            if won is not None:
                return int(won.epoch)
        return None

    async def record_call(
        self, *, partition: int, epoch: int, command_id: str, instance_id: str, now: datetime
    ) -> bool:
        """Record the provider call of `command_id` under `epoch`; False (call nothing) if the
        epoch is no longer the partition's or the command was already called. A call outside
        any lease passes `partition=UNFENCED` (no epoch is checked)."""
        return await self.records.submit(_Call(command_id, instance_id, partition, epoch, now))

    async def _record_batch(self, calls: Sequence[_Call]) -> list[bool]:
        rows = [
            {
                "command_id": call.command_id,
                "instance_id": call.instance_id,
                "partition": call.partition,
                "epoch": call.epoch,
                "called_at": call.called_at.isoformat(),
            }
            for call in calls
        ]
        # One statement, atomic alone: autocommit spares the BEGIN and COMMIT round trips; on
        # psycopg's own cursor, like the store's other statements of every send.
        async with driver_cursor(self._autocommit) as cursor:
            await cursor.execute(_RECORD_CALLS, {"rows": json.dumps(rows), "unfenced": UNFENCED})
            recorded = {row["command_id"] for row in await cursor.fetchall()}
        results = []
        for call in calls:
            # One command twice in a batch: the first copy made the record, the second did not.
            results.append(call.command_id in recorded)
            recorded.discard(call.command_id)
        return results

    async def last_call_at(self, instance_id: str) -> datetime | None:
        """When the instance's last provider call (by any replica) happened at the latest: the
        later of its record and of its command's last change (the stored answer)."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(_LAST_CALL, {"instance_id": instance_id})).first()
        return None if row is None else row.at

    async def was_called(self, command_id: str) -> bool:
        """True if a provider call of the command was recorded (it happened, or may have)."""
        async with self._engine.connect() as connection:
            return (
                await connection.execute(_CALLED, {"command_id": command_id})
            ).first() is not None

    async def reclaim_uncalled(self, command_id: str, now: datetime) -> bool:
        """Move a `sending` command that no call was recorded for back to `claimed` (its holder
        lost the partition before the call: its fence now fails, so it never calls)."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(_RECLAIM, {"command_id": command_id, "now": now})
            ).first()
        return row is not None

    async def prune(self, before: datetime) -> int:
        """Forget calls recorded before `before` (pacing needs only the last ones)."""
        async with self._engine.begin() as connection:
            result = await connection.execute(_PRUNE, {"before": before})
        return int(result.rowcount or 0)
