"""The webhook endpoint: `POST /webhooks/{secret}` on plain Starlette (the hot path).

Per request: a constant-time secret check, a bounded body read, parse, route, one JetStream
publish awaited for its ack (or the spool). No database, no provider call, no consumer wait.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import TYPE_CHECKING, Any, Final

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.contracts.errors import Problem
from zapgate.contracts.webhooks import WEBHOOK_MESSAGES_PT_BR, WebhookErrorCode
from zapgate.ingest.gateway import Accepted, Disposition

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr
    from starlette.requests import Request

    from zapgate.ingest.gateway import Gateway
    from zapgate.runtime.clock import Clock

log = structlog.get_logger("zapgate.ingest.http")
WEBHOOK_PATH: Final = "/webhooks/{secret}"
_SECRET_IN_PATH: Final = re.compile(r"(/webhooks/)[^/?\s\"]+")
MASK: Final = "***"


def mask_secret(text: str) -> str:
    """`/webhooks/<secret>` becomes `/webhooks/***`, wherever it appears in `text`."""
    return _SECRET_IN_PATH.sub(rf"\g<1>{MASK}", text)


class SecretMaskingFilter(logging.Filter):
    """Masks the path secret in every record (uvicorn's access log prints the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_secret(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_secret(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install_secret_masking() -> SecretMaskingFilter:
    """Attach the filter to uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, SecretMaskingFilter) for existing in logger.filters):
            logger.addFilter(SecretMaskingFilter())
    return SecretMaskingFilter()


class SecretCheck:
    """Constant-time comparison against every valid secret (rotation keeps several)."""

    def __init__(self, secrets: Sequence[SecretStr]) -> None:
        self._secrets = [secret.get_secret_value().encode() for secret in secrets]

    def matches(self, presented: str) -> bool:
        candidate = presented.encode()
        found = False
        for secret in self._secrets:
            # No early exit: the time taken does not tell which secret (or whether any) matched.
            found |= hmac.compare_digest(candidate, secret)
        return found


class IngestMetrics:
    """Per-instance counts per kind, last webhook time, outcomes and the spool depth."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "zapgate_ingest_webhooks",
            "Webhooks accepted, by instance and routed kind",
            ["instance_id", "kind"],
            registry=registry,
        )
        self.last_webhook = Gauge(
            "zapgate_ingest_last_webhook_timestamp_seconds",
            "Unix time of the last accepted webhook, by instance",
            ["instance_id"],
            registry=registry,
        )
        self.outcomes = Counter(
            "zapgate_ingest_requests",
            "Webhook requests by outcome (published, duplicate, spooled, quarantined, refusals)",
            ["outcome"],
            registry=registry,
        )
        self.spool_pending = Gauge(
            "zapgate_ingest_spool_pending", "Webhooks in the local spool", registry=registry
        )


def problem_response(code: WebhookErrorCode, status: int) -> JSONResponse:
    problem = Problem(code=code.value, message=WEBHOOK_MESSAGES_PT_BR[code])
    return JSONResponse(problem.model_dump(mode="json", exclude_none=True), status_code=status)


class _TooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_routes(
    gateway: Gateway,
    secrets: SecretCheck,
    metrics: IngestMetrics,
    clock: Clock,
    *,
    max_body_bytes: int,
) -> list[Route]:
    """The one route all six W-API webhook slots point at."""

    async def receive_webhook(request: Request) -> Response:
        if not secrets.matches(request.path_params["secret"]):
            metrics.outcomes.labels("unauthorized").inc()
            client = request.client.host if request.client else None
            log.warning("webhook_unauthorized", client=client, reason="unknown path secret")
            return problem_response(WebhookErrorCode.WEBHOOK_UNAUTHORIZED, 401)
        try:
            body = await _read_body(request, max_body_bytes)
        except _TooLargeError:
            metrics.outcomes.labels("too_large").inc()
            log.warning("webhook_too_large", limit=max_body_bytes, reason="body over the limit")
            return problem_response(WebhookErrorCode.WEBHOOK_TOO_LARGE, 413)
        accepted = await gateway.accept(body, clock.now(), request.headers.get("content-type"))
        return _answer(accepted, metrics, clock)

    return [Route(WEBHOOK_PATH, receive_webhook, methods=["POST"])]


def _answer(accepted: Accepted, metrics: IngestMetrics, clock: Clock) -> Response:
    metrics.outcomes.labels(accepted.disposition.value).inc()
    disposition = accepted.disposition
    if disposition is Disposition.NOT_DURABLE:
        return problem_response(WebhookErrorCode.WEBHOOK_NOT_DURABLE, 503)
    if disposition is Disposition.TOO_LARGE:
        log.warning("webhook_too_large", dedupe_key=accepted.dedupe_key, reason="event too big")
        return problem_response(WebhookErrorCode.WEBHOOK_TOO_LARGE, 413)
    if disposition is Disposition.QUARANTINED and accepted.code is not None:
        log.warning("webhook_quarantined", code=accepted.code.value, dedupe_key=accepted.dedupe_key)
        return problem_response(accepted.code, 400)
    instance = accepted.instance_id or ""
    metrics.webhooks.labels(instance, accepted.kind).inc()
    metrics.last_webhook.labels(instance).set(clock.now().timestamp())
    body: dict[str, Any] = {
        "ok": True,
        "kind": accepted.kind,
        "dedupe_key": accepted.dedupe_key,
        "disposition": disposition.value,
    }
    log.debug("webhook_accepted", **body, instance_id=accepted.instance_id)
    return JSONResponse(body, status_code=200)
