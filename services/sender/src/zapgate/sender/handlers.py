"""The sender's handlers: one per subject it consumes and per API verb it answers.

Each decodes, calls a use case from `service.py`, and settles the message (ack, nak, dead
letter) or replies. The path of a send command, pull to ack, is `on_send_command`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import InstanceStateChanged
from zapgate.contracts.sending import (
    CancelSend,
    CountStuck,
    GetSendOutcome,
    ListSends,
    RetrySend,
    SendListReply,
    SendMessage,
    SendOutcomeReply,
    StuckCountsReply,
)
from zapgate.contracts.webhooks import MessageStatusReported
from zapgate.runtime.consumer import Abandoned, Consumer, InvalidMessage, Postpone
from zapgate.runtime.requests import RequestRefused, request_handler
from zapgate.runtime.topology import (
    SENDER_COMMAND_PARTITIONS,
    SENDER_RECEIPTS,
    SENDER_STATES,
    SENDER_TICKS,
)
from zapgate.sender.lanes import Lanes
from zapgate.sender.partitions import CURRENT_LEASE, FencedPacer, Lease, PartitionLost, Partitions
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
from zapgate.sender.tables import RowStatus

if TYPE_CHECKING:
    from zapgate.contracts.sending import SendOutcome
    from zapgate.runtime.consumer import Delivery
    from zapgate.sender.adapters.partitions import PostgresPartitionFence
    from zapgate.sender.ports import SendListing
    from zapgate.sender.service import SenderDeps, SweepReport
    from zapgate.sender.settings import SenderSettings

_log = structlog.get_logger("zapgate.sender")
_CALLS_KEPT = timedelta(days=1)
_CALL_POLL_S = 0.2
"""How often a lane waiting for another replica's provider call looks at its row again."""


def _raw(data: bytes) -> bytes:
    return data


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

    def __init__(
        self,
        deps: SenderDeps,
        options: HandlerOptions,
        partitions: Partitions | None = None,
        *,
        listing: SendListing | None = None,
    ) -> None:
        self.deps = deps
        self.options = options
        self.partitions = partitions
        self.listing = listing
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
        self._api_list = request_handler(
            ListSends, SendListReply, self._list_sends, name="list_sends"
        )
        self._api_stuck = request_handler(
            CountStuck, StuckCountsReply, self._count_stuck, name="count_stuck"
        )

    def consumers(self, settings: SenderSettings) -> list[Consumer]:
        """The runtime consumer specs this service runs (topology's, with its own prefix and
        command ack wait, heartbeat at a third of it), each with its handler and decoder."""
        prefix = settings.consumer_prefix
        ack_wait = settings.command_ack_wait
        partitions = [
            Consumer(
                replace(
                    spec,
                    ack_wait=ack_wait,
                    heartbeat=ack_wait / 3,
                    # Longer than the ack wait: what a lost replica left is due when the pin moves.
                    priority_timeout=ack_wait * 3 / 2,
                ).with_prefix(prefix),
                self.on_send_command,
                _raw,
                partition,
            )
            for partition, spec in enumerate(SENDER_COMMAND_PARTITIONS)
        ]
        return [
            *partitions,
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

    async def on_send_command(self, data: bytes, delivery: Delivery) -> None:
        """A send command, from pull to ack: decode, take the instance's turn, decide.

        Returning acks; `Postpone` naks for the lease; a database or NATS outage naks without
        counting; an unreadable command is dead-lettered by the runtime (`InvalidMessage`);
        a partition lost to another replica leaves the delivery unsettled (`Abandoned`).
        """
        try:
            command = SendMessage.model_validate_json(data)
        except ValidationError as error:
            await self._refuse_command(data, error)
            return
        lease = None
        if self.partitions is not None:
            lease = self.partitions.lease(delivery, command.command_id)
        token = CURRENT_LEASE.set(lease)
        try:
            # No await before the lane: deliveries enter it in stream order, so sends keep it.
            async with self.lanes.turn(command.instance_id):
                outcome = await send_message(command, self.deps)
                if outcome is None and lease is not None:
                    outcome = await self._after_other_call(command, lease)
        except PartitionLost as lost:
            _log.warning(
                "send_fenced",
                command_id=command.command_id,
                instance_id=command.instance_id,
                reason=str(lost),
            )
            raise Abandoned(str(lost)) from lost
        finally:
            CURRENT_LEASE.reset(token)
        if outcome is None:
            # Another delivery holds the decision (maybe one a crash cut off inside the provider
            # call): come back once its lease is over, then replay, recover or reconcile it.
            raise Postpone(self.deps.policy.sending_lease, "decision held by another delivery")

    async def _after_other_call(self, command: SendMessage, lease: Lease) -> SendOutcome | None:
        """The command is `sending` elsewhere (another replica had it before this one's epoch).
        No call recorded: that replica never called and now cannot, so take it back and decide.
        A call recorded: hold the instance's lane until its answer is stored (or the lease ends
        and it becomes `uncertain`), so nothing later of the instance overtakes it."""
        store, fence = self.deps.store, self._fence()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deps.policy.sending_lease.total_seconds()
        waited = False
        while True:
            row = await store.get(command.command_id)
            if row is None or row.status != RowStatus.SENDING.value:
                break
            if not await fence.was_called(command.command_id):
                if await fence.reclaim_uncalled(command.command_id, self.deps.clock.now()):
                    _log.info(
                        "send_reclaimed",
                        command_id=command.command_id,
                        instance_id=command.instance_id,
                        partition=lease.partition,
                        epoch=lease.epoch,
                    )
                break
            lease_over = (
                row.sending_at is not None
                and self.deps.clock.now() - row.sending_at >= self.deps.policy.sending_lease
            )
            if lease_over or loop.time() >= deadline:
                break  # deciding again declares it uncertain, or hands it back for later
            waited = True
            await asyncio.sleep(_CALL_POLL_S)  # a bounded poll of a row: no event to wait on
        if waited and isinstance(self.deps.pacer, FencedPacer):
            self.deps.pacer.forget(command.instance_id)
        return await send_message(command, self.deps)

    def _fence(self) -> PostgresPartitionFence:
        if self.partitions is None:  # pragma: no cover - only called under a lease
            raise RuntimeError("no partitions")
        return self.partitions.fence

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
        """The sweep tick (a server-side message schedule); it also forgets recorded provider
        calls older than a day (pacing and takeovers need the recent ones only)."""
        try:
            await self.sweep_now()
            if self.partitions is not None:
                await self.partitions.fence.prune(self.deps.clock.now() - _CALLS_KEPT)
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

    async def on_list_sends(self, data: bytes) -> SendListReply:
        """`zg.api.sender.list`: one instance's sends for the console (by status, or stuck)."""
        return await self._api_list(data)

    async def on_count_stuck(self, data: bytes) -> StuckCountsReply:
        """`zg.api.sender.stuck_counts`: stuck sends per instance for the console."""
        return await self._api_stuck(data)

    async def _list_sends(self, request: ListSends) -> SendListReply:
        now, window = self.deps.clock.now(), self.options.stuck.window
        sends = await self._listing().sends(request, now=now, stuck_window=window)
        return SendListReply(ok=True, sends=sends)

    async def _count_stuck(self, _request: CountStuck) -> StuckCountsReply:
        now, window = self.deps.clock.now(), self.options.stuck.window
        counts = await self._listing().stuck_counts(now=now, stuck_window=window)
        return StuckCountsReply(ok=True, counts=counts)

    def _listing(self) -> SendListing:
        if self.listing is None:
            raise RequestRefused(Problem.of(ErrorCode.INTERNAL, detail="no listing"))
        return self.listing
