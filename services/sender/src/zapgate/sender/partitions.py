"""Send commands across sender replicas: one replica per partition, fenced in PostgreSQL.

The stream stores each command on `zg.send.p.<k>.<instance>` (topology `SEND`), one durable per
partition, pinned to one replica at a time (`zapgate.runtime.pinned`). Per-instance order and
the minimum gap then hold across replicas because:

- a replica that receives a pin records it as the partition's next epoch
  (`Partitions.on_pinned`, compare-and-set in `send_partitions`);
- each command is handled under a `Lease` (partition, epoch, command), and the pacer records
  the provider call under that epoch right before making it (`FencedPacer`): a replica that was
  paused and lost the partition meanwhile finds its epoch gone, calls nothing and leaves the
  delivery to the new holder (`PartitionLost` -> the runtime's `Abandoned`);
- the pacing state is the instance's last recorded call, read from `send_calls` whenever this
  replica did not make that call itself under the current epoch, so the gap survives a move;
- a `sending` command with no recorded call was never sent and is taken back by the new holder
  (`reclaim_uncalled`); one with a recorded call is waited for in its lane until its answer is
  stored (or its lease ends: `uncertain`), so no later command of the instance overtakes it.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from zapgate.contracts.subjects import partition_of_subject
from zapgate.runtime.consumer import Abandoned
from zapgate.runtime.pinned import PIN_HEADER, OnPinned
from zapgate.sender.adapters.partitions import UNFENCED
from zapgate.sender.lanes import Pacer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from zapgate.runtime.clock import Clock
    from zapgate.runtime.consumer import Delivery
    from zapgate.sender.adapters.partitions import PostgresPartitionFence

_log = structlog.get_logger("zapgate.sender")


@dataclass(frozen=True, slots=True)
class Lease:
    """The partition epoch a command is handled under (set for the handler's task)."""

    partition: int
    epoch: int
    command_id: str


CURRENT_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "zapgate_sender_lease", default=None
)


class PartitionLost(Exception):  # noqa: N818 - a state, as in the field's terms
    """The partition's epoch moved on before the provider call: call nothing."""


class Partitions:
    """This replica's epoch of each partition it holds (from the pins it received)."""

    def __init__(self, fence: PostgresPartitionFence, clock: Clock, owner: str) -> None:
        self.fence = fence
        self._clock = clock
        self._owner = owner
        self._held: dict[int, tuple[str, int]] = {}

    def hook(self, partition: int) -> OnPinned:
        """The `on_pinned` hook of partition `partition`'s pinned consumer."""

        async def on_pinned(pin_id: str, still_pinned: Callable[[], Awaitable[bool]]) -> bool:
            epoch = await self.fence.take_over(
                partition, pin_id, self._owner, self._clock.now(), still_pinned=still_pinned
            )
            if epoch is None:
                self._held.pop(partition, None)
                return False
            self._held[partition] = (pin_id, epoch)
            _log.info("partition_taken", partition=partition, epoch=epoch, pin_id=pin_id)
            return True

        return on_pinned

    def lease(self, delivery: Delivery, command_id: str) -> Lease | None:
        """The lease a delivery is handled under; None for a command not on a partition subject
        (not partitioned). Raises `Abandoned` if it came under a pin this replica lost."""
        partition = partition_of_subject(delivery.subject)
        if partition is None:
            return None
        held = self._held.get(partition)
        if held is None or held[0] != delivery.headers.get(PIN_HEADER):
            raise Abandoned(f"partition {partition} is no longer held here")
        return Lease(partition, held[1], command_id)


class FencedPacer(Pacer):
    """The minimum gap per instance across replicas, and the fence before each provider call.

    Under a lease, `wait_turn` waits out the gap after the instance's last call (this replica's
    own under the same epoch, else the last recorded by anyone), then records the call under the
    lease's epoch; `PartitionLost` if that fails. Without a lease (held commands released by a
    sweep, API retries) it paces like the plain in-process `Pacer` and records the call
    unfenced (`UNFENCED`): every call is recorded before it is made, so a `sending` command
    without one was never called and may be taken back.
    """

    def __init__(
        self,
        clock: Clock,
        min_gap: float,
        fence: PostgresPartitionFence,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(clock, min_gap, sleep)
        self._fence = fence
        self._gap = min_gap
        self._wall_clock = clock
        self._pause = sleep
        self._own: dict[str, tuple[int, int, float]] = {}

    async def wait_turn(self, instance_id: str, command_id: str | None = None) -> float:
        """Wait for the instance's turn, then fence the call (see the class docstring).
        Raises `PartitionLost` when the call must not be made."""
        lease = CURRENT_LEASE.get()
        if lease is None:
            waited = await super().wait_turn(instance_id, command_id)
            if command_id is None:
                return waited
            # Recorded too, unfenced: a `sending` row without a recorded call was never called.
            if not await self._fence.record_call(
                partition=UNFENCED,
                epoch=0,
                command_id=command_id,
                instance_id=instance_id,
                now=self._wall_clock.now(),
            ):
                raise PartitionLost("the command was already called")
            return waited
        remaining = 0.0
        own = self._own.get(instance_id)
        if own is not None and own[:2] == (lease.partition, lease.epoch):
            remaining = own[2] + self._gap - self._wall_clock.monotonic()
        elif self._gap > 0:
            last = await self._fence.last_call_at(instance_id)
            if last is not None:
                remaining = (last - self._wall_clock.now()).total_seconds() + self._gap
        waited = 0.0
        if remaining > 0:
            await self._pause(remaining)
            waited = remaining
        recorded = await self._fence.record_call(
            partition=lease.partition,
            epoch=lease.epoch,
            command_id=lease.command_id,
            instance_id=instance_id,
            now=self._wall_clock.now(),
        )
        if not recorded:
            raise PartitionLost(f"partition {lease.partition} epoch {lease.epoch} is over")
        self._own[instance_id] = (lease.partition, lease.epoch, self._wall_clock.monotonic())
        return waited

    def answered(self, instance_id: str) -> None:
        """The call this replica made under its lease ended: the next one waits from now."""
        super().answered(instance_id)
        own = self._own.get(instance_id)
        if own is not None:
            self._own[instance_id] = (own[0], own[1], self._wall_clock.monotonic())

    def forget(self, instance_id: str) -> None:
        """Pace the instance's next call from the database (another replica's call was just
        waited for: its answer time is there)."""
        self._own.pop(instance_id, None)
