"""The ingest use cases: accept one webhook body (request path) and archive a batch (off it).

Accepting: parse, sanitise, route, make it durable, say what happened. Durable means:
JetStream acknowledged it, or (NATS down, publish failed or timed out) it is fsynced in the
local spool, from which it is drained later under the same `Nats-Msg-Id`. When neither works
the answer is `NOT_DURABLE` and the caller (W-API) should retry.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from pydantic import TypeAdapter, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.health import SessionProofOfLife
from zapgate.contracts.webhooks import (
    QUARANTINE_KIND,
    AnyWebhookEvent,
    WebhookErrorCode,
    WebhookEvent,
    WebhookQuarantined,
)
from zapgate.ingest.domain.routing import body_dedupe_key, route
from zapgate.ingest.ports import PayloadRow, QuarantineRow, SpoolError, SpoolRecord

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from zapgate.ingest.domain.states import KnownStates
    from zapgate.ingest.ports import Archive, Publisher, Spool

log = structlog.get_logger("zapgate.ingest.service")
_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)
QUARANTINE_SUBJECT = subjects.webhook_subject(QUARANTINE_KIND)


class Disposition(StrEnum):
    """How a body was made durable (or why not)."""

    PUBLISHED = "published"
    DUPLICATE = "duplicate"
    SPOOLED = "spooled"
    QUARANTINED = "quarantined"
    TOO_LARGE = "too_large"
    NOT_DURABLE = "not_durable"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to one body; `code` is set for quarantine and refusals."""

    disposition: Disposition
    kind: str
    dedupe_key: str
    instance_id: str | None = None
    code: WebhookErrorCode | None = None


class _NotJsonError(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    # NaN/Infinity are not JSON (RFC 8259) and PostgreSQL's JSONB refuses them.
    raise _NotJsonError(name)


def parse_object(body: bytes) -> tuple[dict[str, Any] | None, WebhookErrorCode | None]:
    """The JSON object in `body`, or the reason it is not one."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None, WebhookErrorCode.WEBHOOK_NOT_JSON
    if not isinstance(value, dict):
        return None, WebhookErrorCode.WEBHOOK_NOT_OBJECT
    return value, None


class Gateway:
    """The webhook use case, with its two ways of making a body durable."""

    def __init__(self, publisher: Publisher, spool: Spool) -> None:
        self._publisher = publisher
        self._spool = spool

    async def accept(
        self, body: bytes, received_at: datetime, content_type: str | None = None
    ) -> Accepted:
        payload, problem = parse_object(body)
        if payload is None:
            return await self._quarantine(body, received_at, problem, content_type)
        event = route(payload, received_at)
        data = event.model_dump_json().encode()
        if len(data) > self._publisher.max_payload:
            return Accepted(
                Disposition.TOO_LARGE,
                event.kind,
                event.dedupe_key,
                event.instance_id,
                WebhookErrorCode.WEBHOOK_TOO_LARGE,
            )
        disposition = await self._make_durable(
            SpoolRecord(subjects.webhook_subject(event.kind), event.dedupe_key, data)
        )
        code = (
            WebhookErrorCode.WEBHOOK_NOT_DURABLE if disposition is Disposition.NOT_DURABLE else None
        )
        return Accepted(disposition, event.kind, event.dedupe_key, event.instance_id, code)

    async def _quarantine(
        self,
        body: bytes,
        received_at: datetime,
        problem: WebhookErrorCode | None,
        content_type: str | None,
    ) -> Accepted:
        code = problem or WebhookErrorCode.WEBHOOK_NOT_JSON
        key = body_dedupe_key(QUARANTINE_KIND, body)
        quarantined = WebhookQuarantined(
            occurred_at=received_at,
            correlation_id=key,
            received_at=received_at,
            code=code,
            dedupe_key=key,
            body_base64=base64.b64encode(body).decode(),
            content_type=content_type[:200] if content_type else None,
        )
        record = SpoolRecord(QUARANTINE_SUBJECT, key, quarantined.model_dump_json().encode())
        disposition = await self._make_durable(record)
        if disposition is Disposition.NOT_DURABLE:
            return Accepted(
                disposition, QUARANTINE_KIND, key, None, WebhookErrorCode.WEBHOOK_NOT_DURABLE
            )
        return Accepted(Disposition.QUARANTINED, QUARANTINE_KIND, key, None, code)

    async def _make_durable(self, record: SpoolRecord) -> Disposition:
        try:
            duplicate = await self._publisher.publish(record.subject, record.body, record.msg_id)
        except Exception as error:  # noqa: BLE001 - any failure: the outcome is unknown, spool it
            publish_error = repr(error)
        else:
            return Disposition.DUPLICATE if duplicate else Disposition.PUBLISHED
        try:
            await asyncio.to_thread(self._spool.append, record)
        except SpoolError as error:
            log.error(  # noqa: TRY400 - the reason is in the line; no traceback wanted
                "webhook_not_durable",
                dedupe_key=record.msg_id,
                publish_error=publish_error,
                spool_error=repr(error),
            )
            return Disposition.NOT_DURABLE
        log.warning("webhook_spooled", dedupe_key=record.msg_id, publish_error=publish_error)
        return Disposition.SPOOLED

    async def publish_spooled(self, record: SpoolRecord) -> None:
        """Publish one record drained from the spool, under its original `Nats-Msg-Id`."""
        await self._publisher.publish(record.subject, record.body, record.msg_id)


# --- archiving: off the request path --------------------------------------------------------


def proof_of_life_msg_id(dedupe_key: str) -> str:
    return f"pol:{dedupe_key}"


async def archive_batch(
    messages: Sequence[tuple[str, bytes]],
    archive: Archive,
    publisher: Publisher,
    states: KnownStates,
) -> int:
    """Store one batch and publish its proofs of life. Raises when it must be retried.

    `messages` are (subject, data). Returns how many payload rows were new.
    """
    payloads: list[PayloadRow] = []
    quarantined: list[QuarantineRow] = []
    events: list[WebhookEvent] = []
    for subject, data in messages:
        try:
            if subject == QUARANTINE_SUBJECT:
                quarantined.append(_quarantine_row(WebhookQuarantined.model_validate_json(data)))
                continue
            event: WebhookEvent = _EVENTS.validate_json(data)
        except ValidationError as error:
            # Not written by ingest (nothing else may publish here): say so, keep going.
            log.error("archive_unreadable_message", subject=subject, reason=str(error)[:500])  # noqa: TRY400 - reason is enough
            continue
        events.append(event)
        payloads.append(_payload_row(event))
    inserted = await archive.store(payloads, quarantined)
    for event in events:
        await _prove_life(event, publisher, states)
    return inserted


async def _prove_life(event: WebhookEvent, publisher: Publisher, states: KnownStates) -> None:
    if event.instance_id is None or event.connected_phone is None:
        return
    proof = SessionProofOfLife(
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        correlation_id=event.dedupe_key,
        instance_id=event.instance_id,
        phone=event.connected_phone,
        source_kind=event.kind,
        observed_at=event.moment or event.received_at,
    )
    await publisher.publish(
        subjects.proof_of_life_subject(event.instance_id),
        proof.model_dump_json().encode(),
        proof_of_life_msg_id(event.dedupe_key),
        stream=subjects.STREAM_HEALTH,
    )
    stale = states.contradicted_by_proof_of_life(event.instance_id)
    if stale is not None:
        log.warning(
            "proof_of_life_contradicts_state",
            instance_id=event.instance_id,
            stale_state=stale.to_state.value,
            stale_reason=stale.reason,
            stale_since=stale.observed_at.isoformat(),
            source_kind=event.kind,
            reason="a webhook carrying connectedPhone proves the session alive and complete",
        )


def _payload_row(event: WebhookEvent) -> PayloadRow:
    return PayloadRow(
        received_at=event.received_at,
        instance_id=event.instance_id,
        kind=event.kind.value,
        dedupe_key=event.dedupe_key,
        raw=event.raw,
        event=event.model_dump(mode="json", exclude={"raw"}),
    )


def _quarantine_row(item: WebhookQuarantined) -> QuarantineRow:
    return QuarantineRow(
        received_at=item.received_at,
        code=item.code.value,
        dedupe_key=item.dedupe_key,
        body=base64.b64decode(item.body_base64),
        content_type=item.content_type,
    )
