"""JetStream adapter of `EventPublisher`: health's events on stream ZG_HEALTH.

Built on the runtime's one publisher (`zapgate.runtime.publisher`) over the service's supervised
connection, so publishing recovers after the server closes the connection (a protocol `-ERR`)
as well as after a restart. An unknown outcome raises: the outbox row stays unpublished and the
next flush publishes it again with the same `Nats-Msg-Id` (deduplicated by the stream).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.runtime.publisher import JetStreamPublisher

if TYPE_CHECKING:
    from zapgate.health.ports import HealthEvent
    from zapgate.runtime.connection import NatsConnection


class HealthEventPublisher:
    """`EventPublisher`: `zg.health.state.<id>` / `zg.health.notification.<id>`, PubAck awaited,
    `Nats-Msg-Id` = event id."""

    def __init__(
        self, connection: NatsConnection, *, timeout: timedelta = timedelta(seconds=5)
    ) -> None:
        self._publisher = JetStreamPublisher(connection, timeout=timeout)

    async def publish(self, event: HealthEvent) -> None:
        """Publish one event on its subject; raises if the outcome stays unknown."""
        if isinstance(event, InstanceStateChanged):
            subject = subjects.state_changed_subject(event.instance_id)
        else:
            subject = subjects.notification_subject(event.instance_id)
        await self._publisher.publish_event(subject, event, stream=subjects.STREAM_HEALTH)
