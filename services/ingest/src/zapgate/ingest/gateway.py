"""Accepting one webhook body: parse, route, make it durable, say what happened.

Durable means: JetStream acknowledged it, or (NATS down, publish failed or timed out) it is
fsynced in the local spool, from which it is drained later under the same `Nats-Msg-Id`. When
neither works the answer is `NOT_DURABLE` and the caller (W-API) should retry.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from zapgate.contracts import subjects
from zapgate.contracts.webhooks import QUARANTINE_KIND, WebhookErrorCode, WebhookQuarantined
from zapgate.ingest.routing import body_dedupe_key, route
from zapgate.ingest.spool import Spool, SpoolError, SpoolRecord

if TYPE_CHECKING:
    from datetime import datetime

    from zapgate.contracts.webhooks import WebhookEvent
    from zapgate.ingest.bus import Publisher

log = structlog.get_logger("zapgate.ingest.gateway")
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


def describe(event: WebhookEvent) -> dict[str, Any]:
    """The fields of the canonical log line for one webhook."""
    return {"kind": event.kind, "instance_id": event.instance_id, "dedupe_key": event.dedupe_key}
