"""The sender's JetStream adapters: the event publisher (always `stream=` and a `Nats-Msg-Id`),
the durable pull loop that hands each message to its handler, and the in-progress heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from zapgate.contracts import subjects
from zapgate.contracts.sending import SendOutcome

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from datetime import timedelta

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from zapgate.contracts.envelope import Envelope

_log = structlog.get_logger("zapgate.sender")
_PUBLISH_ATTEMPTS = 3
_FETCH_MAX = 256
_FETCH_WAIT = 1.0


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


class JetStreamOutcomeLog:
    """`OutcomeLog` over ZG_SEND: the last message on `zg.send.outcome.<command_id>`."""

    def __init__(self, nc: Client, *, timeout: float = 2.0) -> None:
        self._js = nc.jetstream(timeout=timeout)

    async def last_outcome(self, command_id: str) -> SendOutcome | None:
        try:
            stored = await self._js.get_last_msg(
                subjects.STREAM_SEND, subjects.send_outcome_subject(command_id)
            )
        except NotFoundError:
            return None
        if stored.data is None:
            return None
        return SendOutcome.model_validate_json(stored.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSpec:
    """One durable pull consumer: what it reads and how long a delivery may stay unacked."""

    stream: str
    subject: str
    durable: str
    ack_wait: timedelta
    max_in_flight: int


class PullLoop:
    """A durable pull consumer whose messages each run `handle(message)` as their own task.

    Tasks start in stream order (a handler that takes a lane before its first await keeps
    that order); at most `max_in_flight` run at once. `handle` acks, naks or terms itself.
    """

    def __init__(
        self, nc: Client, spec: ConsumerSpec, handle: Callable[[Msg], Coroutine[Any, Any, None]]
    ) -> None:
        self._js = nc.jetstream()
        self._spec = spec
        self._handle = handle
        self._room = asyncio.Semaphore(spec.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        spec = self._spec
        # Create or update: a consumer made with an older ack wait (5 min before) takes the
        # new one, so a crashed sender's commands come back within seconds everywhere.
        await self._js.add_consumer(
            spec.stream,
            config=ConsumerConfig(
                durable_name=spec.durable,
                filter_subject=spec.subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=spec.ack_wait.total_seconds(),
                max_ack_pending=spec.max_in_flight * 2,
            ),
        )
        self._subscription = await self._js.pull_subscribe_bind(spec.durable, stream=spec.stream)
        self._loop = asyncio.create_task(
            self._pull(self._subscription), name=f"pull-{spec.durable}"
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop pulling; let running handlers finish for up to `grace` seconds."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._subscription is not None:
            # A pull subscription left open makes the connection's drain wait for its drain
            # timeout (30 s) on shutdown; the durable consumer stays on the server.
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        if self._tasks:
            # Unfinished work is not acked: JetStream redelivers it after the ack wait.
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _pull(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            await self._room.acquire()
            free = 1
            while free < _FETCH_MAX and not self._room.locked():
                await self._room.acquire()
                free += 1
            try:
                messages = await subscription.fetch(free, timeout=_FETCH_WAIT)
            except (NatsTimeoutError, TimeoutError):
                messages = []
            except Exception as exc:  # noqa: BLE001 - a broken fetch must not end the loop
                _log.warning("fetch_failed", durable=self._spec.durable, reason=repr(exc))
                messages = []
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            for _ in range(free - len(messages)):
                self._room.release()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.release()
        if not task.cancelled() and task.exception() is not None:
            _log.error("handler_crashed", durable=self._spec.durable, reason=repr(task.exception()))


@contextlib.asynccontextmanager
async def in_progress(message: Msg, every: timedelta) -> AsyncIterator[None]:
    """Tell JetStream every `every` that `message` is still being worked on (`+WPI`).

    The ack wait can then stay short (a crashed sender's messages come back within seconds)
    while a provider call or a database outage takes as long as it takes.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(every.total_seconds())
            with contextlib.suppress(Exception):
                await message.in_progress()

    heartbeat = asyncio.create_task(beat())
    try:
        yield
    finally:
        heartbeat.cancel()
