"""Entry points: the webhook endpoint `POST /webhooks/{secret}` on plain Starlette (the hot path).

Per request: a constant-time secret check, a bounded body read, parse, route, one JetStream
publish awaited for its ack (or the spool). No database, no provider call, no consumer wait.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.contracts.errors import Problem
from zapgate.contracts.webhooks import WEBHOOK_MESSAGES_PT_BR, WebhookErrorCode
from zapgate.ingest.service import Accepted, Disposition

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr
    from starlette.requests import Request

    from zapgate.ingest.adapters.metrics import IngestMetrics
    from zapgate.ingest.service import Gateway
    from zapgate.runtime.clock import Clock

log = structlog.get_logger("zapgate.ingest.http")
WEBHOOK_PATH: Final = "/webhooks/{secret}"


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
