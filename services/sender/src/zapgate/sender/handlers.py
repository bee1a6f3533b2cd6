"""The sender's handlers: one per subject it consumes and per API verb it answers.

Each decodes, calls a use case from `service.py`, and settles the message (ack, nak, dead
letter) or replies. The path of a send command, pull to ack, is `on_send_command`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import InstanceStateChanged
from zapgate.contracts.sending import (
    CancelSend,
    GetSendOutcome,
    RetrySend,
    SendMessage,
    SendOutcomeReply,
)
from zapgate.contracts.webhooks import MessageStatusReported, WebhookKind
from zapgate.sender.adapters.bus import ConsumerSpec, in_progress
from zapgate.sender.lanes import Lanes
from zapgate.sender.service import (
    StuckPolicy,
    answer_invalid_command,
    apply_message_status,
    cancel_held,
    get_outcome,
    held_to_release,
    release_held,
    retry_send,
    send_message,
    sweep,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from nats.aio.msg import Msg

    from zapgate.sender.ports import DeadLetterStore
    from zapgate.sender.service import SenderDeps, SweepReport
    from zapgate.sender.settings import SenderSettings

_log = structlog.get_logger("zapgate.sender")
_Request = TypeVar("_Request", GetSendOutcome, RetrySend, CancelSend)
_NAK_DELAY: Final = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerOptions:
    """Timing of the handlers; `heartbeat` must stay well below the command ack wait."""

    heartbeat: timedelta
    stuck: StuckPolicy

    @classmethod
    def from_settings(cls, settings: SenderSettings) -> HandlerOptions:
        """Heartbeat at a third of the command ack wait; the stuck policy from the settings."""
        return cls(
            heartbeat=settings.command_ack_wait / 3,
            stuck=StuckPolicy(
                window=settings.stuck_window,
                stall_threshold=settings.stall_threshold,
                stall_lookback=settings.stall_lookback,
            ),
        )


class SenderHandlers:
    """Handlers over the use cases' dependencies and the per-instance lanes."""

    def __init__(
        self, deps: SenderDeps, options: HandlerOptions, dead_letters: DeadLetterStore
    ) -> None:
        self.deps = deps
        self.options = options
        self.lanes = Lanes()
        self._receipt_lanes = Lanes()
        self._dead_letters = dead_letters
        self._releases: set[asyncio.Task[None]] = set()
        self.dead_lettered = 0

    def consumers(
        self, settings: SenderSettings
    ) -> list[tuple[ConsumerSpec, Callable[[Msg], Coroutine[Any, Any, None]]]]:
        """The durable consumers this service runs, each with its handler."""
        prefix, max_in_flight = settings.consumer_prefix, settings.max_in_flight
        command_ack_wait = settings.command_ack_wait

        def spec(stream: str, subject: str, name: str, ack_wait: timedelta) -> ConsumerSpec:
            return ConsumerSpec(
                stream=stream,
                subject=subject,
                durable=f"{prefix}-{name}",
                ack_wait=ack_wait,
                max_in_flight=max_in_flight,
            )

        return [
            (
                spec(
                    subjects.STREAM_SEND, subjects.SEND_COMMANDS_ALL, "commands", command_ack_wait
                ),
                self.on_send_command,
            ),
            (
                spec(
                    subjects.STREAM_WEBHOOKS,
                    subjects.webhook_subject(WebhookKind.MESSAGE_STATUS.value),
                    "receipts",
                    timedelta(seconds=30),
                ),
                self.on_message_status,
            ),
            (
                spec(
                    subjects.STREAM_HEALTH,
                    subjects.STATE_CHANGED_ALL,
                    "states",
                    timedelta(seconds=30),
                ),
                self.on_instance_state_changed,
            ),
            (
                spec(subjects.STREAM_TICKS, subjects.SENDER_TICK, "ticks", timedelta(minutes=2)),
                self.on_tick,
            ),
        ]

    # --- consumers ------------------------------------------------------------------------------

    async def on_send_command(self, message: Msg) -> None:
        """A send command, from pull to ack: decode, take the instance's turn, decide, settle."""
        try:
            command = SendMessage.model_validate_json(message.data)
        except ValidationError as error:
            await self._refuse_command(message, error)
            return
        # No await before the lane: tasks enter it in stream order, so sends keep that order.
        try:
            async with (
                in_progress(message, self.options.heartbeat),
                self.lanes.turn(command.instance_id),
            ):
                outcome = await send_message(command, self.deps)
        except Exception as exc:  # noqa: BLE001 - the command must come back, never be lost
            _log.error(
                "command_failed",
                command_id=command.command_id,
                instance_id=command.instance_id,
                reason=f"{type(exc).__name__}: {exc}",
            )
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

    async def _refuse_command(self, message: Msg, error: ValidationError) -> None:
        try:
            answered = await answer_invalid_command(message.data, error, self.deps)
        except Exception as exc:  # noqa: BLE001 - a publish or database outage: try again later
            _log.error("command_refusal_failed", reason=repr(exc))
            await message.nak(delay=_NAK_DELAY)
            return
        if answered is None:
            await self._dead_letter(message, error)
            return
        await message.ack()

    async def _dead_letter(self, message: Msg, error: ValidationError) -> None:
        reason = f"unreadable command: {str(error.errors(include_url=False))[:400]}"
        try:
            await self._dead_letters.dead_letter(
                message.subject, message.data, reason, self.deps.clock.now()
            )
        except Exception as exc:  # noqa: BLE001 - kept in the stream until the store is back
            _log.error("dead_letter_failed", reason=repr(exc))
            await message.nak(delay=_NAK_DELAY)
            return
        self.dead_lettered += 1
        _log.error(
            "command_dead_lettered",
            subject=message.subject,
            code=ErrorCode.INVALID_COMMAND.value,
            dead_lettered=self.dead_lettered,
            reason=reason,
        )
        await message.term()

    async def on_message_status(self, message: Msg) -> None:
        """A delivery receipt: move its message forward, or keep it until the send's answer."""
        try:
            event = MessageStatusReported.model_validate_json(message.data)
        except ValidationError as exc:
            _log.error("receipt_invalid", reason=str(exc.errors()[:3]))
            await message.term()
            return
        # Receipts of one message in stream order (DELIVERY before READ, or READ would win and
        # the move to `delivered` be lost); different messages side by side.
        try:
            async with self._receipt_lanes.turn(event.message_id or ""):
                await apply_message_status(event, self.deps)
        except Exception as exc:  # noqa: BLE001 - redelivered later
            _log.error("receipt_failed", message_id=event.message_id, reason=repr(exc))
            await message.nak(delay=_NAK_DELAY)
            return
        await message.ack()

    async def on_instance_state_changed(self, message: Msg) -> None:
        """Health's state change: an instance connected again releases its held commands."""
        try:
            event = InstanceStateChanged.model_validate_json(message.data)
        except ValidationError as exc:
            _log.error("state_event_invalid", reason=str(exc.errors()[:3]))
            await message.term()
            return
        try:
            command_ids = await held_to_release(event, self.deps)
        except Exception as exc:  # noqa: BLE001 - redelivered later
            _log.error("state_event_failed", instance_id=event.instance_id, reason=repr(exc))
            await message.nak(delay=_NAK_DELAY)
            return
        for command_id in command_ids:
            self.release(event.instance_id, command_id)
        await message.ack()

    async def on_tick(self, message: Msg) -> None:
        """The sweep tick (a server-side message schedule)."""
        try:
            await self.sweep_now()
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            _log.error("sweep_failed", reason=repr(exc))
        await message.ack()

    async def sweep_now(self) -> SweepReport:
        """One sweep; the held commands it finds releasable are queued in their lanes."""
        report = await sweep(self.deps, self.options.stuck)
        for instance_id, command_id in report.to_release:
            self.release(instance_id, command_id)
        return report

    def release(self, instance_id: str, command_id: str) -> None:
        """Queue a held command in its instance's lane (after the lane's earlier work)."""
        task = asyncio.create_task(self._release(instance_id, command_id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, instance_id: str, command_id: str) -> None:
        try:
            async with self.lanes.turn(instance_id):
                await release_held(command_id, self.deps)
        except Exception as exc:  # noqa: BLE001 - the row stays held: the next sweep tries again
            _log.error("release_failed", command_id=command_id, reason=repr(exc))

    async def stop(self) -> None:
        """Cancel queued releases (their rows stay held; the next sweep finds them)."""
        for task in list(self._releases):
            task.cancel()
        await asyncio.gather(*self._releases, return_exceptions=True)

    # --- request-reply API ----------------------------------------------------------------------

    async def on_get_send_outcome(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.outcome`: the stored outcome of a command."""
        request = _decode(GetSendOutcome, data)
        if isinstance(request, Problem):
            return SendOutcomeReply(ok=False, error=request)
        return await get_outcome(request.command_id, self.deps.store)

    async def on_retry_send(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.retry`: retry a failed send as a new linked command."""
        request = _decode(RetrySend, data)
        if isinstance(request, Problem):
            return SendOutcomeReply(ok=False, error=request)
        return await retry_send(request, self.deps, self.lanes.turn)

    async def on_cancel_send(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.cancel`: cancel a held command (it fails with CANCELLED)."""
        request = _decode(CancelSend, data)
        if isinstance(request, Problem):
            return SendOutcomeReply(ok=False, error=request)
        return await cancel_held(request, self.deps)


def _decode(model: type[_Request], data: bytes) -> _Request | Problem:
    # Validating by hand (not through a handler annotation) lets a malformed request get a
    # coded refusal instead of silence: FastStream would raise and never reply.
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        _log.warning("api_request_refused", code=ErrorCode.INVALID_COMMAND.value)
        return Problem.of(
            ErrorCode.INVALID_COMMAND, detail=str(exc.errors(include_url=False))[:500]
        )
