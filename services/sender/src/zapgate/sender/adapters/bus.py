"""The sender's JetStream adapters over `zapgate.runtime`: its events through the runtime's
publisher, and the outcome log (the last outcome the stream keeps per command). Its consumers
are the runtime's `PullConsumer` (with in-progress heartbeats, declared in the topology).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError

from zapgate.contracts import subjects
from zapgate.contracts.sending import SendOutcome
from zapgate.runtime.connection import NatsConnection

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.contracts.envelope import Envelope
    from zapgate.runtime.publisher import Publisher


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
