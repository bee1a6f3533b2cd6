"""Publishing the sender's events to JetStream (always with `stream=` and a `Nats-Msg-Id`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from zapgate.contracts import subjects

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.contracts.envelope import Envelope

_PUBLISH_ATTEMPTS = 3


class EventPublisher(Protocol):
    """Where the sender's events go."""

    async def publish(self, subject: str, event: Envelope, *, stream: str, msg_id: str) -> None:
        """Store `event` in `stream` once (the stream dedupes on `msg_id`)."""
        ...


class JetStreamPublisher:
    """`EventPublisher` over nats-py JetStream; retries a timed-out publish with the same id."""

    def __init__(self, nc: Client, *, timeout: float = 2.0) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout

    async def publish(self, subject: str, event: Envelope, *, stream: str, msg_id: str) -> None:
        payload = event.model_dump_json().encode()
        headers = {subjects.MSG_ID_HEADER: msg_id}
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            try:
                await self._js.publish(
                    subject, payload, stream=stream, headers=headers, timeout=self._timeout
                )
            except TimeoutError:
                # Unknown outcome: the same Nats-Msg-Id makes the repeat safe.
                if attempt == _PUBLISH_ATTEMPTS:
                    raise
            else:
                return
