"""Per-instance lanes: jobs of one instance run one at a time in submission order, with a
minimum gap between provider sends; different instances run in parallel.

Order and gap hold within one sender process. With several replicas sharing the command
consumer, two replicas may work on one instance at once: correctness (no double send) still
holds through the database claim, but order and pacing per instance need one replica per
instance (e.g. a partitioned consumer per replica).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from zapgate.runtime.clock import Clock

T = TypeVar("T")
Sleep = "Callable[[float], Awaitable[None]]"


class Pacer:
    """Keeps at least `min_gap` seconds between two sends of one instance."""

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

    async def wait_turn(self, instance_id: str) -> float:
        """Wait until this instance may send again; return how long it waited."""
        waited = 0.0
        last = self._last.get(instance_id)
        if last is not None and self._min_gap > 0:
            remaining = last + self._min_gap - self._clock.monotonic()
            if remaining > 0:
                await self._sleep(remaining)
                waited = remaining
        self._last[instance_id] = self._clock.monotonic()
        return waited


class Lanes:
    """One FIFO queue and worker task per key; a worker ends when its queue is empty."""

    def __init__(self) -> None:
        self._queues: dict[
            str, deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]
        ] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def submit(self, key: str, job: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue `job` behind the key's earlier jobs (synchronously, so call order is kept)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            worker = asyncio.create_task(self._work(key, queue), name=f"lane-{key}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        queue.append((job, future))
        return future

    async def run(self, key: str, job: Callable[[], Awaitable[T]]) -> T:
        return await self.submit(key, job)

    @property
    def active(self) -> int:
        return len(self._queues)

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for queue in self._queues.values():
            for _, future in queue:
                future.cancel()
        self._queues.clear()

    async def _work(
        self, key: str, queue: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]
    ) -> None:
        try:
            while queue:
                job, future = queue[0]
                if not future.cancelled():
                    try:
                        result = await job()
                    except Exception as exc:  # noqa: BLE001 - handed to the job's submitter
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                queue.popleft()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
