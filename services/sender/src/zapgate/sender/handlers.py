"""The sender's handlers: one per subject it consumes and per API verb it answers.

Each decodes, calls a use case from `service.py`, and settles the message (ack, nak, dead
letter) or replies. The path of a send command, pull to ack, is `on_send_command`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import InstanceStateChanged
from zapgate.contracts.sending import (
    CancelSend,
    GetSendOutcome,
    RetrySend,
    SendMessage,
    SendOutcomeReply,
)
from zapgate.contracts.webhooks import MessageStatusReported
from zapgate.runtime.consumer import InvalidMessage, Postpone
from zapgate.runtime.requests import request_handler
from zapgate.runtime.topology import (
    SENDER_COMMANDS,
    SENDER_RECEIPTS,
    SENDER_STATES,
    SENDER_TICKS,
)
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
    from collections.abc import Awaitable, Callable

    from zapgate.runtime.consumer import Delivery
    from zapgate.runtime.streams import ConsumerSpec
    from zapgate.sender.service import SenderDeps, SweepReport
    from zapgate.sender.settings import SenderSettings

_log = structlog.get_logger("zapgate.sender")


def _raw(data: bytes) -> bytes:
    return data


@dataclass(frozen=True, slots=True)
class Consumer:
    """One consumer the service runs: its spec, handler and decoder."""

    spec: ConsumerSpec
    handler: Callable[[Any, Delivery], Awaitable[None]]
    decode: Callable[[bytes], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerOptions:
    """Policies of the handlers."""

    stuck: StuckPolicy

    @classmethod
    def from_settings(cls, settings: SenderSettings) -> HandlerOptions:
        """The stuck policy from the settings."""
        return cls(
            stuck=StuckPolicy(
                window=settings.stuck_window,
                stall_threshold=settings.stall_threshold,
                stall_lookback=settings.stall_lookback,
            ),
        )


class SenderHandlers:
    """Handlers over the use cases' dependencies and the per-instance lanes."""

    def __init__(self, deps: SenderDeps, options: HandlerOptions) -> None:
        self.deps = deps
        self.options = options
        self.lanes = Lanes()
        self._receipt_lanes = Lanes()
        self._releases: set[asyncio.Task[None]] = set()
        self._api_outcome = request_handler(
            GetSendOutcome,
            SendOutcomeReply,
            lambda request: get_outcome(request.command_id, deps.store),
            name="get_send_outcome",
        )
        self._api_retry = request_handler(
            RetrySend,
            SendOutcomeReply,
            lambda request: retry_send(request, deps, self.lanes.turn),
            name="retry_send",
        )
        self._api_cancel = request_handler(
            CancelSend,
            SendOutcomeReply,
            lambda request: cancel_held(request, deps),
            name="cancel_send",
        )

    def consumers(self, settings: SenderSettings) -> list[Consumer]:
        """The runtime consumer specs this service runs (topology's, with its own prefix and
        command ack wait, heartbeat at a third of it), each with its handler and decoder."""
        prefix = settings.consumer_prefix
        ack_wait = settings.command_ack_wait
        return [
            Consumer(
                replace(SENDER_COMMANDS, ack_wait=ack_wait, heartbeat=ack_wait / 3).with_prefix(
                    prefix
                ),
                self.on_send_command,
                _raw,
            ),
            Consumer(
                SENDER_RECEIPTS.with_prefix(prefix),
                self.on_message_status,
                MessageStatusReported.model_validate_json,
            ),
            Consumer(
                SENDER_STATES.with_prefix(prefix),
                self.on_instance_state_changed,
                InstanceStateChanged.model_validate_json,
            ),
            Consumer(SENDER_TICKS.with_prefix(prefix), self.on_sender_tick, _raw),
        ]

    # --- consumers (the runtime's loop acks on return, see `zapgate.runtime.consumer`) ---------

    async def on_send_command(self, data: bytes, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """A send command, from pull to ack: decode, take the instance's turn, decide.

        Returning acks; `Postpone` naks for the lease; a database or NATS outage naks without
        counting; an unreadable command is dead-lettered by the runtime (`InvalidMessage`).
        """
        try:
            command = SendMessage.model_validate_json(data)
        except ValidationError as error:
            await self._refuse_command(data, error)
            return
        # No await before the lane: deliveries enter it in stream order, so sends keep it.
        async with self.lanes.turn(command.instance_id):
            outcome = await send_message(command, self.deps)
        if outcome is None:
            # Another delivery holds the decision (maybe one a crash cut off inside the provider
            # call): come back once its lease is over, then replay, recover or reconcile it.
            raise Postpone(self.deps.policy.sending_lease, "decision held by another delivery")

    async def _refuse_command(self, data: bytes, error: ValidationError) -> None:
        answered = await answer_invalid_command(data, error, self.deps)
        if answered is None:
            _log.error(
                "command_unreadable",
                code=ErrorCode.INVALID_COMMAND.value,
                reason=str(error.errors(include_url=False))[:400],
            )
            raise InvalidMessage(
                "unreadable_command",
                f"command_id/instance_id unreadable: {str(error.errors(include_url=False))[:400]}",
            )

    async def on_message_status(self, event: MessageStatusReported, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """A delivery receipt: move its message forward, or keep it until the send's answer."""
        # Receipts of one message in stream order (DELIVERY before READ, or READ would win and
        # the move to `delivered` be lost); different messages side by side.
        async with self._receipt_lanes.turn(event.message_id or ""):
            receipt = await apply_message_status(event, self.deps)
        self.deps.metrics.receipts.labels(receipt.value).inc()

    async def on_instance_state_changed(
        self,
        event: InstanceStateChanged,
        delivery: Delivery,  # noqa: ARG002 - the runtime's handler signature
    ) -> None:
        """Health's state change: the instance's view kept in memory is dropped (the next send
        reads it again), and an instance connected again releases its held commands."""
        self.deps.directory.forget(event.instance_id)
        for command_id in await held_to_release(event, self.deps):
            self.release(event.instance_id, command_id)

    async def on_sender_tick(self, data: bytes, delivery: Delivery) -> None:  # noqa: ARG002 - the runtime's handler signature
        """The sweep tick (a server-side message schedule)."""
        try:
            await self.sweep_now()
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            _log.error("sweep_failed", reason=repr(exc))

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

    # --- request-reply API (the runtime's helper decodes, calls and always replies) --------------

    async def on_get_send_outcome(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.outcome`: the stored outcome of a command."""
        return await self._api_outcome(data)

    async def on_retry_send(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.retry`: retry a failed send as a new linked command."""
        return await self._api_retry(data)

    async def on_cancel_send(self, data: bytes) -> SendOutcomeReply:
        """`zg.api.sender.cancel`: cancel a held command (it fails with CANCELLED)."""
        return await self._api_cancel(data)
