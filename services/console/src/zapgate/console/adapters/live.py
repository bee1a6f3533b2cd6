"""Live updates: health's state subjects in, one rendered update out to every open page.

`LiveHub` fans one update out to every server-sent-event stream; a stream that cannot keep up
is dropped (its page reconnects and renders afresh) rather than slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from zapgate.console.ports import StateListener
from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged

_log = structlog.get_logger("zapgate.console.live")


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """One server-sent event: its name (what the page listens for) and HTML to swap in."""

    event: str
    data: str


class LiveHub:
    """Fan-out of `LiveUpdate`s to the streams of open pages."""

    def __init__(self, *, queue_size: int = 256) -> None:
        self._queues: set[asyncio.Queue[LiveUpdate | None]] = set()
        self._queue_size = queue_size

    def publish(self, update: LiveUpdate) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._queues.clear()

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[AsyncIterator[LiveUpdate]]:
        """Subscribe for as long as the context lasts; iterate the updates."""
        queue: asyncio.Queue[LiveUpdate | None] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)

        async def updates() -> AsyncIterator[LiveUpdate]:
            while (update := await queue.get()) is not None:
                yield update

        try:
            yield updates()
        finally:
            self._queues.discard(queue)


class NatsStateFeed:
    """Core-NATS subscription to `zg.health.state.*` (what health publishes to JetStream)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._subscription: Subscription | None = None

    async def start(self, listener: StateListener) -> None:
        async def on_message(msg: Msg) -> None:
            try:
                event = InstanceStateChanged.model_validate_json(msg.data)
            except ValidationError:
                _log.warning("state_change_not_understood", subject=msg.subject)
                return
            try:
                await listener(event.instance_id)
            except Exception:  # noqa: BLE001 - one failed render must not end the feed
                _log.exception("live_update_failed", instance_id=event.instance_id)

        self._subscription = await self._nc.subscribe(subjects.STATE_CHANGED_ALL, cb=on_message)
        await self._nc.flush()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
