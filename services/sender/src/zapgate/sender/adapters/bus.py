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
    while a provider call or a database outage takes as long as it takes.

    One periodic task beats for every delivery in flight (not one task per delivery): each
    delivery hears a `+WPI` at most `heartbeat` after it started and then every `heartbeat`.
    """

    heartbeat: timedelta | None = None
    _working: dict[int, Msg] | None = None
    _beating: asyncio.Task[None] | None = None

    async def handle(self, message: Msg) -> Outcome:
        if self.heartbeat is None:
            return await super().handle(message)
        working = self._start_beating(self.heartbeat)
        key = id(message)
        working[key] = message
        try:
            return await super().handle(message)
        finally:
            working.pop(key, None)

    def _start_beating(self, every: timedelta) -> dict[int, Msg]:
        if self._working is None:
            self._working = {}
        if self._beating is None or self._beating.done():
            self._beating = asyncio.create_task(beat(self._working, every))
        return self._working

    async def stop(self, timeout: float = 10.0) -> None:
        await super().stop(timeout)
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None


async def beat(working: dict[int, Msg], every: timedelta) -> None:
    """Every `every`, tell JetStream that each message in `working` is still being worked on
    (`+WPI`); a message that ends meanwhile is left out (its ack already went)."""
    while True:
        await asyncio.sleep(every.total_seconds())
        for message in list(working.values()):
            with contextlib.suppress(Exception):
                await message.in_progress()
