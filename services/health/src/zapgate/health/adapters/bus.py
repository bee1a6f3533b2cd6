"""JetStream adapter of `EventPublisher`: health's events on stream ZG_HEALTH."""

from __future__ import annotations

from faststream.nats import NatsBroker

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.health.ports import HealthEvent


class JetStreamPublisher:
    """Publishes with `stream=` (PubAck awaited) and `Nats-Msg-Id` = event id, so a retried
    publish of the same outbox row is stored once."""

    def __init__(self, broker: NatsBroker, *, timeout_s: float = 5.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def publish(self, event: HealthEvent) -> None:
        if isinstance(event, InstanceStateChanged):
            subject = subjects.state_changed_subject(event.instance_id)
        else:
            subject = subjects.notification_subject(event.instance_id)
        await self._broker.publish(
            event,
            subject,
            stream=subjects.STREAM_HEALTH,
            headers={subjects.MSG_ID_HEADER: str(event.event_id)},
            timeout=self._timeout_s,
        )
