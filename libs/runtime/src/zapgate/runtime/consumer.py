"""The one pull-consumer loop: fetch, decode, dispatch, then ack, nak with delay, or dead-letter.

What a handler's outcome means:

| handler                                  | the loop                                    | counts |
| ---------------------------------------- | ------------------------------------------- | ------ |
| returns                                  | ack                                         | -      |
| raises `Postpone(delay)` (lease, hold)   | nak with `delay`                            | no     |
| raises `DependencyUnavailable`, or an    | nak with the spec's `dependency_delay`      | no     |
| error of a dependency (database, NATS,   |                                             |        |
| network: `DEPENDENCY_ERRORS`)            |                                             |        |
| raises `MessageFailure` or any other     | count it; nak with growing delay; at the    | yes    |
| exception                                | spec's `max_failures`: dead-letter          |        |
| raises `Abandoned` (the delivery is no    | nothing: left unsettled for its new owner   | no     |
| longer this process's, e.g. a pin moved)  |                                             |        |
| the body does not decode, or raises      | dead-letter at once                         | yes    |
| `InvalidMessage`                         |                                             |        |
| never returns (the process dies on it,   | counted when redelivered (`num_delivered`   | yes    |
| or it outlives `ack_wait`)               | > 1, before the handler runs); then as above|        |

A redelivery is counted before its handler runs and the count is taken back unless the message
itself fails, so a message that kills the process (or hangs) is dead-lettered as
`delivery_unfinished` after `max_failures` such deliveries. First deliveries write nothing.

Dead-lettering keeps the message in the service's dead-letter table (payload, headers,
subject, stream sequence, reason, attempts, times), publishes a copy to the spec's
`dead_letter_subject`, counts `zapgate_dead_letters_total`, logs `message_dead_lettered`, and
terminates the delivery so the next messages flow. If the ledger itself cannot be written, the
message is nak'ed as a dependency failure: nothing is dropped.

Each message is handled with its ids bound in structlog's contextvars, and ends in one
canonical `message_handled` line (outcome, duration, reason, plus whatever the handler bound).
A handler adds its own result to that line with `annotate(**fields)` instead of logging a line
of its own (the fields are the delivery's only: nothing carries over to the next one).

With a `heartbeat` (the constructor's, else the spec's), one periodic task tells JetStream every
`heartbeat` that each delivery in flight is still being worked on (`+WPI`, which restarts its
ack wait): the ack wait stays short, so a crashed process's messages come back within seconds,
while a handler that is alive takes as long as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import Error as NatsError
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.connection import NotConnectedError
from zapgate.runtime.dead_letters import DeadLetterStore, FailedMessage
from zapgate.runtime.publisher import JetStreamPublisher, Publisher
from zapgate.runtime.streams import ensure_consumer

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from zapgate.runtime.connection import NatsConnection
    from zapgate.runtime.streams import ConsumerSpec

M = TypeVar("M")
_log = structlog.get_logger("zapgate.runtime.consumer")

DEAD_LETTER_HEADER_PREFIX = "Zg-Dead-Letter-"
UNFINISHED = "delivery_unfinished"
"""Reason code of a message whose deliveries kept ending without an outcome."""
_UNFINISHED_REASON = (
    "a delivery ended without an outcome: the process stopped while handling it, or the "
    "handler outlived ack_wait"
)


# The fields of the delivery handled in a task, with that task: a task created meanwhile copies
# the context, but its lines are not the delivery's (it may outlive it).
_CANONICAL: contextvars.ContextVar[tuple[asyncio.Task[Any] | None, dict[str, object]] | None] = (
    contextvars.ContextVar("zapgate_canonical_fields", default=None)
)


def annotate(**fields: object) -> bool:
    """Add `fields` to the canonical `message_handled` line of the delivery being handled in
    this task; a later call overrides a field of an earlier one (the handler's result, e.g.
    the send's status, attempt and latency). False when no delivery is being handled here (an
    API request, a background task): the caller then logs its own line. `event`, `outcome`
    and `duration_ms` are the loop's own fields and cannot be set.
    """
    current = _CANONICAL.get()
    if current is None or current[0] is not asyncio.current_task():
        return False
    current[1].update(fields)
    return True


_LOOP_FIELDS = ("event", "outcome", "duration_ms")


class MessageFailure(Exception):  # noqa: N818 - a failure of the message, named as such
    """The message itself could not be processed; counts toward the spec's `max_failures`.

    `code` is a stable snake_case reason code stored with the dead letter.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class InvalidMessage(MessageFailure):
    """The message can never be processed (bad body, unknown version): dead-letter at once."""


class DependencyUnavailable(Exception):  # noqa: N818 - a state, as in the field's terms
    """A dependency is down (database, NATS, provider): nak; never counts toward dead-lettering.

    `delay` overrides the spec's `dependency_delay`.
    """

    def __init__(self, reason: str, *, delay: timedelta | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Postpone(Exception):  # noqa: N818 - an instruction to the loop, not an error
    """Handle this message later (a lease held elsewhere, a hold): nak with `delay`, uncounted."""

    def __init__(self, delay: timedelta, reason: str = "postponed") -> None:
        super().__init__(reason)
        self.delay = delay


class Abandoned(Exception):  # noqa: N818 - an instruction to the loop, not an error
    """This delivery is no longer this process's to settle (e.g. the pin of its partition moved
    to another replica, which has it or gets it after the ack wait): leave it unacknowledged.
    Never counts toward dead-lettering."""


# Exceptions of the database driver, NATS and the network: an outage, not a bad message.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    DependencyUnavailable,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    TimeoutError,
    NotConnectedError,
    ConnectionClosedError,
    NoServersError,
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the handler knows of one delivery besides the decoded body."""

    subject: str
    headers: Mapping[str, str]
    stream: str
    consumer: str
    sequence: int
    num_delivered: int
    data: bytes

    @property
    def msg_id(self) -> str | None:
        """The publisher's `Nats-Msg-Id`, if any."""
        return self.headers.get("Nats-Msg-Id")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery ended: `acked`, `postponed`, `dependency_unavailable`, `abandoned`
    (left unsettled), `failed` (nak'ed, counted), `dead_lettered`; `reason` is empty when
    acked."""

    status: str
    reason: str = ""
    attempts: int = 0
    fields: Mapping[str, object] = field(default_factory=dict)
    """What the handler added to the canonical line (`annotate`)."""


class _Metrics:
    _by_registry: dict[int, _Metrics] = {}  # noqa: RUF012 - one set of collectors per registry

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "zapgate_consumer_messages",
            "Deliveries handled by a pull consumer, by outcome",
            ["consumer", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "zapgate_dead_letters",
            "Messages a consumer gave up on and kept as dead letters, by reason code",
            ["consumer", "reason_code"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> _Metrics:
        metrics = cls._by_registry.get(id(registry))
        if metrics is None:
            metrics = cls._by_registry[id(registry)] = cls(registry)
        return metrics


class PullConsumer(Generic[M]):
    """One durable pull consumer over a supervised connection.

    ```python
    consumer = PullConsumer(
        connection, topology.SENDER_COMMANDS, on_send_message,
        decode=SendMessage.model_validate_json, dead_letters=SqlDeadLetterStore(engine, table),
    )
    await consumer.start()   # declares the consumer, then pulls in a task
    ...
    await consumer.stop()    # stops pulling; deliveries in flight finish first
    ```
    `decode(bytes) -> M` failing dead-letters the message at once (`invalid_message`).
    `heartbeat` (default: the spec's) sends `+WPI` for every delivery in flight that often; it
    must be shorter than the spec's `ack_wait`.
    Up to `concurrency` messages are handled at a time (each in its own task, with its own
    contextvars). After a connection replacement the loop re-subscribes by itself.
    """

    def __init__(  # noqa: PLR0913 - all keyword-only past the three essentials
        self,
        connection: NatsConnection,
        spec: ConsumerSpec,
        handler: Callable[[M, Delivery], Awaitable[None]],
        *,
        decode: Callable[[bytes], M],
        dead_letters: DeadLetterStore,
        publisher: Publisher | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry = REGISTRY,
        batch: int = 64,
        concurrency: int = 1,
        fetch_wait: timedelta = timedelta(seconds=1),
        dependency_errors: tuple[type[BaseException], ...] = DEPENDENCY_ERRORS,
        heartbeat: timedelta | None = None,
    ) -> None:
        if spec.ordered:
            raise ValueError(f"{spec.name} is an ordered consumer: follow it, do not pull it")
        if heartbeat is not None:
            spec = replace(spec, heartbeat=heartbeat)  # checked against ack_wait there
        self.spec = spec
        self._connection = connection
        self._handler = handler
        self._decode = decode
        self._dead_letters = dead_letters
        self._publisher = publisher or JetStreamPublisher(connection)
        self._clock = clock or SystemClock()
        self._metrics = _Metrics.of(registry)
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._fetch_wait = fetch_wait.total_seconds()
        self._dependency_errors = dependency_errors
        self._task: asyncio.Task[None] | None = None
        self._fetching = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._linger = 0.0
        self._in_flight: set[asyncio.Task[Outcome]] = set()
        self._working: dict[int, Msg] = {}
        self._beating: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start pulling in a background task (declares the consumer once connected)."""
        if self._task is None:
            self._stopping = False
            self._stopped.clear()
            self._task = asyncio.create_task(self._run(), name=f"pull-{self.spec.durable}")
            self._task.add_done_callback(_log_if_crashed)
        if self.spec.heartbeat is not None and self._beating is None:
            self._beating = asyncio.create_task(
                _beat(self._working, self.spec.heartbeat), name=f"heartbeat-{self.spec.durable}"
            )
            self._beating.add_done_callback(_log_if_crashed)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching; wait up to `timeout` s for deliveries in flight (the rest come back
        after `ack_wait`)."""
        self._stopping = True
        self._stopped.set()
        if self._task is not None:
            if self._fetching or not self._connection.connected.is_set():
                self._task.cancel()
            # A delivery being handled inline ends (ack, nak or dead letter) before the loop
            # sees `_stopping`; past the timeout it is cancelled and comes back after ack_wait.
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=timeout)
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None
        self.subscribed.clear()

    async def _run(self) -> None:
        while not self._stopping:
            await self._connection.connected.wait()
            generation = self._connection.generation
            try:
                client = self._connection.require()
                await ensure_consumer(client, self.spec)
                subscription = await client.jetstream().pull_subscribe_bind(
                    durable=self.spec.durable, stream=self.spec.stream
                )
            except NotConnectedError:
                continue
            except Exception as error:  # noqa: BLE001 - the loop must outlive any subscribe failure
                _log.warning(
                    "consumer_subscribe_failed", consumer=self.spec.durable, reason=repr(error)
                )
                await asyncio.sleep(self.spec.dependency_delay.total_seconds())
                continue
            self.subscribed.set()
            try:
                await self._pull(subscription, generation)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _pull(self, subscription: JetStreamContext.PullSubscription, generation: int) -> None:
        while self._connection.generation == generation and not self._stopping:
            room = self._batch
            if self._concurrency > 1:
                # Fetch only what can start now: the rest would wait while ack_wait runs.
                await self._slots.acquire()
                self._slots.release()
                room = min(self._batch, max(1, self._concurrency - len(self._in_flight)))
            self._fetching = True
            try:
                messages = await subscription.fetch(room, timeout=self._fetch_wait)
            except TimeoutError:  # nats' own and asyncio's (nats-py raises both from fetch)
                continue
            except (ConnectionClosedError, NotConnectedError):
                return
            except Exception as error:  # noqa: BLE001 - the loop must outlive any fetch failure
                _log.warning(
                    "consumer_fetch_failed", consumer=self.spec.durable, reason=repr(error)
                )
                await asyncio.sleep(self.spec.dependency_delay.total_seconds())
                return
            finally:
                self._fetching = False
            if self._linger > 0 and len(messages) < room:
                messages = await self._linger_for_more(subscription, messages, room, generation)
            await self._handle_fetched(messages)

    async def _linger_for_more(
        self,
        subscription: JetStreamContext.PullSubscription,
        messages: list[Msg],
        room: int,
        generation: int,
    ) -> list[Msg]:
        """Fetch more after a short fetch until `room` messages are held, `linger` s have passed
        since (the clock's monotonic reading, or a fetch waited out the rest), the loop stops or
        the connection is replaced; then return them all, to be handled once. The held
        deliveries are in `_working` meanwhile (the heartbeat keeps them in progress). A fetch
        failure ends the linger: the next fetch of the loop meets it."""
        deadline = self._clock.monotonic() + self._linger
        held = list(messages)
        for message in held:
            self._working[id(message)] = message
        try:
            while (
                len(held) < room
                and not self._stopping
                and self._connection.generation == generation
            ):
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                more = await self._fetch_unless_stopped(subscription, room - len(held), remaining)
                if not more:
                    break
                for message in more:
                    self._working[id(message)] = message
                held += more
        finally:
            for message in held:
                self._working.pop(id(message), None)
        return held

    async def _fetch_unless_stopped(
        self, subscription: JetStreamContext.PullSubscription, room: int, timeout: float
    ) -> list[Msg]:
        """Up to `room` messages within `timeout` s; [] when none came, the fetch failed or
        `stop()` was called meanwhile (what that fetch had taken comes back after ack_wait)."""
        fetching = asyncio.ensure_future(subscription.fetch(room, timeout=timeout))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({fetching, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not fetching.done():
                fetching.cancel()
        if fetching.cancelled():
            return []
        try:
            return fetching.result()
        except Exception:  # noqa: BLE001 - a timeout, or a failure the next fetch meets
            return []

    async def _handle_fetched(self, messages: list[Msg]) -> None:
        """Hand one fetch's messages to the handler: inline, or one task each in a slot."""
        for message in messages:
            if self._concurrency == 1:
                await self.handle(message)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._handle_in_slot(message))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _handle_in_slot(self, message: Msg) -> Outcome:
        try:
            return await self.handle(message)
        finally:
            self._slots.release()

    async def handle(self, message: Msg) -> Outcome:
        """Handle one delivery to its end (ack, nak or dead letter) and log it once."""
        delivery = _delivery(message, self.spec.durable)
        started = time.perf_counter()
        self._working[id(message)] = message
        try:
            return await self._handle(message, delivery, started)
        finally:
            self._working.pop(id(message), None)

    async def _handle(self, message: Msg, delivery: Delivery, started: float) -> Outcome:
        extra: dict[str, object] = {}
        token = _CANONICAL.set((asyncio.current_task(), extra))
        try:
            return await self._handle_logged(message, delivery, started, extra)
        finally:
            _CANONICAL.reset(token)

    async def _handle_logged(
        self, message: Msg, delivery: Delivery, started: float, extra: dict[str, object]
    ) -> Outcome:
        with structlog.contextvars.bound_contextvars(**_delivery_fields(delivery)):
            outcome = await self._outcome(message, delivery)
            for own in _LOOP_FIELDS:
                extra.pop(own, None)
            if extra:
                outcome = replace(outcome, fields=dict(extra))
            self._metrics.handled.labels(delivery.consumer, outcome.status).inc()
            fields = {**extra, "outcome": outcome.status, "duration_ms": _ms_since(started)}
            if outcome.reason:
                fields["reason"] = outcome.reason
            if outcome.attempts:
                fields["attempts"] = outcome.attempts
            if outcome.status == "acked":
                _log.info("message_handled", **fields)
            else:
                _log.warning("message_handled", **fields)
        return outcome

    async def _outcome(self, message: Msg, delivery: Delivery) -> Outcome:
        try:
            decoded = self._decode(delivery.data)
        except Exception as error:  # noqa: BLE001 - any decode failure means a bad body
            return await self._dead_letter(
                message, delivery, "invalid_message", _describe(error), attempts=1
            )
        counted_ahead = False
        if delivery.num_delivered > 1:
            # A redelivery may follow a delivery that never ended (the process died on this
            # message, or the handler outlived ack_wait): this attempt is counted before it runs
            # and taken back unless the message itself fails. First deliveries cost nothing.
            unfinished = _failed_message(delivery, UNFINISHED, _UNFINISHED_REASON)
            try:
                ahead = await self._dead_letters.record_failure(unfinished, self._clock.now())
            except Exception as error:  # noqa: BLE001 - cannot count: never drop, retry later
                return await self._dependency(message, DependencyUnavailable(_describe(error)))
            if ahead > self.spec.max_failures:
                return await self._dead_letter(
                    message, delivery, UNFINISHED, _UNFINISHED_REASON, ahead - 1
                )
            counted_ahead = True
        outcome = await self._dispatch(message, delivery, decoded, counted_ahead=counted_ahead)
        if counted_ahead and outcome.status in {"postponed", "dependency_unavailable", "abandoned"}:
            await self._uncount(delivery)
        return outcome

    async def _dispatch(
        self, message: Msg, delivery: Delivery, decoded: M, *, counted_ahead: bool
    ) -> Outcome:
        try:
            await self._handler(decoded, delivery)
        except Exception as error:  # noqa: BLE001 - settled by the outcome table below
            return await self._conclude(message, delivery, error, counted_ahead=counted_ahead)
        return await self._conclude(message, delivery, None, counted_ahead=counted_ahead)

    async def _conclude(  # noqa: PLR0911 - one return per row of the module's outcome table
        self, message: Msg, delivery: Delivery, error: Exception | None, *, counted_ahead: bool
    ) -> Outcome:
        """Settle one delivery by what its handler did: returned (`error` None) or raised."""
        if error is None:
            await _settle(message.ack())
            if delivery.num_delivered > 1:
                await self._forget(delivery)
            return Outcome("acked")
        if isinstance(error, Postpone):
            await _settle(message.nak(delay=error.delay.total_seconds()))
            return Outcome("postponed", str(error))
        if isinstance(error, Abandoned):
            return Outcome("abandoned", str(error))
        if isinstance(error, InvalidMessage):
            return await self._dead_letter(
                message, delivery, error.code, error.detail or error.code, 1
            )
        if isinstance(error, MessageFailure):
            return await self._failed(
                message, delivery, error.code, error.detail or error.code, counted_ahead
            )
        if isinstance(error, self._dependency_errors):
            return await self._dependency(message, error)
        _log.error(
            "handler_failed",
            consumer=delivery.consumer,
            exc_info=(type(error), error, error.__traceback__),
        )
        return await self._failed(
            message, delivery, "handler_error", _describe(error), counted_ahead
        )

    async def _dependency(self, message: Msg, error: BaseException) -> Outcome:
        delay = self.spec.dependency_delay
        if isinstance(error, DependencyUnavailable) and error.delay is not None:
            delay = error.delay
        await _settle(message.nak(delay=delay.total_seconds()))
        return Outcome("dependency_unavailable", _describe(error))

    async def _failed(
        self,
        message: Msg,
        delivery: Delivery,
        code: str,
        reason: str,
        counted_ahead: bool,  # noqa: FBT001 - positional inside the loop only
    ) -> Outcome:
        failed = _failed_message(delivery, code, reason)
        try:
            if counted_ahead:
                # The failure counted in advance becomes this one, with its own reason.
                await self._dead_letters.uncount(
                    delivery.consumer, delivery.stream, delivery.sequence
                )
            attempts = await self._dead_letters.record_failure(failed, self._clock.now())
        except Exception as error:  # noqa: BLE001 - cannot count: never drop, retry later
            return await self._dependency(message, DependencyUnavailable(_describe(error)))
        if attempts >= self.spec.max_failures:
            return await self._dead_letter(message, delivery, code, reason, attempts)
        delay = self.spec.retry_delay_after(attempts)
        await _settle(message.nak(delay=delay.total_seconds()))
        return Outcome("failed", f"{code}: {reason}", attempts)

    async def _dead_letter(
        self, message: Msg, delivery: Delivery, code: str, reason: str, attempts: int
    ) -> Outcome:
        failed = _failed_message(delivery, code, reason)
        try:
            kept = await self._dead_letters.mark_dead(failed, self._clock.now())
            await self._publisher.publish(
                self.spec.dead_letter_subject,
                delivery.data,
                stream=self.spec.dead_letter_stream,
                msg_id=f"{delivery.consumer}:{delivery.stream}:{delivery.sequence}",
                headers=_dead_letter_headers(delivery, code, max(attempts, kept.attempts)),
            )
        except Exception as error:  # noqa: BLE001 - not kept yet: the message must come back
            return await self._dependency(message, DependencyUnavailable(_describe(error)))
        await _settle(message.term())
        self._metrics.dead_letters.labels(delivery.consumer, code[:64]).inc()
        _log.error(
            "message_dead_lettered",
            reason_code=code,
            reason=reason[:500],
            attempts=max(attempts, kept.attempts),
            dead_letter_subject=self.spec.dead_letter_subject,
        )
        return Outcome("dead_lettered", f"{code}: {reason}", max(attempts, kept.attempts))

    async def _uncount(self, delivery: Delivery) -> None:
        try:
            await self._dead_letters.uncount(delivery.consumer, delivery.stream, delivery.sequence)
        except Exception as error:  # noqa: BLE001 - an extra count errs toward keeping a message
            _log.warning("failure_count_not_taken_back", reason=_describe(error))

    async def _forget(self, delivery: Delivery) -> None:
        try:
            await self._dead_letters.forget(delivery.consumer, delivery.stream, delivery.sequence)
        except Exception as error:  # noqa: BLE001 - the message is done; a stale count stays
            _log.warning("failure_count_not_cleared", reason=_describe(error))


BatchHandler = Callable[[Sequence[tuple[M, Delivery]]], Awaitable[Sequence[Exception | None]]]
"""`handler(items) -> results`: one result per item, in order; None when that delivery is done,
else the exception that stands for its outcome (as a single handler would have raised it)."""


class BatchPullConsumer(PullConsumer[M]):
    """A `PullConsumer` whose handler takes a whole fetch at once (a database writer's shape).

    ```python
    consumer = BatchPullConsumer(
        connection, topology.INGEST_ARCHIVER, store_many, decode=bytes,
        dead_letters=SqlDeadLetterStore(engine, table), batch=256,
    )
    ```
    First deliveries that decode are handed to `handler` together, in one call and one task;
    each result then settles its delivery by the module's outcome table (ack, nak, dead letter),
    the counter moves once per outcome, and the batch ends in one canonical `batch_handled` line
    (size, outcomes, duration); a delivery that is not acked also gets its own `message_handled`
    line with its ids and reason. Deliveries that do not decode, and redeliveries (which are
    counted before they run, see the module doc), go through the single-message path with a
    batch of one. Batches are handled one after another (no `concurrency`).

    `linger` (default zero: none) trades a little latency for fewer, fuller batches when
    messages trickle in: after a fetch that returned fewer than `batch`, the loop keeps
    fetching (each fetch waits for the next messages, up to what is left of `linger`) until
    `batch` messages are held or `linger` has passed, then hands them over once. The held
    deliveries get the heartbeat's `+WPI`; `stop()` ends the linger and the held batch is
    handled before the loop ends. At most a quarter of the spec's `ack_wait` (ValueError).
    """

    def __init__(  # noqa: PLR0913 - as PullConsumer's, all keyword-only past the essentials
        self,
        connection: NatsConnection,
        spec: ConsumerSpec,
        handler: BatchHandler[M],
        *,
        decode: Callable[[bytes], M],
        dead_letters: DeadLetterStore,
        publisher: Publisher | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry = REGISTRY,
        batch: int = 64,
        fetch_wait: timedelta = timedelta(seconds=1),
        dependency_errors: tuple[type[BaseException], ...] = DEPENDENCY_ERRORS,
        heartbeat: timedelta | None = None,
        linger: timedelta = timedelta(0),
    ) -> None:
        async def one(decoded: M, delivery: Delivery) -> None:
            (result,) = await handler([(decoded, delivery)])
            if result is not None:
                raise result

        super().__init__(
            connection,
            spec,
            one,
            decode=decode,
            dead_letters=dead_letters,
            publisher=publisher,
            clock=clock,
            registry=registry,
            batch=batch,
            fetch_wait=fetch_wait,
            dependency_errors=dependency_errors,
            heartbeat=heartbeat,
        )
        self._batch_handler = handler
        if not timedelta(0) <= linger <= self.spec.ack_wait / 4:
            raise ValueError(f"{spec.name}: linger must be between zero and a quarter of ack_wait")
        self._linger = linger.total_seconds()

    async def _handle_fetched(self, messages: list[Msg]) -> None:
        started = time.perf_counter()
        items: list[tuple[M, Delivery]] = []
        first: list[Msg] = []
        alone: list[Msg] = []
        for message in messages:
            delivery = _delivery(message, self.spec.durable)
            if delivery.num_delivered > 1:
                alone.append(message)
                continue
            try:
                decoded = self._decode(delivery.data)
            except Exception:  # noqa: BLE001 - the single path dead-letters it with its reason
                alone.append(message)
                continue
            items.append((decoded, delivery))
            first.append(message)
        for message in alone:
            await self.handle(message)
        if items:
            await self._handle_batch(first, items, started)

    async def _handle_batch(
        self, messages: list[Msg], items: list[tuple[M, Delivery]], started: float
    ) -> None:
        for message in messages:
            self._working[id(message)] = message
        try:
            try:
                results: Sequence[Exception | None] = await self._batch_handler(items)
            except Exception as error:  # noqa: BLE001 - the whole batch shares this outcome
                results = [error] * len(items)
            if len(results) != len(items):
                mismatch = RuntimeError(f"{len(results)} results for {len(items)} deliveries")
                results = [mismatch] * len(items)
            outcomes: dict[str, int] = {}
            for message, (_, delivery), result in zip(messages, items, results, strict=True):
                outcome = await self._conclude(message, delivery, result, counted_ahead=False)
                outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1
                if outcome.status != "acked":
                    _log.warning(
                        "message_handled",
                        **_delivery_fields(delivery),
                        outcome=outcome.status,
                        reason=outcome.reason,
                        attempts=outcome.attempts,
                    )
        finally:
            for message in messages:
                self._working.pop(id(message), None)
        for status, count in outcomes.items():
            self._metrics.handled.labels(self.spec.durable, status).inc(count)
        line = _log.info if set(outcomes) == {"acked"} else _log.warning
        line(
            "batch_handled",
            consumer=self.spec.durable,
            size=len(items),
            outcomes=outcomes,
            first_stream_seq=items[0][1].sequence,
            last_stream_seq=items[-1][1].sequence,
            duration_ms=_ms_since(started),
        )


def _delivery_fields(delivery: Delivery) -> dict[str, object]:
    return {
        "consumer": delivery.consumer,
        "stream": delivery.stream,
        "stream_seq": delivery.sequence,
        "subject": delivery.subject[:200],
        "msg_id": (delivery.msg_id or "")[:200],
        "num_delivered": delivery.num_delivered,
    }


async def _beat(working: Mapping[int, Msg], every: timedelta) -> None:
    """Every `every`, send `+WPI` for each delivery in `working` (one task for all of them: each
    hears one at most `every` after it started, then every `every`). A delivery that ends
    meanwhile is left out; a `+WPI` that cannot be sent is not retried (the next one follows)."""
    while True:
        await asyncio.sleep(every.total_seconds())  # a period, not a wait for an event
        for message in list(working.values()):
            with contextlib.suppress(Exception):
                await message.in_progress()


def _log_if_crashed(task: asyncio.Task[None]) -> None:
    # The loop catches everything it can survive; anything else must not end it silently.
    if not task.cancelled() and task.exception() is not None:
        _log.critical("consumer_loop_crashed", task=task.get_name(), reason=repr(task.exception()))


async def _settle(acknowledgement: Awaitable[None]) -> None:
    # An ack/nak/term that cannot be sent (connection gone) is not fatal: the server
    # redelivers the message after ack_wait and it is handled again.
    try:
        await acknowledgement
    except NatsError as error:
        _log.warning("acknowledgement_failed", reason=repr(error))


def _delivery(message: Msg, consumer: str) -> Delivery:
    metadata = message.metadata
    return Delivery(
        subject=message.subject,
        headers=dict(message.headers or {}),
        stream=metadata.stream,
        consumer=consumer,
        sequence=metadata.sequence.stream,
        num_delivered=metadata.num_delivered,
        data=message.data,
    )


def _failed_message(delivery: Delivery, code: str, reason: str) -> FailedMessage:
    return FailedMessage(
        consumer=delivery.consumer,
        stream=delivery.stream,
        sequence=delivery.sequence,
        subject=delivery.subject,
        payload=delivery.data,
        headers=dict(delivery.headers),
        num_delivered=delivery.num_delivered,
        reason_code=code,
        reason=reason,
    )


def _dead_letter_headers(delivery: Delivery, code: str, attempts: int) -> dict[str, str]:
    # JetStream acts on Nats-* headers (expected stream, schedules, TTL): keep them as data only.
    headers = {
        (f"{DEAD_LETTER_HEADER_PREFIX}Original-{key}" if key.startswith("Nats-") else key): value
        for key, value in delivery.headers.items()
    }
    headers.update(
        {
            f"{DEAD_LETTER_HEADER_PREFIX}Reason": code,
            f"{DEAD_LETTER_HEADER_PREFIX}Stream": delivery.stream,
            f"{DEAD_LETTER_HEADER_PREFIX}Sequence": str(delivery.sequence),
            f"{DEAD_LETTER_HEADER_PREFIX}Consumer": delivery.consumer,
            f"{DEAD_LETTER_HEADER_PREFIX}Attempts": str(attempts),
        }
    )
    # The original subject may be long or odd; as a header value it only needs no CR/LF.
    headers[f"{DEAD_LETTER_HEADER_PREFIX}Subject"] = delivery.subject.replace("\r", " ").replace(
        "\n", " "
    )[:1024]
    return headers


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@dataclass(frozen=True, slots=True)
class Consumer:
    """One durable consumer a service runs: its declared spec (topology), its handler and the
    decoder of its payloads (`bytes -> message`; raising makes the message invalid).

    A service lists its consumers (`handlers.consumers(settings)`) and its lifecycle starts one
    loop per entry: a `PullConsumer`, or a `PinnedPullConsumer` (`zapgate.runtime.pinned`) when
    `partition` names the send-command partition it pins. `batch` is the messages per fetch.
    """

    spec: ConsumerSpec
    handler: Callable[[Any, Delivery], Awaitable[None]]
    decode: Callable[[bytes], Any]
    partition: int | None = None
    batch: int = 64  # PullConsumer's own default
