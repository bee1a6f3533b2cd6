"""Group commit for the sender's hot statements: many lanes' small writes run as one statement.

Every send makes the same few statements (claim, store the answer, look for early receipts).
Run one per send and 500 instances sending at once need 500 pool connections and 500 round
trips of driver and SQLAlchemy overhead each step; the profile at 500 instances showed pool
waits past the 10 s pool timeout, naks and redeliveries (see docs/benchmarks.md). `GroupCommit`
collects the items submitted while the event loop runs the ready tasks, then runs them with
one call of `run` (one statement, one connection); items that arrive while a batch is running
form the next batch. No timer: an item submitted on an idle service runs on the next turn of
the loop, and batches grow only when work piles up.

Batching changes no promise of the use cases: each caller still awaits its own item's result
(the claim exists before the provider call), each item keeps its own compare-and-set, and
items of one instance never share a batch (the instance's lane runs one command at a time).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs submitted items in batches through `run(items) -> results` (same length, same order).

    `max_batch`: items per call of `run`; `max_running`: calls of `run` at once (each holds one
    pool connection). When `run` raises an error `shared(error)` calls common to all (the
    database is away), every item of that batch raises it; any other error (one item's value
    the database refuses) runs the items of the batch one by one, so only the bad one fails.
    `batches`, `items` and `largest` count what ran (for tests and the profile's notes).
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 256,
        max_running: int = 2,
        shared: Callable[[BaseException], bool] = lambda _error: True,
    ) -> None:
        if max_batch < 1 or max_running < 1:
            raise ValueError("max_batch and max_running must be at least 1")
        self._run = run
        self._shared = shared
        self._max_batch = max_batch
        self._max_running = max_running
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0
        self.largest = 0

    async def submit(self, item: T) -> R:
        """Run `item` in the next batch and return its result (or raise the batch's error)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._queue or self._running >= self._max_running:
            return
        self._scheduled = True
        # One turn of the loop later: the tasks made ready together (a fetched batch of
        # commands, answers landing together) submit theirs before the batch starts.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._queue and self._running < self._max_running:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            await self._settle(batch)
        finally:
            self._running -= 1
            self._schedule()

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError as error:
            _fail(batch, error)
            raise
        except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
            if len(batch) == 1 or self._shared(error):
                _fail(batch, error)
                return
            for one in batch:
                await self._settle([one])
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(batch: list[tuple[T, asyncio.Future[R]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
