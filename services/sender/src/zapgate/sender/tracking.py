"""Use cases after the send: delivery receipts, stuck alerts, delivery stalls, held commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from zapgate.contracts import subjects
from zapgate.contracts.health import DeliverySignal, DeliverySignalled, InstanceState
from zapgate.contracts.sending import MessageStatusChanged, MessageStuck, SendStatus
from zapgate.sender.domain import Verdict, is_delivery_proof, is_stalled, next_status, preflight
from zapgate.sender.sending import expire_held
from zapgate.sender.tables import RowStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from zapgate.contracts.health import InstanceStateChanged
    from zapgate.contracts.webhooks import MessageStatusReported
    from zapgate.sender.sending import SenderDeps

_log = structlog.get_logger("zapgate.sender")
_RACE_RETRIES = 3


class Receipt(StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"
    UNMATCHED = "unmatched"


async def apply_message_status(event: MessageStatusReported, deps: SenderDeps) -> Receipt:
    """Move the matching message forward (never back); publish each move."""
    if event.message_id is None:
        return Receipt.IGNORED
    for _ in range(_RACE_RETRIES):
        row = await deps.store.by_provider_message_id(event.message_id)
        if row is None:
            return Receipt.UNMATCHED
        try:
            current = SendStatus(row.status)
        except ValueError:
            return Receipt.IGNORED
        target = next_status(current, event.status)
        if target is None:
            _log.debug(
                "receipt_ignored",
                command_id=row.command_id,
                status=row.status,
                reported=event.status_raw,
            )
            return Receipt.IGNORED
        now = deps.clock.now()
        moved = await deps.store.move(
            row.command_id,
            from_statuses={RowStatus(current.value)},
            to=RowStatus(target.value),
            now=now,
        )
        if moved is None:
            continue  # another receipt moved it meanwhile: judge again from the new status
        await deps.publisher.publish(
            subjects.message_status_subject(row.instance_id),
            MessageStatusChanged(
                command_id=row.command_id,
                instance_id=row.instance_id,
                provider_message_id=event.message_id,
                from_status=current,
                to_status=target,
                provider_status=event.status,
                correlation_id=row.correlation_id,
            ),
            stream=subjects.STREAM_SEND,
            msg_id=f"status:{row.command_id}:{target.value}",
        )
        _log.info(
            "message_status_changed",
            command_id=row.command_id,
            instance_id=row.instance_id,
            from_status=current.value,
            to_status=target.value,
        )
        if is_delivery_proof(target):
            await _resume_if_stalled(row.instance_id, deps)
        return Receipt.APPLIED
    return Receipt.IGNORED


async def _resume_if_stalled(instance_id: str, deps: SenderDeps) -> None:
    now = deps.clock.now()
    message_ids = await deps.store.close_stall(instance_id, now)
    if message_ids is None:
        return
    await deps.publisher.publish(
        subjects.delivery_signal_subject(instance_id),
        DeliverySignalled(
            instance_id=instance_id,
            signal=DeliverySignal.RESUMED,
            message_ids=message_ids,
            observed_at=now,
        ),
        stream=subjects.STREAM_HEALTH,
        msg_id=f"delivery:{instance_id}:resumed:{now.isoformat()}",
    )
    _log.info("delivery_resumed", instance_id=instance_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckPolicy:
    window: timedelta = timedelta(minutes=10)
    stall_threshold: int = 3
    stall_lookback: timedelta = timedelta(hours=1)


@dataclass(slots=True)
class SweepReport:
    stuck_alerted: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


async def sweep(
    deps: SenderDeps,
    policy: StuckPolicy,
    release: Callable[[str, str], None],
) -> SweepReport:
    """One periodic pass: alert stuck messages once, signal stalls, expire or release held ones.

    `release(instance_id, command_id)` queues a held command for another try in its lane.
    """
    report = SweepReport()
    now = deps.clock.now()
    sent_before = now - policy.window
    for row in await deps.store.unalerted_stuck(sent_before):
        if row.sent_at is None or not await deps.store.mark_stuck_alerted(row.command_id, now):
            continue
        await deps.publisher.publish(
            subjects.message_alert_subject(row.instance_id),
            MessageStuck(
                command_id=row.command_id,
                instance_id=row.instance_id,
                provider_message_id=row.provider_message_id,
                sent_at=row.sent_at,
                stuck_for=now - row.sent_at,
                correlation_id=row.correlation_id,
            ),
            stream=subjects.STREAM_SEND,
            msg_id=f"stuck:{row.command_id}",
        )
        _log.warning(
            "message_stuck",
            command_id=row.command_id,
            instance_id=row.instance_id,
            provider_message_id=row.provider_message_id,
            stuck_for_s=(now - row.sent_at).total_seconds(),
        )
        report.stuck_alerted.append(row.command_id)
    for group in await deps.store.stuck_by_instance(sent_before, now - policy.stall_lookback):
        if not is_stalled(group.stuck, group.last_delivery_at, threshold=policy.stall_threshold):
            continue
        ids = [message.command_id for message in group.stuck]
        if not await deps.store.open_stall(group.instance_id, ids, now):
            continue
        await deps.publisher.publish(
            subjects.delivery_signal_subject(group.instance_id),
            DeliverySignalled(
                instance_id=group.instance_id,
                signal=DeliverySignal.STALLED,
                message_ids=ids,
                observed_at=now,
            ),
            stream=subjects.STREAM_HEALTH,
            msg_id=f"delivery:{group.instance_id}:stalled:{now.isoformat()}",
        )
        _log.warning(
            "delivery_stalled", instance_id=group.instance_id, stuck=len(ids), command_ids=ids
        )
        report.stalled.append(group.instance_id)
    await _sweep_held(deps, release, report)
    return report


async def _sweep_held(
    deps: SenderDeps, release: Callable[[str, str], None], report: SweepReport
) -> None:
    now = deps.clock.now()
    for row in await deps.store.held():
        if row.hold_until is None or row.hold_until <= now:
            if await expire_held(row.command_id, deps) is not None:
                report.expired.append(row.command_id)
            continue
        instance = await deps.directory.get(row.instance_id)
        # A missed state event must not strand a command: release when health says it can go.
        if preflight(instance, can_hold=True).verdict is Verdict.SEND:
            release(row.instance_id, row.command_id)
            report.released.append(row.command_id)


async def on_instance_recovered(
    event: InstanceStateChanged, deps: SenderDeps, release: Callable[[str, str], None]
) -> list[str]:
    """Health says an instance is connected again: queue its held commands, oldest first."""
    if event.to_state is not InstanceState.CONNECTED:
        return []
    held = await deps.store.held(event.instance_id)
    for row in held:
        release(row.instance_id, row.command_id)
    if held:
        _log.info("held_released", instance_id=event.instance_id, count=len(held))
    return [row.command_id for row in held]
