"""The sender's JetStream adapters over `zapgate.runtime`: its events through the runtime's
publisher, the outcome log (the last outcome the stream keeps per command), and the runtime's
pull consumer with in-progress heartbeats while a delivery is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, TypeVar

from nats.js.errors import NotFoundError

from zapgate.contracts import subjects
from zapgate.contracts.sending import SendOutcome
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.consumer import PullConsumer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import timedelta

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from zapgate.contracts.envelope import Envelope
    from zapgate.runtime.consumer import Outcome
    from zapgate.runtime.publisher import Publisher

M = TypeVar("M")


class RuntimeEventPublisher:
    """`EventPublisher` over the runtime's publisher (same `Nats-Msg-Id` on every retry; an
    unknown outcome after its attempts is raised, and the caller's next try repeats the id)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def publish(self, subject: str, event: Envelope, *, stream: str, msg_id: str) -> None:
        await self._publisher.publish_event(subject, event, stream=stream, msg_id=msg_id)


class JetStreamOutcomeLog:
    """`OutcomeLog` over ZG_SEND: the last message on `zg.send.outcome.<command_id>`."""

    def __init__(self, connection: NatsConnection | Client, *, timeout: float = 2.0) -> None:
        self._connection = connection
        self._timeout = timeout

    async def last_outcome(self, command_id: str) -> SendOutcome | None:
        connection = self._connection
        nc = connection.require() if isinstance(connection, NatsConnection) else connection
        js = nc.jetstream(timeout=self._timeout)
        try:
            stored = await js.get_last_msg(
                subjects.STREAM_SEND, subjects.send_outcome_subject(command_id)
            )
        except NotFoundError:
            return None
        if stored.data is None:
            return None
        return SendOutcome.model_validate_json(stored.data)


class HeartbeatConsumer(PullConsumer[M]):
    """The runtime's pull consumer that sends `+WPI` every `heartbeat` while a delivery is
    handled: the ack wait stays short (a crashed sender's commands come back within seconds)
    while a provider call or a database outage takes as long as it takes."""

    heartbeat: timedelta | None = None

    async def handle(self, message: Msg) -> Outcome:
        if self.heartbeat is None:
            return await super().handle(message)
        async with in_progress(message, self.heartbeat):
            return await super().handle(message)


@contextlib.asynccontextmanager
async def in_progress(message: Msg, every: timedelta) -> AsyncIterator[None]:
    """Tell JetStream every `every` that `message` is still being worked on (`+WPI`)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every.total_seconds())
            with contextlib.suppress(Exception):
                await message.in_progress()

    heartbeat = asyncio.create_task(beat())
    try:
        yield
    finally:
        heartbeat.cancel()
