"""The two bus loops of ingest: the archiver's durable pull consumer and the state follower.

The archiver fetches batches and hands each to `service.archive_batch`; only after it returns
are the messages acked. While the database is down nothing is acked: the webhooks wait in
JetStream and are archived when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.ingest.service import archive_batch

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from zapgate.ingest.domain.states import KnownStates
    from zapgate.ingest.ports import Archive, BodyStore, Publisher
    from zapgate.runtime.connection import NatsConnection

log = structlog.get_logger("zapgate.ingest.archiver")
_FETCH_WAIT = 1.0


class Archiver:
    """The consumer loop around `archive_batch`."""

    def __init__(  # noqa: PLR0913 - collaborators, all keyword-only
        self,
        *,
        connection: NatsConnection,
        archive: Archive,
        publisher: Publisher,
        states: KnownStates,
        bodies: BodyStore | None = None,
        durable: str,
        batch: int,
        retry_delay: float,
        ack_wait: float = 15.0,
    ) -> None:
        self._connection = connection
        self._archive = archive
        self._publisher = publisher
        self._states = states
        self._bodies = bodies
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
            except TimeoutError:
                # An idle fetch: nats-py raises its own TimeoutError or, from `_fetch_n`, the
                # builtin one (a subclass relation only one way), so catch the builtin.
                continue
            if messages:
                await self._handle(messages)

    async def _handle(self, messages: list[Msg]) -> None:
        batch = [(message.subject, message.data) for message in messages]
        try:
            inserted = await archive_batch(
                batch, self._archive, self._publisher, self._states, self._bodies
            )
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
