"""Per-instance lanes: work of one instance takes turns in arrival order, with a minimum gap
between provider sends; different instances run in parallel.

These lanes keep order and gap inside one sender process. Across replicas, each instance's
commands are on one partition held by one replica at a time, and the pacer is fenced and paced
from PostgreSQL when a partition moves (`zapgate.sender.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from zapgate.runtime.clock import Clock


class Pacer:
    """Keeps at least `min_gap` seconds between two sends of one instance, as the provider sees
    them: the gap runs from the previous call's answer (`answered`), which came after the
    provider received that call, whatever the event loop's lag before the request left."""

    def __init__(
        self,
        clock: Clock,
        min_gap: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._min_gap = min_gap
        self._sleep = sleep
        self._last: dict[str, float] = {}

    async def wait_turn(self, instance_id: str, command_id: str | None = None) -> float:
        """Wait until this instance may send again (to call the provider for `command_id`);
        return how long it waited."""
        del command_id  # what a recording pacer records (`FencedPacer`)
        waited = 0.0
        last = self._last.get(instance_id)
        if last is not None and self._min_gap > 0:
            remaining = last + self._min_gap - self._clock.monotonic()
            if remaining > 0:
                await self._sleep(remaining)
                waited = remaining
        self._last[instance_id] = self._clock.monotonic()
        return waited

    def answered(self, instance_id: str) -> None:
        """The instance's provider call just ended (answer, failure or exception): its next
        call waits `min_gap` from now."""
        self._last[instance_id] = self._clock.monotonic()

    @property
    def min_gap(self) -> float:
        """Seconds between two provider calls of one instance."""
        return self._min_gap


class Lanes:
    """One FIFO lock per instance, dropped when nobody holds or waits for it.

    `asyncio.Lock` wakes waiters in the order they came and lets no newcomer overtake one
    already woken, so tasks that enter `turn(key)` in stream order run in stream order.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Hold `key`'s lane for the body of the `async with`."""
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    @property
    def busy(self) -> int:
        """Instances with work running or waiting."""
        return len(self._locks)
