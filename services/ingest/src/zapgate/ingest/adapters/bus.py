"""`ports.Publisher` over the runtime's JetStream publisher and supervised connection.

The connection (`zapgate.runtime.connection.NatsConnection`) is replaced when nats-py closes
its client for good (a server `-ERR`), so ingest is never cut off NATS. On the request path a
publish is tried once (`attempts=1`): a failure spools the webhook at once instead of holding
the request; off it (the archiver's proofs of life) the runtime retries with the same id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from zapgate.contracts import subjects
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.publisher import JetStreamPublisher

DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024


class BusPublisher:
    """Publish with `stream=` and `Nats-Msg-Id`; True when JetStream answered duplicate."""

    def __init__(
        self, connection: NatsConnection, *, timeout: timedelta, attempts: int = 1
    ) -> None:
        self._connection = connection
        self._publisher = JetStreamPublisher(connection, timeout=timeout, attempts=attempts)

    @property
    def max_payload(self) -> int:
        client = self._connection.client
        if client is not None and client.is_connected:
            return int(client.max_payload)
        return DEFAULT_MAX_PAYLOAD

    async def publish(
        self, subject: str, data: bytes, msg_id: str, *, stream: str = subjects.STREAM_WEBHOOKS
    ) -> bool:
        result = await self._publisher.publish(subject, data, stream=stream, msg_id=msg_id)
        return result.duplicate
