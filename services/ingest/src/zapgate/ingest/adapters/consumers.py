"""The two bus loops of ingest: the archiver on the runtime's pull consumer, and the state
follower (an ordered consumer).

The archiver's fetches go to `handlers.WebhookArchiver` whole (the runtime's
`BatchPullConsumer`), which stores each in one transaction; a delivery is acked only after its
batch is committed. While the database is down nothing is
acked: the webhooks wait in JetStream and are archived when it returns. A message that cannot
be archived after `max_failures` tries is kept in `ingest_dead_letters` and published to
`zg.deadletter.ingest.archiver` with its reason, and the messages behind it flow on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.runtime.consumer import BatchPullConsumer
from zapgate.runtime.topology import INGEST_ARCHIVER

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from prometheus_client import CollectorRegistry

    from zapgate.ingest.domain.states import KnownStates
    from zapgate.ingest.handlers import WebhookArchiver
    from zapgate.ingest.settings import IngestSettings
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.connection import NatsConnection
    from zapgate.runtime.dead_letters import DeadLetterStore
    from zapgate.runtime.publisher import Publisher

log = structlog.get_logger("zapgate.ingest.archiver")


def archiver_consumer(  # noqa: PLR0913 - collaborators, all keyword-only
    connection: NatsConnection,
    archiver: WebhookArchiver,
    settings: IngestSettings,
    *,
    dead_letters: DeadLetterStore,
    publisher: Publisher,
    clock: Clock,
    registry: CollectorRegistry,
) -> BatchPullConsumer[bytes]:
    """The runtime's batch pull consumer over `INGEST_ARCHIVER`, tuned by the `archiver_*`
    settings: each batch (up to `archiver_batch`, gathered for up to `archiver_linger` when
    webhooks trickle in) is archived in one call and logged in one line.
    """
    spec = replace(
        INGEST_ARCHIVER,
        ack_wait=settings.archiver_ack_wait,
        retry_delay=settings.archiver_retry_delay,
        dependency_delay=settings.archiver_retry_delay,
        max_failures=settings.archiver_max_failures,
        max_ack_pending=max(INGEST_ARCHIVER.max_ack_pending, 4 * settings.archiver_batch),
    )
    return BatchPullConsumer(
        connection,
        spec,
        archiver,
        decode=bytes,
        dead_letters=dead_letters,
        publisher=publisher,
        clock=clock,
        registry=registry,
        batch=settings.archiver_batch,
        linger=settings.archiver_linger,
    )


async def follow_instance_states(connection: NatsConnection, states: KnownStates) -> None:
    """Keep `states` current from health's state changes: last per instance, then live."""

    async def on_change(message: Msg) -> None:
        try:
            await states.apply(InstanceStateChanged.model_validate_json(message.data))
        except ValidationError as error:
            log.warning("state_change_unreadable", subject=message.subject, reason=str(error)[:300])

    while True:
        await connection.connected.wait()
        client = connection.require()
        try:
            subscription = await client.jetstream().subscribe(
                subjects.STATE_CHANGED_ALL,
                stream=subjects.STREAM_HEALTH,
                cb=on_change,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
            )
        except Exception as error:  # noqa: BLE001 - retried after the next (re)connect
            log.warning("state_follow_failed", reason=repr(error))
            await asyncio.sleep(1.0)
            continue
        log.info("following_instance_states", since=datetime.now(UTC).isoformat())
        try:
            await asyncio.Event().wait()  # the ordered consumer recovers by itself
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
