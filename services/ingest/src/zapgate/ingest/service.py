"""The ingest use cases: accept one webhook body (request path), archive a batch (off it), and
count one instance's archived webhooks (the read API).

Accepting: parse, sanitise, route, make it durable, say what happened. Durable means:
JetStream acknowledged it, or (NATS down, publish failed or timed out) it is fsynced in the
local spool, from which it is drained later under the same `Nats-Msg-Id`. When neither works
the answer is `NOT_DURABLE` and the caller (W-API) should retry.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import structlog
from pydantic import TypeAdapter, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.bounds import bounded_id
from zapgate.contracts.health import SessionProofOfLife
from zapgate.contracts.webhooks import (
    QUARANTINE_KIND,
    AnyWebhookEvent,
    Chat,
    MessageChanged,
    MessageChangeKind,
    Sender,
    WebhookCount,
    WebhookCountsReply,
    WebhookErrorCode,
    WebhookEvent,
    WebhookKind,
    WebhookQuarantined,
)
from zapgate.ingest.domain.routing import (
    EVENT_DELIVERY,
    EVENT_RECEIVED,
    body_dedupe_key,
    disposition_of,
    message_key,
    route,
)
from zapgate.ingest.domain.sanitize import Fix, parse_webhook
from zapgate.ingest.domain.size import (
    BODY_RECORD_SUBJECT,
    DEFAULT_INLINE_EVENT_BYTES,
    FIELD_BYTES,
    QUARANTINE_PREFIX_BYTES,
    body_object_name,
    peek_ids,
    slim_event,
)
from zapgate.ingest.ports import PayloadRow, QuarantineRow, SpoolError, SpoolRecord

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from zapgate.contracts.webhooks import CountWebhooks
    from zapgate.ingest.domain.states import KnownStates
    from zapgate.ingest.ports import Archive, BodyStore, Publisher, Spool, WebhookCounter
    from zapgate.runtime.clock import Clock

log = structlog.get_logger("zapgate.ingest.service")
ARCHIVE_UNREADABLE: Final = "ARCHIVE_UNREADABLE"
"""Quarantine code of a bus message on a webhook subject that is no event ingest writes."""
_UPDATE_NAMESPACE: Final = uuid.UUID("0c6f1a52-3d0e-4c55-9a0b-51f4a1d7e2c9")
# Content updates are told apart per provider event (a received and a sent message may share
# an id on the provider's side).
_MESSAGE_EVENTS: Final = {
    WebhookKind.MESSAGE_RECEIVED: EVENT_RECEIVED,
    WebhookKind.MESSAGE_SENT: EVENT_DELIVERY,
}
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
    fixes: tuple[Fix, ...] = ()


class Gateway:
    """The webhook use case, with its two ways of making a body durable.

    `inline_event_bytes`: an event larger than this (or than the server's max payload) leaves
    its exact body in the body store and its oversized fields out (`omitted_fields`).
    """

    def __init__(
        self,
        publisher: Publisher,
        spool: Spool,
        bodies: BodyStore | None = None,
        *,
        inline_event_bytes: int = DEFAULT_INLINE_EVENT_BYTES,
    ) -> None:
        self._publisher = publisher
        self._spool = spool
        self._bodies = bodies
        self._inline_event_bytes = inline_event_bytes

    async def accept(
        self, body: bytes, received_at: datetime, content_type: str | None = None
    ) -> Accepted:
        parsed = parse_webhook(body)
        if parsed.payload is None:
            problem = parsed.problem or WebhookErrorCode.WEBHOOK_NOT_JSON
            return await self._quarantine(body, received_at, problem, content_type)
        try:
            large = len(body) * 2 > self._inline_limit()  # raw + base64 would not fit
            event = route(
                parsed.payload,
                received_at,
                sanitized=[fix.value for fix in parsed.fixes],
                body=None if large else body,
            )
            data = b"" if large else event.model_dump_json().encode()
        except Exception as error:  # noqa: BLE001 - whatever cannot be typed is kept whole
            log.error("webhook_unreadable", reason=repr(error)[:300])  # noqa: TRY400 - no traceback
            code = WebhookErrorCode.WEBHOOK_UNREADABLE
            return await self._quarantine(body, received_at, code, content_type)
        if large or len(data) > self._inline_limit():
            return await self._accept_large(event, body)
        disposition = await self._make_durable(
            SpoolRecord(subjects.webhook_subject(event.kind), event.dedupe_key, data)
        )
        return _accepted(disposition, event, parsed.fixes)

    def _inline_limit(self) -> int:
        return min(self._inline_event_bytes, self._publisher.max_payload)

    async def _accept_large(self, event: WebhookEvent, body: bytes) -> Accepted:
        name = body_object_name(body)
        slim = slim_event(event, name, field_bytes=min(FIELD_BYTES, self._inline_limit() // 8))
        data = slim.model_dump_json().encode()
        if len(data) > self._inline_limit() or self._bodies is None:
            log.error(
                "webhook_too_large",
                instance_id=event.instance_id,
                dedupe_key=event.dedupe_key,
                size=len(body),
                reason="no body store" if self._bodies is None else "typed event still too big",
            )
            return Accepted(
                Disposition.TOO_LARGE,
                event.kind,
                event.dedupe_key,
                event.instance_id,
                WebhookErrorCode.WEBHOOK_TOO_LARGE,
            )
        body_record = SpoolRecord(BODY_RECORD_SUBJECT, name, body)
        event_record = SpoolRecord(subjects.webhook_subject(slim.kind), slim.dedupe_key, data)
        try:
            await self._bodies.put(name, body)
        except Exception as error:  # noqa: BLE001 - NATS down or slow: both go to the spool, in order
            disposition = await self._spool_all([body_record, event_record], repr(error))
        else:
            disposition = await self._make_durable(event_record)
        log.info(
            "webhook_body_stored",
            instance_id=event.instance_id,
            dedupe_key=event.dedupe_key,
            size=len(body),
            omitted=slim.omitted_fields,
        )
        return _accepted(disposition, slim, ())

    async def refuse_too_large(
        self, prefix: bytes, size: int | None, received_at: datetime, content_type: str | None
    ) -> Accepted:
        """Above the hard cap: keep a quarantine entry (ids read from the first bytes, the
        first `QUARANTINE_PREFIX_BYTES`) so the operator knows whose message was refused."""
        head = prefix[:QUARANTINE_PREFIX_BYTES]
        peeked = peek_ids(prefix)
        key = body_dedupe_key(QUARANTINE_KIND, head + str(size).encode())
        quarantined = WebhookQuarantined(
            occurred_at=received_at,
            correlation_id=key,
            received_at=received_at,
            code=WebhookErrorCode.WEBHOOK_TOO_LARGE,
            dedupe_key=key,
            body_base64=base64.b64encode(head).decode(),
            content_type=_content_type(content_type),
            size=size,
            instance_id=peeked.instance_id,
            event=peeked.event,
            message_id=peeked.message_id,
        )
        record = SpoolRecord(QUARANTINE_SUBJECT, key, quarantined.model_dump_json().encode())
        disposition = await self._make_durable(record)
        log.warning(
            "webhook_too_large",
            size=size,
            durable=disposition is not Disposition.NOT_DURABLE,
            reason="body over the hard cap: refused, ids kept in the quarantine",
            **peeked.fields(),
        )
        return Accepted(
            Disposition.TOO_LARGE,
            QUARANTINE_KIND,
            key,
            peeked.instance_id,
            WebhookErrorCode.WEBHOOK_TOO_LARGE,
        )

    async def _quarantine(
        self,
        body: bytes,
        received_at: datetime,
        code: WebhookErrorCode,
        content_type: str | None,
    ) -> Accepted:
        key = body_dedupe_key(QUARANTINE_KIND, body)
        peeked = peek_ids(body)
        quarantined = WebhookQuarantined(
            occurred_at=received_at,
            correlation_id=key,
            received_at=received_at,
            code=code,
            dedupe_key=key,
            body_base64=base64.b64encode(body).decode(),
            content_type=_content_type(content_type),
            size=len(body),
            instance_id=peeked.instance_id,
            event=peeked.event,
            message_id=peeked.message_id,
        )
        record = SpoolRecord(QUARANTINE_SUBJECT, key, quarantined.model_dump_json().encode())
        disposition = await self._make_durable(record)
        if disposition is Disposition.NOT_DURABLE:
            return Accepted(
                disposition, QUARANTINE_KIND, key, None, WebhookErrorCode.WEBHOOK_NOT_DURABLE
            )
        return Accepted(Disposition.QUARANTINED, QUARANTINE_KIND, key, peeked.instance_id, code)

    async def _spool_all(self, records: list[SpoolRecord], publish_error: str) -> Disposition:
        try:
            for record in records:
                await asyncio.to_thread(self._spool.append, record)
        except SpoolError as error:
            log.error(  # noqa: TRY400 - the reason is in the line; no traceback wanted
                "webhook_not_durable",
                dedupe_key=records[-1].msg_id,
                publish_error=publish_error,
                spool_error=repr(error),
            )
            return Disposition.NOT_DURABLE
        log.warning("webhook_spooled", dedupe_key=records[-1].msg_id, publish_error=publish_error)
        return Disposition.SPOOLED

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
        """Publish one record drained from the spool, under its original `Nats-Msg-Id` (a body
        record goes to the body store under its name)."""
        if record.subject == BODY_RECORD_SUBJECT:
            if self._bodies is None:
                raise RuntimeError("a spooled body but no body store")
            await self._bodies.put(record.msg_id, record.body)
            return
        await self._publisher.publish(record.subject, record.body, record.msg_id)


def _accepted(disposition: Disposition, event: WebhookEvent, fixes: tuple[Fix, ...]) -> Accepted:
    code = WebhookErrorCode.WEBHOOK_NOT_DURABLE if disposition is Disposition.NOT_DURABLE else None
    return Accepted(disposition, event.kind, event.dedupe_key, event.instance_id, code, fixes)


def _content_type(value: str | None) -> str | None:
    return bounded_id(value, limit=200) if value else None


# --- archiving: off the request path --------------------------------------------------------


def proof_of_life_msg_id(dedupe_key: str) -> str:
    return f"pol:{dedupe_key}"


async def archive_batch(
    messages: Sequence[tuple[str, bytes]],
    archive: Archive,
    publisher: Publisher,
    states: KnownStates,
    bodies: BodyStore | None = None,
) -> int:
    """Store one batch, publish its content updates and proofs of life. Raises when it must be
    retried (database or NATS down). `messages` are (subject, data); returns new payload rows.

    A message ingest cannot read is kept in the quarantine (`ARCHIVE_UNREADABLE`), never
    dropped. A new row of a known message (same `message_key`, other content) is published
    again as a `MessageChanged` of kind `content_update` (docs/design.md, ingest).
    """
    payloads: list[PayloadRow] = []
    quarantined: list[QuarantineRow] = []
    events: dict[str, WebhookEvent] = {}
    for subject, data in messages:
        try:
            if subject == QUARANTINE_SUBJECT:
                quarantined.append(_quarantine_row(WebhookQuarantined.model_validate_json(data)))
                continue
            event: WebhookEvent = _EVENTS.validate_json(data)
        except ValidationError as error:
            log.error(  # noqa: TRY400 - reason is enough
                "archive_unreadable_message", subject=subject, reason=str(error)[:500]
            )
            quarantined.append(_unreadable_row(subject, data))
            continue
        if event.dedupe_key.startswith(CONTENT_UPDATE_PREFIX):
            continue  # derived from a webhook whose row is stored already: not kept twice
        events[event.dedupe_key] = event
        payloads.append(await _payload_row(event, bodies))
    result = await archive.store(payloads, quarantined)
    # Published together, not one ack round trip after another: a batch must end well inside
    # the consumer's ack wait, or its deliveries come back while still being handled.
    await _all(
        *(
            _publish_content_update(events[new_key], earlier_key, publisher)
            for new_key, earlier_key in result.updates.items()
        ),
        *(_prove_life(event, publisher, states) for event in events.values()),
    )
    return result.inserted


async def _all(*publishes: Coroutine[Any, Any, None]) -> None:
    """Run the publishes concurrently; every one ends, then the first failure is raised."""
    outcomes = await asyncio.gather(*publishes, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


CONTENT_UPDATE_PREFIX: Final = "update:"


def content_update_msg_id(dedupe_key: str) -> str:
    return f"{CONTENT_UPDATE_PREFIX}{dedupe_key}"


async def _publish_content_update(
    event: WebhookEvent, earlier_key: str, publisher: Publisher
) -> None:
    content = getattr(event, "content", None)
    update = MessageChanged(
        event_id=uuid.uuid5(_UPDATE_NAMESPACE, event.dedupe_key),
        occurred_at=event.occurred_at,
        correlation_id=event.dedupe_key,
        instance_id=event.instance_id,
        received_at=event.received_at,
        moment=event.moment,
        dedupe_key=content_update_msg_id(event.dedupe_key),
        connected_phone=event.connected_phone,
        raw=event.raw,
        sanitized=event.sanitized,
        body_object=event.body_object,
        omitted_fields=event.omitted_fields,
        change=MessageChangeKind.CONTENT_UPDATE,
        message_id=getattr(event, "message_id", None),
        target_message_id=getattr(event, "message_id", None),
        chat=getattr(event, "chat", Chat(id="")),
        sender=getattr(event, "sender", Sender()),
        new_text=content.text or content.caption if content is not None else None,
        content=content,
    )
    await publisher.publish(
        subjects.webhook_subject(update.kind),
        update.model_dump_json().encode(),
        update.dedupe_key,
    )
    log.info(
        "message_content_updated",
        instance_id=event.instance_id,
        message_id=update.message_id,
        dedupe_key=event.dedupe_key,
        earlier_dedupe_key=earlier_key,
    )


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
        # zapgate's clock: health orders evidence by it, never by the provider's moment.
        received_at=event.received_at,
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


async def _payload_row(event: WebhookEvent, bodies: BodyStore | None) -> PayloadRow:
    body: bytes | None = None
    if event.body_base64 is not None:
        body = base64.b64decode(event.body_base64)
    elif event.body_object is not None and bodies is not None:
        try:
            body = await bodies.get(event.body_object)
        except LookupError:  # expired or lost: the row keeps raw and the name
            log.error("archive_body_missing", body_object=event.body_object)  # noqa: TRY400

    message_id = getattr(event, "message_id", None)
    event_name = _MESSAGE_EVENTS.get(event.kind)
    return PayloadRow(
        received_at=event.received_at,
        instance_id=event.instance_id,
        kind=event.kind.value,
        dedupe_key=event.dedupe_key,
        raw=event.raw,
        event=event.model_dump(mode="json", exclude={"raw", "body_base64"}),
        body=body,
        message_key=message_key(event_name, event.instance_id, message_id)
        if event_name is not None and message_id is not None
        else None,
    )


def _quarantine_row(item: WebhookQuarantined) -> QuarantineRow:
    return QuarantineRow(
        received_at=item.received_at,
        code=item.code.value,
        dedupe_key=item.dedupe_key,
        body=base64.b64decode(item.body_base64),
        content_type=item.content_type,
        instance_id=item.instance_id,
        event=item.event,
        message_id=item.message_id,
        size=item.size,
    )


def _unreadable_row(subject: str, data: bytes) -> QuarantineRow:
    key = body_dedupe_key("unreadable", data)
    return QuarantineRow(
        received_at=datetime.now(UTC),
        code=ARCHIVE_UNREADABLE,
        dedupe_key=key,
        body=data,
        content_type=bounded_id(subject, limit=200),
        size=len(data),
    )


async def count_webhooks(
    query: CountWebhooks, counter: WebhookCounter, clock: Clock
) -> WebhookCountsReply:
    """The counts of `query.instance_id` over `[now - window_s, now]` by `clock`, largest first
    (an instance ingest never saw gets an empty list: it may simply be quiet)."""
    until = clock.now()
    since = until - timedelta(seconds=query.window_s)
    rows = await counter.instance_counts(query.instance_id, since=since, until=until)
    counts = [
        WebhookCount(
            kind=row.kind,
            disposition=disposition_of(row.kind, row.code),
            code=row.code,
            count=row.count,
            last_received_at=row.last_received_at,
        )
        for row in rows
    ]
    counts.sort(key=lambda c: (-c.count, c.kind, c.code or ""))
    return WebhookCountsReply(
        ok=True, instance_id=query.instance_id, since=since, until=until, counts=counts
    )
