"""The sender's use cases: claim, preflight, send through the provider, store, then publish;
then follow the message (receipts, stuck alerts, stalls, held commands) and answer queries.

The promise: never `sent` unless the provider accepted and named the message, never a second
provider call for one command, a stored decision for every command, and an answer for every
command that can be read at all.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import stamina
import structlog
from pydantic import TypeAdapter, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.envelope import utc_now
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    InstanceState,
    ReconnectRequested,
    SessionObserved,
)
from zapgate.contracts.sending import (
    CancelSend,
    CommandId,
    MessageBody,
    MessageKind,
    MessageStatusChanged,
    MessageStuck,
    RetrySend,
    SendMessage,
    SendOutcome,
    SendOutcomeReply,
    SendStatus,
    StatusTime,
)
from zapgate.contracts.webhooks import DeliveryStatus
from zapgate.runtime.consumer import annotate
from zapgate.runtime.requests import invalid_request
from zapgate.sender.adapters.metrics import SenderMetrics
from zapgate.sender.domain import (
    EarlyReceipt,
    InstanceView,
    PhoneRefused,
    Preflight,
    Verdict,
    after_live_check,
    backoff_delay,
    is_delivery_proof,
    is_stalled,
    next_status,
    preflight,
    resolve_phone,
    with_field_hints,
    worth_keeping,
)
from zapgate.sender.ports import StoreUnavailableError
from zapgate.sender.tables import RowStatus, SendCommandRow
from zapgate.wapi.failures import (
    ProviderBadResponse,
    ProviderFailure,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
)
from zapgate.wapi.results import SendAccepted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime

    from zapgate.contracts.health import InstanceStateChanged
    from zapgate.contracts.webhooks import MessageStatusReported
    from zapgate.runtime.clock import Clock
    from zapgate.sender.lanes import Pacer
    from zapgate.sender.ports import (
        CallLedger,
        CommandStore,
        EventPublisher,
        InstanceDirectory,
        OutcomeLog,
        Provider,
    )
    from zapgate.sender.settings import SenderSettings

_log = structlog.get_logger("zapgate.sender")
_BODY = TypeAdapter[MessageBody](MessageBody)
_COMMAND_ID = TypeAdapter[str](CommandId)
_PUBLIC = frozenset(status.value for status in SendStatus)
_RACE_RETRIES = 3
# Kept receipts are applied lowest first (DELIVERY then READ), so every step is recorded.
_RECEIPT_ORDER: tuple[DeliveryStatus, ...] = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.READ,
    DeliveryStatus.PLAYED,
    DeliveryStatus.FAILED,
)
REQUESTED_BY = "sender"


class Receipt(StrEnum):
    """What a delivery receipt did: moved its message, changed nothing, or was kept early."""

    APPLIED = "applied"
    IGNORED = "ignored"
    KEPT = "kept"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPolicy:
    """How sends are tried. Durations are timedeltas; see `SenderSettings` for each meaning."""

    live_check_timeout: timedelta = timedelta(seconds=3)
    provider_attempts: int = 3
    backoff: timedelta = timedelta(milliseconds=500)
    backoff_cap: timedelta = timedelta(seconds=5)
    sending_lease: timedelta = timedelta(minutes=2)
    default_country: str | None = None
    early_receipt_keep: timedelta = timedelta(minutes=10)
    store_retry_cap: timedelta = timedelta(seconds=5)

    @classmethod
    def from_settings(cls, settings: SenderSettings) -> SendPolicy:
        """The policy the service's settings describe."""
        return cls(
            live_check_timeout=settings.live_check_timeout,
            provider_attempts=settings.provider_attempts,
            backoff=settings.provider_backoff,
            backoff_cap=settings.provider_backoff_cap,
            sending_lease=settings.sending_lease,
            default_country=settings.default_country,
            early_receipt_keep=settings.early_receipt_keep,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckPolicy:
    """When a `sent` message is stuck, and how many stuck ones make a stalled instance."""

    window: timedelta = timedelta(minutes=10)
    stall_threshold: int = 3
    stall_lookback: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderDeps:
    """Everything the use cases touch (the ports), built once by the composition root."""

    store: CommandStore
    directory: InstanceDirectory
    provider: Provider
    publisher: EventPublisher
    outcomes: OutcomeLog
    clock: Clock
    pacer: Pacer
    policy: SendPolicy = field(default_factory=SendPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    metrics: SenderMetrics = field(default_factory=SenderMetrics.for_registry)
    calls: CallLedger | None = None
    """Where every provider call is recorded before it is made; None: nothing is (one process
    whose pacer records nothing), so a `sending` row left after the lease is `uncertain`."""


# --- outcomes -------------------------------------------------------------------------------------


def to_outcome(
    row: SendCommandRow, *, replayed: bool = False, at: datetime | None = None
) -> SendOutcome | None:
    """The public outcome of a row; None while the decision is under way. `at`: its
    `occurred_at` (the use cases pass their clock's now; default the wall clock)."""
    if row.status not in _PUBLIC:
        return None
    error = None
    if row.error_code is not None:
        error = Problem(
            code=row.error_code,
            message=row.error_message or "",
            detail=row.error_detail,
            fields=row.error_fields,
        )
    return SendOutcome(
        command_id=row.command_id,
        instance_id=row.instance_id,
        phone=row.phone,
        kind=MessageKind(row.kind),
        status=SendStatus(row.status),
        provider_message_id=row.provider_message_id,
        error=error,
        attempts=row.attempts,
        session_health=row.session_health,
        retry_of=row.retry_of,
        replayed=replayed,
        correlation_id=row.correlation_id,
        occurred_at=utc_now() if at is None else at,
    )


async def _publish_outcome(
    row: SendCommandRow, deps: SenderDeps, *, replayed: bool, count: bool = True
) -> SendOutcome:
    """Publish the row's outcome; `count`: a first outcome (not a replay, not a parked answer
    the later publish of the stored row repeats) counts in the send metrics."""
    now = deps.clock.now()
    outcome = to_outcome(row, replayed=replayed, at=now)
    if outcome is None:
        raise RuntimeError(f"command {row.command_id} has no public outcome yet")
    msg_id = f"outcome:{row.command_id}:{row.status}:{row.attempts}"
    if replayed:
        # A replay answers a new delivery: it must reach the subject even inside the window.
        msg_id += f":replay:{uuid.uuid4().hex}"
    elif count:
        # Counted once the decision is stored, before its publish: a publish that fails is
        # replayed by the next delivery, which does not count again.
        deps.metrics.decided(row.status, row.error_code, now - row.created_at)
    await deps.publisher.publish(
        subjects.send_outcome_subject(row.command_id),
        outcome,
        stream=subjects.STREAM_SEND,
        msg_id=msg_id,
    )
    return outcome


def _error_values(problem: Problem) -> dict[str, Any]:
    return {
        "error_code": problem.code,
        "error_message": problem.message,
        "error_detail": problem.detail,
        "error_fields": problem.fields,
    }


# --- a command that cannot be read --------------------------------------------------------------


async def answer_invalid_command(
    data: bytes, error: ValidationError, deps: SenderDeps
) -> SendOutcome | None:
    """Publish `failed/INVALID_COMMAND` with pt-BR field errors on the command's outcome subject.

    None when the command's `command_id` or `instance_id` cannot be read (no subject to answer
    on): the caller dead-letters the message. A command id that names a stored command is not
    answered either, so a bad copy can never overwrite the outcome of the good one.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    command_id, instance_id = raw.get("command_id"), raw.get("instance_id")
    if not isinstance(command_id, str) or not isinstance(instance_id, str):
        return None
    try:
        _COMMAND_ID.validate_python(command_id)
    except ValidationError:
        return None
    if await deps.store.get(command_id) is not None:
        return None
    problem = with_field_hints(invalid_request(error))
    kind = raw.get("body", {}).get("kind") if isinstance(raw.get("body"), dict) else None
    outcome = SendOutcome(
        command_id=command_id,
        instance_id=instance_id[:100],
        phone=str(raw.get("phone", ""))[:120],
        kind=MessageKind(kind) if kind in {known.value for known in MessageKind} else None,
        status=SendStatus.FAILED,
        error=problem,
        attempts=0,
        correlation_id=raw.get("correlation_id")
        if isinstance(raw.get("correlation_id"), str)
        else None,
    )
    deps.metrics.decided(SendStatus.FAILED.value, ErrorCode.INVALID_COMMAND.value, None)
    await deps.publisher.publish(
        subjects.send_outcome_subject(command_id),
        outcome,
        stream=subjects.STREAM_SEND,
        msg_id=f"outcome:{command_id}:invalid:{uuid.uuid4().hex}",
    )
    _log.warning(
        "command_refused",
        command_id=command_id,
        instance_id=instance_id[:100],
        code=ErrorCode.INVALID_COMMAND.value,
        fields=sorted(problem.fields or {}),
    )
    return outcome


# --- the command --------------------------------------------------------------------------------


async def send_message(command: SendMessage, deps: SenderDeps) -> SendOutcome | None:
    """Decide one delivered command. None: another delivery is deciding it right now."""
    now = deps.clock.now()
    phone = resolve_phone(command.phone, deps.policy.default_country)
    if isinstance(phone, PhoneRefused):
        return await _refuse_phone(command, phone, deps)
    command = command.model_copy(update={"phone": phone})
    instance = await deps.directory.get(command.instance_id)
    first = preflight(instance, can_hold=command.hold_for > timedelta(0))
    if first.verdict is Verdict.SEND and instance is not None:
        # The common case in one write: claimed straight into `sending`, then the provider. The
        # view may come from memory: the claim re-checks health's row in the same statement.
        sending = await deps.store.claim_sending(
            command, now, session_health=first.session_health, view_version=instance.version
        )
        if sending is not None:
            if sending.new:
                return await _call_and_record(sending.row, instance, deps)
            return await _on_repeat(sending.row, deps)
        # Health's row changed since it was read: decide again from a fresh read below.
        deps.directory.forget(command.instance_id)
        _log.info(
            "instance_view_changed",
            command_id=command.command_id,
            instance_id=command.instance_id,
            was=first.session_health,
        )
    claim = await deps.store.claim(command, now)
    if claim.new:
        return await _decide(claim.row, deps, announce_hold=True)
    return await _on_repeat(claim.row, deps)


async def _refuse_phone(
    command: SendMessage, refused: PhoneRefused, deps: SenderDeps
) -> SendOutcome | None:
    claim = await deps.store.claim(command, deps.clock.now())
    if not claim.new:
        return await _on_repeat(claim.row, deps)
    problem = Problem.of(refused.code, refused.message).model_copy(
        update={"fields": {"phone": refused.message}}
    )
    failed = await deps.store.move(
        command.command_id,
        from_statuses={RowStatus.CLAIMED},
        to=RowStatus.FAILED,
        now=deps.clock.now(),
        **_error_values(problem),
    )
    if failed is None:
        return None
    _log_attempt(
        failed, attempt=0, blocked_reason=refused.code.value, latency_ms=None, canonical=True
    )
    return await _publish_outcome(failed, deps, replayed=False)


async def _on_repeat(row: SendCommandRow, deps: SenderDeps) -> SendOutcome | None:
    status = RowStatus(row.status)
    if status is RowStatus.CLAIMED:
        # Claimed but never sent to the provider (a crash, or a delivery still in preflight):
        # deciding again is safe, the move to `sending` lets one of them through.
        return await _decide(row, deps, announce_hold=True)
    if status is RowStatus.SENDING:
        return await _left_sending(row, deps)
    _log.info(
        "send_replayed",
        command_id=row.command_id,
        instance_id=row.instance_id,
        status=row.status,
    )
    return await _publish_outcome(row, deps, replayed=True)


async def _left_sending(row: SendCommandRow, deps: SenderDeps) -> SendOutcome | None:
    """A `sending` row met again: None inside its lease (its delivery may still be calling);
    after it, taken back and decided if no call was recorded, else its parked answer or
    `uncertain`."""
    now = deps.clock.now()
    if row.sending_at is not None and now - row.sending_at < deps.policy.sending_lease:
        return None
    if deps.calls is not None and await deps.calls.reclaim_uncalled(row.command_id, now):
        # Left `sending` by a delivery that never called (a replica fenced off after its
        # partition moved, or one that died before its call): not uncertain, send it.
        _log.info("send_reclaimed", command_id=row.command_id, instance_id=row.instance_id)
        reclaimed = row.model_copy(update={"status": RowStatus.CLAIMED.value})
        return await _decide(reclaimed, deps, announce_hold=True)
    recovered = await _recover_parked_answer(row, deps)
    if recovered is not None:
        return recovered
    abandoned = await deps.store.move(
        row.command_id,
        from_statuses={RowStatus.SENDING},
        to=RowStatus.UNCERTAIN,
        now=now,
        **_error_values(
            Problem.of(ErrorCode.PROVIDER_UNCERTAIN, "sender stopped during the provider call")
        ),
    )
    if abandoned is None:
        return None
    _log_attempt(
        abandoned,
        attempt=abandoned.attempts,
        blocked_reason=None,
        latency_ms=None,
        canonical=True,
    )
    return await _publish_outcome(abandoned, deps, replayed=False)


async def _recover_parked_answer(row: SendCommandRow, deps: SenderDeps) -> SendOutcome | None:
    """A sender that died before storing an accepted answer had parked it on the outcome
    subject first: the row becomes `sent` with that messageId instead of `uncertain`."""
    parked = await deps.outcomes.last_outcome(row.command_id)
    if parked is None or parked.status is not SendStatus.SENT or parked.provider_message_id is None:
        return None
    recovered = await deps.store.move(
        row.command_id,
        from_statuses={RowStatus.SENDING},
        to=RowStatus.SENT,
        now=deps.clock.now(),
        attempts=parked.attempts,
        provider_message_id=parked.provider_message_id,
        sent_at=parked.occurred_at,
    )
    if recovered is None:
        return None
    _log.warning(
        "answer_recovered",
        command_id=row.command_id,
        instance_id=row.instance_id,
        provider_message_id=parked.provider_message_id,
    )
    outcome = await _publish_outcome(recovered, deps, replayed=False)
    await _apply_early_receipts(recovered, deps)
    return outcome


async def release_held(command_id: str, deps: SenderDeps) -> SendOutcome | None:
    """Try a held command again (its instance may have recovered). None: still held or taken."""
    row = await deps.store.move(
        command_id, from_statuses={RowStatus.HELD}, to=RowStatus.CLAIMED, now=deps.clock.now()
    )
    if row is None:
        return None
    return await _decide(row, deps, announce_hold=False)


async def expire_held(command_id: str, deps: SenderDeps) -> SendOutcome | None:
    """Fail a held command whose deadline passed."""
    now = deps.clock.now()
    current = await deps.store.get(command_id)
    detail = f"still {current.session_health}" if current and current.session_health else None
    row = await deps.store.move(
        command_id,
        from_statuses={RowStatus.HELD},
        to=RowStatus.FAILED,
        now=now,
        **_error_values(Problem.of(ErrorCode.EXPIRED, detail)),
    )
    if row is None:
        return None
    _log_attempt(row, attempt=row.attempts, blocked_reason=ErrorCode.EXPIRED.value, latency_ms=None)
    return await _publish_outcome(row, deps, replayed=False)


async def _decide(
    row: SendCommandRow, deps: SenderDeps, *, announce_hold: bool
) -> SendOutcome | None:
    now = deps.clock.now()
    # Fresh: a verdict other than SEND is never taken from memory (no false outage).
    instance = await deps.directory.get(row.instance_id, fresh=True)
    can_hold = row.hold_until is not None and now < row.hold_until
    decision = preflight(instance, can_hold=can_hold)
    if decision.verdict is Verdict.LIVE_CHECK and instance is not None:
        decision = await _live_check(row, instance, decision, deps, can_hold=can_hold)
    if decision.verdict is Verdict.SEND and instance is not None:
        return await _send(row, instance, decision, deps)
    problem = decision.problem or Problem.of(ErrorCode.INTERNAL, "preflight gave no reason")
    if decision.verdict is Verdict.HOLD:
        held = await deps.store.move(
            row.command_id,
            from_statuses={RowStatus.CLAIMED},
            to=RowStatus.HELD,
            now=now,
            session_health=decision.session_health,
            **_error_values(problem),
            **({} if announce_hold else {"held_at": row.held_at}),
        )
        if held is None:
            return None
        if announce_hold:
            _log_attempt(
                held,
                attempt=held.attempts,
                blocked_reason=problem.code,
                latency_ms=None,
                canonical=True,
            )
            return await _publish_outcome(held, deps, replayed=False)
        return None
    if row.held_at is not None:
        # It waited and the deadline passed while the instance stayed unhealthy.
        problem = Problem.of(ErrorCode.EXPIRED, f"{problem.code}: {problem.detail or ''}".strip())
    failed = await deps.store.move(
        row.command_id,
        from_statuses={RowStatus.CLAIMED},
        to=RowStatus.FAILED,
        now=now,
        session_health=decision.session_health,
        **_error_values(problem),
    )
    if failed is None:
        return None
    _log_attempt(
        failed,
        attempt=failed.attempts,
        blocked_reason=problem.code,
        latency_ms=None,
        canonical=True,
    )
    return await _publish_outcome(failed, deps, replayed=False)


async def _live_check(
    row: SendCommandRow,
    instance: InstanceView,
    decision: Preflight,
    deps: SenderDeps,
    *,
    can_hold: bool,
) -> Preflight:
    session = await deps.provider.observe(instance)
    now = deps.clock.now()
    await deps.publisher.publish(
        subjects.session_observed_subject(instance.instance_id),
        SessionObserved(
            instance_id=instance.instance_id,
            reachable=session.reachable,
            connected=session.connected,
            phone=session.phone,
            observed_at=now,
            correlation_id=row.command_id,
        ),
        stream=subjects.STREAM_HEALTH,
        msg_id=f"observed:{instance.instance_id}:{row.command_id}:{uuid.uuid4().hex}",
    )
    verdict = after_live_check(session, can_hold=can_hold, health=decision.session_health)
    _log.info(
        "live_check",
        instance_id=instance.instance_id,
        command_id=row.command_id,
        reachable=session.reachable,
        connected=session.connected,
        phone_known=bool(session.phone),
        verdict=verdict.verdict.value,
    )
    if verdict.request_reconnect:
        await deps.publisher.publish(
            subjects.reconnect_requested_subject(instance.instance_id),
            ReconnectRequested(
                instance_id=instance.instance_id,
                requested_by=REQUESTED_BY,
                reason=verdict.problem.detail if verdict.problem else None,
                correlation_id=row.command_id,
            ),
            stream=subjects.STREAM_HEALTH,
            msg_id=f"reconnect:{instance.instance_id}:{row.command_id}",
        )
    return verdict


async def _send(
    row: SendCommandRow, instance: InstanceView, decision: Preflight, deps: SenderDeps
) -> SendOutcome | None:
    sending = await deps.store.move(
        row.command_id,
        from_statuses={RowStatus.CLAIMED},
        to=RowStatus.SENDING,
        now=deps.clock.now(),
        session_health=decision.session_health,
    )
    if sending is None:
        return None  # another delivery won the claim to call the provider
    return await _call_and_record(sending, instance, deps)


async def _call_and_record(
    sending: SendCommandRow, instance: InstanceView, deps: SenderDeps
) -> SendOutcome | None:
    """Call the provider for a row this delivery moved to `sending`; store and publish."""
    await deps.pacer.wait_turn(instance.instance_id, sending.command_id)
    body = _BODY.validate_python(sending.body)
    attempts = sending.attempts
    result: SendAccepted | ProviderFailure
    for attempt in range(1, deps.policy.provider_attempts + 1):
        attempts += 1
        started = deps.clock.monotonic()
        try:
            result = await deps.provider.send(
                instance,
                sending.phone,
                body,
                quoted_message_id=sending.quoted_message_id,
                delay_message=sending.delay_message,
            )
        finally:
            deps.pacer.answered(instance.instance_id)
        latency_ms = round((deps.clock.monotonic() - started) * 1000, 1)
        last = not _worth_retrying(result) or attempt == deps.policy.provider_attempts
        _log_attempt(
            sending,
            attempt=attempts,
            blocked_reason=None if isinstance(result, SendAccepted) else result.code,
            latency_ms=latency_ms,
            provider_message_id=result.message_id if isinstance(result, SendAccepted) else None,
            # The last attempt's line is the delivery's canonical line (its decided status);
            # an attempt tried again logs its own.
            status=_result_values(result)[0].value if last else None,
            canonical=last,
        )
        if last:
            break
        delay = backoff_delay(attempt, deps.policy.backoff, deps.policy.backoff_cap)
        # A retry is a provider call of the instance too: never sooner than the minimum gap.
        await deps.sleep(max(delay.total_seconds(), deps.pacer.min_gap))
    status, values = _result_values(result)
    stored = await _record_answer(sending, status, attempts, values, deps)
    if stored is None:
        return None  # declared abandoned by another delivery meanwhile: its outcome stands
    outcome = await _publish_outcome(stored, deps, replayed=False)
    if stored.provider_message_id is not None:
        await _apply_early_receipts(stored, deps)
    return outcome


async def _park_answer(accepted: SendCommandRow, deps: SenderDeps) -> None:
    """Publish the `sent` outcome while the database cannot take it (the later publish of the
    stored row has the same `Nats-Msg-Id`, so callers see it once): if this process dies
    before the database is back, the next delivery finds the messageId there
    (`_recover_parked_answer`)."""
    try:
        await _publish_outcome(accepted, deps, replayed=False, count=False)
    except Exception as exc:  # noqa: BLE001 - the database write below still keeps the answer
        _log.warning("answer_park_failed", command_id=accepted.command_id, reason=repr(exc))


async def _record_answer(
    sending: SendCommandRow,
    status: RowStatus,
    attempts: int,
    values: dict[str, Any],
    deps: SenderDeps,
) -> SendCommandRow | None:
    """Store the provider's answer; while the database is away, try again until it is back.

    The answer exists nowhere else: giving up would leave the row `sending`, to become
    `uncertain` after the lease with the provider's messageId lost (receipts could never match).
    So an accepted answer the first write could not store is parked on its outcome subject
    first (only then: one publish fewer per send while the database is up), and the write is
    retried; the delivery stays in progress meanwhile (the consumer's heartbeat).
    """
    now = deps.clock.now()
    try:
        return await deps.store.move(
            sending.command_id,
            from_statuses={RowStatus.SENDING},
            to=status,
            now=now,
            attempts=attempts,
            **values,
        )
    except StoreUnavailableError as exc:
        _log.warning("answer_store_failed", command_id=sending.command_id, reason=str(exc))
        if status is RowStatus.SENT:
            parked = {"status": status.value, "attempts": attempts, **values}
            await _park_answer(sending.model_copy(update=parked), deps)
    async for attempt in stamina.retry_context(
        on=StoreUnavailableError,
        attempts=None,
        timeout=None,
        wait_initial=0.05,
        wait_max=deps.policy.store_retry_cap.total_seconds(),
    ):
        with attempt:
            if attempt.num > 1:
                _log.warning(
                    "answer_store_retry",
                    command_id=sending.command_id,
                    attempt=attempt.num,
                    provider_message_id=values.get("provider_message_id"),
                )
            return await deps.store.move(
                sending.command_id,
                from_statuses={RowStatus.SENDING},
                to=status,
                now=now,
                attempts=attempts,
                **values,
            )
    return None  # pragma: no cover - the retry context above never ends without an answer


def _worth_retrying(result: SendAccepted | ProviderFailure) -> bool:
    # Only when the provider certainly did not act: a retry can then never duplicate a message.
    return (
        not isinstance(result, SendAccepted)
        and result.retryable
        and not result.uncertain
        and isinstance(result, ProviderUnavailable | ProviderRejected)
    )


def _result_values(result: SendAccepted | ProviderFailure) -> tuple[RowStatus, dict[str, Any]]:
    if isinstance(result, SendAccepted):
        return RowStatus.SENT, {"provider_message_id": result.message_id}
    if isinstance(result, ProviderUnavailable):
        problem = Problem.of(ErrorCode.PROVIDER_UNAVAILABLE, result.detail)
        return RowStatus.FAILED, _error_values(problem)
    if isinstance(result, ProviderTimeout | ProviderBadResponse):
        problem = Problem.of(ErrorCode.PROVIDER_UNCERTAIN, f"{result.code}: {result.detail}")
        return RowStatus.UNCERTAIN, _error_values(problem)
    if isinstance(result, ProviderUnauthorized):
        problem = Problem.of(ErrorCode.PROVIDER_REJECTED, f"{result.message} ({result.detail})")
        return RowStatus.FAILED, _error_values(problem)
    problem = Problem.of(ErrorCode.PROVIDER_REJECTED, result.message)
    return RowStatus.FAILED, _error_values(problem)


def _log_attempt(  # noqa: PLR0913 - the fields of one decision
    row: SendCommandRow,
    *,
    attempt: int,
    blocked_reason: str | None,
    latency_ms: float | None,
    provider_message_id: str | None = None,
    status: str | None = None,
    canonical: bool = False,
) -> None:
    """One decision about a command. `canonical`: this is the decision of the send command
    whose delivery is being handled, so its fields go on that delivery's canonical
    `message_handled` line (`annotate`) instead of a line of their own (one line per send)."""
    fields = {
        "instance_id": row.instance_id,
        "command_id": row.command_id,
        "attempt": attempt,
        "status": status or row.status,
        "provider_message_id": provider_message_id or row.provider_message_id,
        "session_health": row.session_health,
        "blocked_reason": blocked_reason,
        "latency_ms": latency_ms,
    }
    if canonical and annotate(**fields):
        return
    _log.info("send_attempt", **fields)


# --- receipts -----------------------------------------------------------------------------------


async def apply_message_status(event: MessageStatusReported, deps: SenderDeps) -> Receipt:
    """Move the matching message forward (never back) and publish each move.

    A receipt can overtake the answer of its own send (some gateways answer only after the
    server confirmed): one whose messageId matches no send yet is kept, and applied when the
    answer lands (`_apply_early_receipts`) or forgotten after `early_receipt_keep`.
    """
    if event.message_id is None:
        return Receipt.IGNORED
    applied = await _apply_receipt(event.message_id, event.status, event.status_raw, None, deps)
    if applied is not None:
        return Receipt.APPLIED if applied else Receipt.IGNORED
    if not worth_keeping(event.status) or event.status is None:
        return Receipt.IGNORED
    await deps.store.keep_early_receipt(
        EarlyReceipt(
            message_id=event.message_id,
            status=event.status,
            status_raw=event.status_raw,
            instance_id=event.instance_id,
            received_at=deps.clock.now(),
        )
    )
    # The answer may have landed between the lookup above and the keep: look once more, so
    # one of the two sides always sees the other (both may, and applying is idempotent).
    row = await deps.store.by_provider_message_id(event.message_id)
    if row is not None:
        await _apply_early_receipts(row, deps)
        return Receipt.APPLIED
    _log.info("receipt_kept_early", message_id=event.message_id, status=event.status_raw)
    return Receipt.KEPT


async def _apply_early_receipts(row: SendCommandRow, deps: SenderDeps) -> None:
    message_id = row.provider_message_id
    if message_id is None:
        return
    receipts = await deps.store.early_receipts(message_id)
    if not receipts:
        return
    for receipt in sorted(receipts, key=lambda kept: _RECEIPT_ORDER.index(kept.status)):
        await _apply_receipt(
            message_id, receipt.status, receipt.status_raw, receipt.received_at, deps
        )
    await deps.store.drop_early_receipts(message_id)
    _log.info(
        "early_receipts_applied",
        command_id=row.command_id,
        message_id=message_id,
        statuses=[receipt.status.value for receipt in receipts],
    )


async def _apply_receipt(
    message_id: str,
    reported: DeliveryStatus | None,
    status_raw: str,
    received_at: datetime | None,
    deps: SenderDeps,
) -> bool | None:
    """True: moved; False: nothing to change; None: no send has this message id (yet).

    `received_at`: when a kept receipt came (its status time); None for one applied at once.
    """
    for _ in range(_RACE_RETRIES):
        row = await deps.store.by_provider_message_id(message_id)
        if row is None:
            return None
        try:
            current = SendStatus(row.status)
        except ValueError:
            return False
        target = next_status(current, reported)
        if target is None:
            _log.debug(
                "receipt_ignored", command_id=row.command_id, status=row.status, reported=status_raw
            )
            return False
        now = deps.clock.now()
        moved = await deps.store.move(
            row.command_id,
            from_statuses={RowStatus(current.value)},
            to=RowStatus(target.value),
            now=now,
            **({f"{target.value}_at": received_at} if received_at is not None else {}),
        )
        if moved is None:
            continue  # another receipt moved it meanwhile: judge again from the new status
        since_sent = (received_at or now) - row.sent_at if row.sent_at is not None else None
        deps.metrics.moved(current.value, target.value, since_sent)
        await deps.publisher.publish(
            subjects.message_status_subject(row.instance_id),
            MessageStatusChanged(
                command_id=row.command_id,
                instance_id=row.instance_id,
                provider_message_id=message_id,
                from_status=current,
                to_status=target,
                provider_status=reported,
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
        return True
    return False


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


# --- the periodic sweep -------------------------------------------------------------------------


@dataclass(slots=True)
class SweepReport:
    """What one sweep did; `to_release` are held commands whose instance can send again."""

    stuck_alerted: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    to_release: list[tuple[str, str]] = field(default_factory=list)
    early_receipts_expired: int = 0


async def sweep(deps: SenderDeps, policy: StuckPolicy) -> SweepReport:
    """One periodic pass: alert stuck messages once, signal stalls, expire held commands, find
    held ones to release, forget early receipts no answer claimed in time."""
    report = SweepReport()
    started = deps.clock.monotonic()
    now = deps.clock.now()
    sent_before = now - policy.window
    for row in await deps.store.unalerted_stuck(sent_before):
        if row.sent_at is None or not await deps.store.mark_stuck_alerted(row.command_id, now):
            continue
        deps.metrics.stuck_alerts.inc()
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
    groups = await deps.store.stuck_by_instance(sent_before, now - policy.stall_lookback)
    deps.metrics.stuck.set(sum(len(group.stuck) for group in groups))
    for group in groups:
        if not is_stalled(group.stuck, group.last_delivery_at, threshold=policy.stall_threshold):
            continue
        ids = [message.command_id for message in group.stuck]
        if not await deps.store.open_stall(group.instance_id, ids, now):
            continue
        deps.metrics.stalls.inc()
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
    await _sweep_held(deps, report)
    report.early_receipts_expired = await deps.store.expire_early_receipts(
        now - deps.policy.early_receipt_keep
    )
    deps.metrics.sweep_duration.observe(deps.clock.monotonic() - started)
    return report


async def _sweep_held(deps: SenderDeps, report: SweepReport) -> None:
    now = deps.clock.now()
    for row in await deps.store.held():
        if row.hold_until is None or row.hold_until <= now:
            if await expire_held(row.command_id, deps) is not None:
                report.expired.append(row.command_id)
            continue
        instance = await deps.directory.get(row.instance_id, fresh=True)
        # A missed state event must not strand a command: release when health says it can go.
        if preflight(instance, can_hold=True).verdict is Verdict.SEND:
            report.to_release.append((row.instance_id, row.command_id))


async def held_to_release(event: InstanceStateChanged, deps: SenderDeps) -> list[str]:
    """Health says an instance is connected again: its held commands, oldest first."""
    if event.to_state is not InstanceState.CONNECTED:
        return []
    held = await deps.store.held(event.instance_id)
    if held:
        _log.info("held_released", instance_id=event.instance_id, count=len(held))
    return [row.command_id for row in held]


# --- queries and explicit retries ---------------------------------------------------------------


_TIMELINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accepted", "created_at"),
    *((status.value, f"{status.value}_at") for status in SendStatus),
)


def timeline(row: SendCommandRow) -> list[StatusTime]:
    """Every status the row reached with its time, oldest first (from the `<status>_at` columns)."""
    steps = [
        StatusTime(status=status, at=at)
        for status, column in _TIMELINE_COLUMNS
        if (at := getattr(row, column)) is not None
    ]
    return sorted(steps, key=lambda step: step.at)


async def get_outcome(command_id: str, store: CommandStore) -> SendOutcomeReply:
    """The stored outcome of a command (`replayed=True`) and its timeline, or NOT_FOUND."""
    row = await store.get(command_id)
    if row is None:
        return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_FOUND, command_id))
    return SendOutcomeReply(ok=True, outcome=to_outcome(row, replayed=True), timeline=timeline(row))


async def cancel_held(request: CancelSend, deps: SenderDeps) -> SendOutcomeReply:
    """Fail a held command with CANCELLED (compare-and-set from `held`) and publish the outcome.

    Refusals: NOT_CANCELLABLE once it left `held`, NOT_FOUND when unknown.
    """
    row = await deps.store.move(
        request.command_id,
        from_statuses={RowStatus.HELD},
        to=RowStatus.FAILED,
        now=deps.clock.now(),
        **_error_values(Problem.of(ErrorCode.CANCELLED)),
    )
    if row is None:
        current = await deps.store.get(request.command_id)
        if current is None:
            code, detail = ErrorCode.NOT_FOUND, request.command_id
        else:
            code, detail = ErrorCode.NOT_CANCELLABLE, f"status is {current.status}"
        return SendOutcomeReply(ok=False, error=Problem.of(code, detail))
    _log_attempt(
        row, attempt=row.attempts, blocked_reason=ErrorCode.CANCELLED.value, latency_ms=None
    )
    outcome = await _publish_outcome(row, deps, replayed=False)
    return SendOutcomeReply(ok=True, outcome=outcome, timeline=timeline(row))


def retry_command(request: RetrySend, original: SendCommandRow) -> SendMessage:
    """The new command a retry sends: same message, new id, linked to the original."""
    return SendMessage(
        command_id=request.new_command_id,
        instance_id=original.instance_id,
        phone=original.phone,
        body=_BODY.validate_python(original.body),
        quoted_message_id=original.quoted_message_id,
        delay_message=original.delay_message,
        retry_of=original.command_id,
        correlation_id=request.correlation_id or original.correlation_id,
    )


async def retry_send(
    request: RetrySend,
    deps: SenderDeps,
    turn: Callable[[str], AbstractAsyncContextManager[None]],
) -> SendOutcomeReply:
    """Explicit retry of a failed send as a new linked command, through the preflight again.

    `turn(instance_id)` is the instance's lane, so the retry keeps per-instance order.
    """
    original = await deps.store.get(request.command_id)
    if original is None:
        return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_FOUND, request.command_id))
    existing = await deps.store.get(request.new_command_id)
    if existing is not None and existing.retry_of != original.command_id:
        return SendOutcomeReply(
            ok=False,
            error=Problem.of(
                ErrorCode.INVALID_COMMAND,
                f"{request.new_command_id} already names another command",
            ),
        )
    if existing is None and original.status != RowStatus.FAILED.value:
        return SendOutcomeReply(
            ok=False,
            error=Problem.of(ErrorCode.NOT_RETRYABLE, f"status is {original.status}"),
        )
    command = retry_command(request, original)
    async with turn(command.instance_id):
        outcome = await send_message(command, deps)
    if outcome is None:
        stored = await deps.store.get(command.command_id)
        outcome = to_outcome(stored) if stored is not None else None
    if outcome is None:
        return SendOutcomeReply(
            ok=False, error=Problem.of(ErrorCode.INTERNAL, "retry is being decided")
        )
    _log.info(
        "send_retried",
        command_id=request.command_id,
        new_command_id=request.new_command_id,
        status=outcome.status.value,
    )
    return SendOutcomeReply(ok=True, outcome=outcome)
