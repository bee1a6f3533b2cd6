"""Off the request path: store every webhook from the stream in PostgreSQL, then tell health.

A durable pull consumer fetches batches; one transaction stores a batch (`ON CONFLICT DO
NOTHING`, so redeliveries are harmless); only after the commit are proofs of life published
and the messages acked. While the database is down nothing is acked: the webhooks wait in
JetStream and are archived when it returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import TypeAdapter, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged, SessionProofOfLife
from zapgate.contracts.webhooks import AnyWebhookEvent, WebhookEvent, WebhookQuarantined
from zapgate.ingest.archive import PayloadRow, QuarantineRow
from zapgate.ingest.gateway import QUARANTINE_SUBJECT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.msg import Msg

    from zapgate.ingest.archive import Archive
    from zapgate.ingest.bus import NatsConnection, Publisher
    from zapgate.ingest.states import KnownStates

log = structlog.get_logger("zapgate.ingest.archiver")
_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)
_FETCH_WAIT = 1.0


def proof_of_life_msg_id(dedupe_key: str) -> str:
    return f"pol:{dedupe_key}"


async def archive_batch(
    messages: Sequence[tuple[str, bytes]],
    archive: Archive,
    publisher: Publisher,
    states: KnownStates,
) -> int:
    """Store one batch and publish its proofs of life. Raises when it must be retried.

    `messages` are (subject, data). Returns how many payload rows were new.
    """
    payloads: list[PayloadRow] = []
    quarantined: list[QuarantineRow] = []
    events: list[WebhookEvent] = []
    for subject, data in messages:
        try:
            if subject == QUARANTINE_SUBJECT:
                quarantined.append(_quarantine_row(WebhookQuarantined.model_validate_json(data)))
                continue
            event: WebhookEvent = _EVENTS.validate_json(data)
        except ValidationError as error:
            # Not written by ingest (nothing else may publish here): say so, keep going.
            log.error("archive_unreadable_message", subject=subject, reason=str(error)[:500])  # noqa: TRY400 - reason is enough
            continue
        events.append(event)
        payloads.append(_payload_row(event))
    inserted = await archive.store(payloads, quarantined)
    for event in events:
        await _prove_life(event, publisher, states)
    return inserted


async def _prove_life(event: WebhookEvent, publisher: Publisher, states: KnownStates) -> None:
    if event.instance_id is None or event.connected_phone is None:
        return
    proof = SessionProofOfLife(
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        correlation_id=event.dedupe_key,
        instance_id=event.instance_id,
        phone=event.connected_phone,
        source_kind=event.kind,
        observed_at=event.moment or event.received_at,
    )
    await publisher.publish(
        subjects.proof_of_life_subject(event.instance_id),
        proof.model_dump_json().encode(),
        proof_of_life_msg_id(event.dedupe_key),
        stream=subjects.STREAM_HEALTH,
    )
    stale = states.contradicted_by_proof_of_life(event.instance_id)
    if stale is not None:
        log.warning(
            "proof_of_life_contradicts_state",
            instance_id=event.instance_id,
            stale_state=stale.to_state.value,
            stale_reason=stale.reason,
            stale_since=stale.observed_at.isoformat(),
            source_kind=event.kind,
            reason="a webhook carrying connectedPhone proves the session alive and complete",
        )


def _payload_row(event: WebhookEvent) -> PayloadRow:
    return PayloadRow(
        received_at=event.received_at,
        instance_id=event.instance_id,
        kind=event.kind.value,
        dedupe_key=event.dedupe_key,
        raw=event.raw,
        event=event.model_dump(mode="json", exclude={"raw"}),
    )


def _quarantine_row(item: WebhookQuarantined) -> QuarantineRow:
    return QuarantineRow(
        received_at=item.received_at,
        code=item.code.value,
        dedupe_key=item.dedupe_key,
        body=base64.b64decode(item.body_base64),
        content_type=item.content_type,
    )


class Archiver:
    """The consumer loop around `archive_batch`."""

    def __init__(  # noqa: PLR0913 - collaborators, all keyword-only
        self,
        *,
        connection: NatsConnection,
        archive: Archive,
        publisher: Publisher,
        states: KnownStates,
        durable: str,
        batch: int,
        retry_delay: float,
        ack_wait: float = 15.0,
    ) -> None:
        self._connection = connection
        self._archive = archive
        self._publisher = publisher
        self._states = states
        self._durable = durable
        self._batch = batch
        self._retry_delay = retry_delay
        self._ack_wait = ack_wait
        self.archived = 0
        self._progress = asyncio.Condition()

    async def wait_archived(self, count: int, timeout: float) -> None:
        """Return once `count` messages were stored and acked (tests, the replay CLI)."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.archived >= count)

    async def run(self) -> None:
        while True:
            await self._connection.connected.wait()
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the loop outlives NATS outages
                log.warning("archiver_restarting", reason=repr(error))
                await asyncio.sleep(self._retry_delay)

    async def _consume(self) -> None:
        client = self._connection.require()
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            subjects.WEBHOOKS_ALL,
            durable=self._durable,
            stream=subjects.STREAM_WEBHOOKS,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_ack_pending=self._batch * 4,
            ),
        )
        while True:
            try:
                messages = await subscription.fetch(self._batch, timeout=_FETCH_WAIT)
            except NatsTimeoutError:
                continue
            if messages:
                await self._handle(messages)

    async def _handle(self, messages: list[Msg]) -> None:
        batch = [(message.subject, message.data) for message in messages]
        try:
            inserted = await archive_batch(batch, self._archive, self._publisher, self._states)
        except Exception as error:  # noqa: BLE001 - DB or NATS down: retry the whole batch later
            log.warning(
                "archive_batch_failed",
                size=len(messages),
                reason=repr(error)[:300],
                retry_in_s=self._retry_delay,
            )
            for message in messages:
                with contextlib.suppress(Exception):
                    await message.nak(delay=self._retry_delay)
            return
        try:
            for message in messages:
                await message.ack()
        except Exception as error:  # noqa: BLE001 - stored already: a redelivery is a no-op insert
            log.warning("archive_ack_failed", size=len(messages), reason=repr(error))
        log.info("archive_batch_stored", size=len(messages), new_rows=inserted)
        async with self._progress:
            self.archived += len(messages)
            self._progress.notify_all()


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
