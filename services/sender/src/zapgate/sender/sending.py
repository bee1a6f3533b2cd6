"""Use cases of sending: claim, preflight, send through the provider, store, then publish.

The promise: never `sent` unless the provider accepted and named the message, never a second
provider call for one command, and a stored decision for every command.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr, TypeAdapter

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import ReconnectRequested, SessionObserved
from zapgate.contracts.sending import (
    AudioContent,
    DocumentContent,
    ImageContent,
    MessageBody,
    MessageKind,
    RetrySend,
    SendMessage,
    SendOutcome,
    SendOutcomeReply,
    SendStatus,
    TextContent,
    VideoContent,
)
from zapgate.sender.domain import (
    InstanceView,
    LiveSession,
    Preflight,
    Verdict,
    after_live_check,
    backoff_delay,
    preflight,
)
from zapgate.sender.tables import RowStatus, SendCommandRow
from zapgate.wapi.credentials import InstanceCredentials
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

    from zapgate.runtime.clock import Clock
    from zapgate.sender.lanes import Pacer
    from zapgate.sender.publisher import EventPublisher
    from zapgate.sender.store import CommandStore, InstanceDirectory
    from zapgate.wapi.port import WapiPort

_log = structlog.get_logger("zapgate.sender")
_BODY = TypeAdapter[MessageBody](MessageBody)
_PUBLIC = frozenset(status.value for status in SendStatus)
REQUESTED_BY = "sender"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPolicy:
    live_check_timeout: timedelta = timedelta(seconds=3)
    provider_attempts: int = 3
    backoff: timedelta = timedelta(milliseconds=500)
    backoff_cap: timedelta = timedelta(seconds=5)
    sending_lease: timedelta = timedelta(minutes=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderDeps:
    """Everything the use cases touch, built once by the composition root."""

    store: CommandStore
    directory: InstanceDirectory
    wapi: WapiPort
    publisher: EventPublisher
    clock: Clock
    pacer: Pacer
    policy: SendPolicy
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


# --- outcomes -------------------------------------------------------------------------------------


def to_outcome(row: SendCommandRow, *, replayed: bool = False) -> SendOutcome | None:
    """The public outcome of a row; None while the decision is under way."""
    if row.status not in _PUBLIC:
        return None
    error = None
    if row.error_code is not None:
        error = Problem(
            code=row.error_code, message=row.error_message or "", detail=row.error_detail
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
    )


async def _publish_outcome(row: SendCommandRow, deps: SenderDeps, *, replayed: bool) -> SendOutcome:
    outcome = to_outcome(row, replayed=replayed)
    if outcome is None:
        raise RuntimeError(f"command {row.command_id} has no public outcome yet")
    msg_id = f"outcome:{row.command_id}:{row.status}:{row.attempts}"
    if replayed:
        # A replay answers a new delivery: it must reach the subject even inside the window.
        msg_id += f":replay:{uuid.uuid4().hex}"
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
    }


# --- the command --------------------------------------------------------------------------------


async def handle_send_command(command: SendMessage, deps: SenderDeps) -> SendOutcome | None:
    """Decide one delivered command. None: another delivery is deciding it right now."""
    now = deps.clock.now()
    instance = await deps.directory.get(command.instance_id)
    first = preflight(instance, can_hold=command.hold_for > timedelta(0))
    if first.verdict is Verdict.SEND and instance is not None:
        # The common case in one write: claimed straight into `sending`, then the provider.
        claim = await deps.store.claim(
            command, now, sending=True, session_health=first.session_health
        )
        if claim.new:
            return await _call_and_record(claim.row, instance, deps)
        return await _on_repeat(claim.row, deps)
    claim = await deps.store.claim(command, now)
    if claim.new:
        return await _decide(claim.row, deps, announce_hold=True)
    return await _on_repeat(claim.row, deps)


async def _on_repeat(row: SendCommandRow, deps: SenderDeps) -> SendOutcome | None:
    status = RowStatus(row.status)
    if status is RowStatus.CLAIMED:
        # Claimed but never sent to the provider (a crash, or a delivery still in preflight):
        # deciding again is safe, the move to `sending` lets one of them through.
        return await _decide(row, deps, announce_hold=True)
    if status is RowStatus.SENDING:
        now = deps.clock.now()
        if row.sending_at is not None and now - row.sending_at < deps.policy.sending_lease:
            return None
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
        _log_attempt(abandoned, attempt=abandoned.attempts, blocked_reason=None, latency_ms=None)
        return await _publish_outcome(abandoned, deps, replayed=False)
    _log.info(
        "send_replayed",
        command_id=row.command_id,
        instance_id=row.instance_id,
        status=row.status,
    )
    return await _publish_outcome(row, deps, replayed=True)


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
    instance = await deps.directory.get(row.instance_id)
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
            _log_attempt(held, attempt=held.attempts, blocked_reason=problem.code, latency_ms=None)
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
    _log_attempt(failed, attempt=failed.attempts, blocked_reason=problem.code, latency_ms=None)
    return await _publish_outcome(failed, deps, replayed=False)


def _credentials(instance: InstanceView) -> InstanceCredentials:
    return InstanceCredentials(instance_id=instance.instance_id, token=SecretStr(instance.token))


async def _observe(instance: InstanceView, deps: SenderDeps) -> LiveSession:
    credentials = _credentials(instance)
    try:
        async with asyncio.timeout(deps.policy.live_check_timeout.total_seconds()):
            status = await deps.wapi.status_instance(credentials)
            if isinstance(status, ProviderFailure):
                return LiveSession(reachable=False)
            if not status.connected:
                return LiveSession(reachable=True, connected=False)
            # status-instance never carries the phone: only fetch-instance proves completeness.
            details = await deps.wapi.fetch_instance(credentials)
    except TimeoutError:
        return LiveSession(reachable=False)
    if isinstance(details, ProviderFailure):
        return LiveSession(reachable=False)
    connected = details.connected if details.connected is not None else True
    return LiveSession(reachable=True, connected=connected, phone=details.connected_phone)


async def _live_check(
    row: SendCommandRow,
    instance: InstanceView,
    decision: Preflight,
    deps: SenderDeps,
    *,
    can_hold: bool,
) -> Preflight:
    session = await _observe(instance, deps)
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
    await deps.pacer.wait_turn(instance.instance_id)
    body = _BODY.validate_python(sending.body)
    credentials = _credentials(instance)
    attempts = sending.attempts
    result: SendAccepted | ProviderFailure
    for attempt in range(1, deps.policy.provider_attempts + 1):
        attempts += 1
        started = deps.clock.monotonic()
        result = await _call_provider(deps.wapi, credentials, sending, body)
        latency_ms = round((deps.clock.monotonic() - started) * 1000, 1)
        _log_attempt(
            sending,
            attempt=attempts,
            blocked_reason=None if isinstance(result, SendAccepted) else result.code,
            latency_ms=latency_ms,
            provider_message_id=result.message_id if isinstance(result, SendAccepted) else None,
        )
        if not _worth_retrying(result) or attempt == deps.policy.provider_attempts:
            break
        delay = backoff_delay(attempt, deps.policy.backoff, deps.policy.backoff_cap)
        await deps.sleep(delay.total_seconds())
    status, values = _result_values(result)
    stored = await deps.store.move(
        sending.command_id,
        from_statuses={RowStatus.SENDING},
        to=status,
        now=deps.clock.now(),
        attempts=attempts,
        **values,
    )
    if stored is None:
        return None  # declared abandoned by another delivery meanwhile: its outcome stands
    return await _publish_outcome(stored, deps, replayed=False)


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


async def _call_provider(
    wapi: WapiPort,
    credentials: InstanceCredentials,
    row: SendCommandRow,
    body: TextContent | ImageContent | AudioContent | VideoContent | DocumentContent,
) -> SendAccepted | ProviderFailure:
    common: dict[str, Any] = {
        "quoted_message_id": row.quoted_message_id,
        "delay_message": row.delay_message,
    }
    if isinstance(body, TextContent):
        return await wapi.send_text(credentials, row.phone, body.message, **common)
    if isinstance(body, ImageContent):
        return await wapi.send_image(
            credentials, row.phone, body.image, caption=body.caption, **common
        )
    if isinstance(body, AudioContent):
        return await wapi.send_audio(credentials, row.phone, body.audio, **common)
    if isinstance(body, VideoContent):
        return await wapi.send_video(
            credentials, row.phone, body.video, caption=body.caption, **common
        )
    return await wapi.send_document(
        credentials,
        row.phone,
        body.document,
        body.extension,
        file_name=body.file_name,
        caption=body.caption,
        **common,
    )


def _log_attempt(
    row: SendCommandRow,
    *,
    attempt: int,
    blocked_reason: str | None,
    latency_ms: float | None,
    provider_message_id: str | None = None,
) -> None:
    _log.info(
        "send_attempt",
        instance_id=row.instance_id,
        command_id=row.command_id,
        attempt=attempt,
        status=row.status,
        provider_message_id=provider_message_id or row.provider_message_id,
        session_health=row.session_health,
        blocked_reason=blocked_reason,
        latency_ms=latency_ms,
    )


# --- the request-reply API ------------------------------------------------------------------------


async def get_outcome(command_id: str, store: CommandStore) -> SendOutcomeReply:
    row = await store.get(command_id)
    if row is None:
        return SendOutcomeReply(ok=False, error=Problem.of(ErrorCode.NOT_FOUND, command_id))
    return SendOutcomeReply(ok=True, outcome=to_outcome(row, replayed=True))


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
    run_in_lane: Callable[
        [str, Callable[[], Awaitable[SendOutcome | None]]], Awaitable[SendOutcome | None]
    ],
) -> SendOutcomeReply:
    """Explicit retry of a failed send as a new linked command, through the preflight again."""
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
    outcome = await run_in_lane(command.instance_id, lambda: handle_send_command(command, deps))
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
