"""The running sender: its JetStream consumers, per-instance lanes, and the tick schedule.

The command consumer is a raw nats-py durable pull loop rather than a FastStream subscriber:
it must keep per-instance order while different instances run in parallel and ack each message
only after its decision is stored, and FastStream's pull consume measured at 0.30x raw
(PERFORMANCE.md). Receipts, state changes and ticks use the same small loop for one shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceStateChanged
from zapgate.contracts.sending import SendMessage
from zapgate.contracts.webhooks import MessageStatusReported, WebhookKind
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import all_streams
from zapgate.sender.lanes import Lanes
from zapgate.sender.sending import handle_send_command, release_held
from zapgate.sender.tracking import (
    Receipt,
    StuckPolicy,
    apply_message_status,
    on_instance_recovered,
    sweep,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from zapgate.sender.sending import SenderDeps

_log = structlog.get_logger("zapgate.sender")

# The sender's own tick, produced by the NATS server from a message schedule in ZG_TICKS.
SENDER_TICK: Final = subjects.SENDER_TICK
SENDER_TICK_SCHEDULE: Final = subjects.SENDER_TICK_SCHEDULE
_FETCH_MAX = 256
_FETCH_WAIT = 1.0
_NAK_DELAY = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOptions:
    consumer_prefix: str = "sender"
    max_in_flight: int = 512
    command_ack_wait: timedelta = timedelta(minutes=5)
    status_match_attempts: int = 5
    status_retry_delay: timedelta = timedelta(seconds=1)
    sweep_every: timedelta | None = timedelta(seconds=30)
    stream_replicas: int = 1
    stuck: StuckPolicy = field(default_factory=StuckPolicy)


class SenderService:
    """Consumers and lanes over one NATS connection; `start()` then `stop()`."""

    def __init__(self, nc: Client, deps: SenderDeps, options: ServiceOptions) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.deps = deps
        self.options = options
        self.lanes = Lanes()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[JetStreamContext.PullSubscription] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()

    async def start(self) -> None:
        await ensure_streams(self._nc, all_streams(self.options.stream_replicas))
        if self.options.sweep_every is not None:
            await ensure_schedule(
                self._nc,
                stream=subjects.STREAM_TICKS,
                schedule_subject=SENDER_TICK_SCHEDULE,
                target_subject=SENDER_TICK,
                every=self.options.sweep_every,
            )
        prefix = self.options.consumer_prefix
        loops: list[tuple[str, str, str, timedelta, Callable[[list[Msg]], Awaitable[None]]]] = [
            (
                subjects.STREAM_SEND,
                subjects.SEND_COMMANDS_ALL,
                f"{prefix}-commands",
                self.options.command_ack_wait,
                self._on_commands,
            ),
            (
                subjects.STREAM_WEBHOOKS,
                subjects.webhook_subject(WebhookKind.MESSAGE_STATUS.value),
                f"{prefix}-receipts",
                timedelta(seconds=30),
                self._on_receipts,
            ),
            (
                subjects.STREAM_HEALTH,
                subjects.STATE_CHANGED_ALL,
                f"{prefix}-states",
                timedelta(seconds=30),
                self._on_states,
            ),
            (
                subjects.STREAM_TICKS,
                SENDER_TICK,
                f"{prefix}-ticks",
                timedelta(minutes=2),
                self._on_ticks,
            ),
        ]
        for stream, subject, durable, ack_wait, handler in loops:
            subscription = await self._js.pull_subscribe(
                subject,
                durable=durable,
                stream=stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=ack_wait.total_seconds(),
                    max_ack_pending=self.options.max_in_flight * 2,
                ),
            )
            self._subscriptions.append(subscription)
            self._tasks.append(
                asyncio.create_task(self._pull(subscription, handler), name=f"pull-{durable}")
            )
        _log.info("sender_started", consumers=[loop[2] for loop in loops])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # A pull subscription left open makes the broker's connection drain wait for its
        # drain timeout (30 s) on shutdown; the durable consumers stay on the server.
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        # Work in progress finishes (its outcome is stored and acked) or is redelivered.
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=10)
        await self.lanes.close()

    def release(self, instance_id: str, command_id: str) -> None:
        """Queue a held command in its instance's lane."""
        future = self.lanes.submit(instance_id, lambda: release_held(command_id, self.deps))
        future.add_done_callback(_log_release_failure(command_id))

    async def sweep_now(self) -> None:
        await sweep(self.deps, self.options.stuck, self.release)

    # --- loops ------------------------------------------------------------------------------------

    async def _pull(
        self,
        subscription: object,
        handler: Callable[[list[Msg]], Awaitable[None]],
    ) -> None:
        fetch = subscription.fetch  # type: ignore[attr-defined]
        while True:
            batch = self._batch_size() if handler == self._on_commands else _FETCH_MAX
            if batch == 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                messages: list[Msg] = await fetch(batch, timeout=_FETCH_WAIT)
            except (NatsTimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken fetch must not end the loop
                _log.warning("fetch_failed", reason=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(_NAK_DELAY)
                continue
            await handler(messages)

    def _batch_size(self) -> int:
        return max(0, min(_FETCH_MAX, self.options.max_in_flight - len(self._in_flight)))

    async def _on_commands(self, messages: list[Msg]) -> None:
        for message in messages:
            try:
                command = SendMessage.model_validate_json(message.data)
            except ValidationError as exc:
                # It can never become valid: drop it loudly instead of redelivering forever.
                _log.error("command_invalid", subject=message.subject, reason=str(exc.errors()[:3]))
                await message.term()
                continue
            future = self.lanes.submit(
                command.instance_id, partial(handle_send_command, command, self.deps)
            )
            task = asyncio.create_task(self._settle(message, command, future))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()

    async def _settle(
        self, message: Msg, command: SendMessage, future: asyncio.Future[Any]
    ) -> None:
        try:
            outcome = await future
        except Exception as exc:  # noqa: BLE001 - the command must come back, never be lost
            _log.error(
                "command_failed",
                command_id=command.command_id,
                instance_id=command.instance_id,
                reason=f"{type(exc).__name__}: {exc}",
            )
            with contextlib.suppress(Exception):
                await message.nak(delay=_NAK_DELAY)
            return
        if outcome is None:
            # Another delivery holds the decision (maybe one a crash cut off inside the provider
            # call): come back once its lease is over, then replay or reconcile it.
            retry_in = self.deps.policy.sending_lease.total_seconds()
            _log.info(
                "command_pending",
                command_id=command.command_id,
                instance_id=command.instance_id,
                retry_in_s=retry_in,
            )
            await message.nak(delay=retry_in)
            return
        await message.ack()

    async def _on_receipts(self, messages: list[Msg]) -> None:
        # The receipts of one message in stream order (DELIVERY before READ, or READ would win
        # and the move to `delivered` be lost); different messages side by side.
        by_message: dict[str, list[tuple[Msg, MessageStatusReported]]] = {}
        for message in messages:
            try:
                event = MessageStatusReported.model_validate_json(message.data)
            except ValidationError as exc:
                _log.error("receipt_invalid", reason=str(exc.errors()[:3]))
                await message.term()
                continue
            by_message.setdefault(event.message_id or "", []).append((message, event))
        await asyncio.gather(*(self._receipts_in_order(group) for group in by_message.values()))

    async def _receipts_in_order(self, group: list[tuple[Msg, MessageStatusReported]]) -> None:
        for message, event in group:
            await self._receipt(message, event)

    async def _receipt(self, message: Msg, event: MessageStatusReported) -> None:
        try:
            receipt = await apply_message_status(event, self.deps)
        except Exception as exc:  # noqa: BLE001 - redelivered later
            _log.error("receipt_failed", message_id=event.message_id, reason=repr(exc))
            await message.nak(delay=_NAK_DELAY)
            return
        delivered = message.metadata.num_delivered or 1
        if receipt is Receipt.UNMATCHED and delivered < self.options.status_match_attempts:
            # The receipt may have overtaken our own record of the send: look again shortly.
            await message.nak(delay=self.options.status_retry_delay.total_seconds())
            return
        if receipt is Receipt.UNMATCHED:
            _log.info("receipt_unmatched", message_id=event.message_id, status=event.status_raw)
        await message.ack()

    async def _on_states(self, messages: list[Msg]) -> None:
        for message in messages:
            try:
                event = InstanceStateChanged.model_validate_json(message.data)
            except ValidationError as exc:
                _log.error("state_event_invalid", reason=str(exc.errors()[:3]))
                await message.term()
                continue
            try:
                await on_instance_recovered(event, self.deps, self.release)
            except Exception as exc:  # noqa: BLE001 - redelivered later
                _log.error("state_event_failed", instance_id=event.instance_id, reason=repr(exc))
                await message.nak(delay=_NAK_DELAY)
                continue
            await message.ack()

    async def _on_ticks(self, messages: list[Msg]) -> None:
        try:
            await self.sweep_now()
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            _log.error("sweep_failed", reason=repr(exc))
        for message in messages:
            await message.ack()


def _log_release_failure(command_id: str) -> Callable[[asyncio.Future[Any]], None]:
    def check(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            # The row stays held: the next sweep releases it again.
            _log.error("release_failed", command_id=command_id, reason=repr(error))

    return check
