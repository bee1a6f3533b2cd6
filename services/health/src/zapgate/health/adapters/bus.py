"""JetStream adapter of `EventPublisher`: health's events on stream ZG_HEALTH.

Built on the runtime's one publisher (`zapgate.runtime.publisher`) over its supervised
connection, so publishing recovers after the server closes the connection (a protocol `-ERR`)
as well as after a restart. An unknown outcome raises: the outbox row stays unpublished and the
next flush publishes it again with the same `Nats-Msg-Id` (deduplicated by the stream).
"""

from __future__ import annotations

from datetime import timedelta

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.health.ports import HealthEvent
from zapgate.runtime.connection import ConnectionOptions, NatsConnection
from zapgate.runtime.publisher import JetStreamPublisher


class HealthEventPublisher:
    """`EventPublisher`: `zg.health.state.<id>` / `zg.health.notification.<id>`, PubAck awaited,
    `Nats-Msg-Id` = event id."""

    def __init__(
        self,
        nats_url: str,
        *,
        timeout: timedelta = timedelta(seconds=5),
        options: ConnectionOptions | None = None,
    ) -> None:
        # `options`: `HealthSettings.nats_connection_options(...)`, with health's NATS login.
        self.connection = NatsConnection(
            nats_url, options or ConnectionOptions(name="zapgate-health")
        )
        self._publisher = JetStreamPublisher(self.connection, timeout=timeout)

    async def start(self, *, timeout_s: float = 30.0) -> None:
        await self.connection.start()
        await self.connection.wait_connected(timeout_s)

    async def close(self) -> None:
        await self.connection.close()

    async def publish(self, event: HealthEvent) -> None:
        if isinstance(event, InstanceStateChanged):
            subject = subjects.state_changed_subject(event.instance_id)
        else:
            subject = subjects.notification_subject(event.instance_id)
        await self._publisher.publish_event(subject, event, stream=subjects.STREAM_HEALTH)
