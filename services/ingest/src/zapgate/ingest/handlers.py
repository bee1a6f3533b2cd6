"""Entry points: the webhook endpoint `POST /webhooks/{secret}` on plain Starlette (the hot path).

Per request: a constant-time secret check, a bounded body read, parse, route, one JetStream
publish awaited for its ack (or the spool). No database, no provider call, no consumer wait.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.contracts.errors import Problem
from zapgate.contracts.webhooks import WEBHOOK_MESSAGES_PT_BR, WebhookErrorCode
from zapgate.ingest.domain.size import QUARANTINE_PREFIX_BYTES
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
_DRAIN_BYTES: Final = 64 * 1024 * 1024  # read and dropped past the cap, for a clean 413


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


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    too_large: bool = False
    size: int | None = None


async def _read_body(request: Request, limit: int) -> _Body:
    """The body, or (over `limit`) its first `QUARANTINE_PREFIX_BYTES` and its size. The rest
    of an oversized body is read and dropped (up to 64 MiB more) so the sender gets the 413
    instead of a reset connection."""
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    chunks: list[bytes] = []
    read = 0
    stream = request.stream()
    async for chunk in stream:
        read += len(chunk)
        chunks.append(chunk)
        if read > limit:
            break
    else:
        return _Body(b"".join(chunks))
    prefix = b"".join(chunks)[:QUARANTINE_PREFIX_BYTES]
    chunks.clear()
    async for chunk in stream:
        read += len(chunk)
        if read > limit + _DRAIN_BYTES:
            break
    return _Body(prefix, too_large=True, size=size or read)


def webhook_routes(  # noqa: PLR0913 - collaborators and limits, limits keyword-only
    gateway: Gateway,
    secrets: SecretCheck,
    metrics: IngestMetrics,
    clock: Clock,
    *,
    max_body_bytes: int,
    body_read_timeout: float = 30.0,
) -> list[Route]:
    """The one route all six W-API webhook slots point at."""

    async def receive_webhook(request: Request) -> Response:
        if not secrets.matches(request.path_params["secret"]):
            metrics.outcomes.labels("unauthorized").inc()
            client = request.client.host if request.client else None
            log.warning("webhook_unauthorized", client=client, reason="unknown path secret")
            return problem_response(WebhookErrorCode.WEBHOOK_UNAUTHORIZED, 401)
        content_type = request.headers.get("content-type")
        try:
            async with asyncio.timeout(body_read_timeout):
                body = await _read_body(request, max_body_bytes)
        except TimeoutError:
            metrics.outcomes.labels("body_timeout").inc()
            metrics.connections_refused.labels("body_timeout").inc()
            log.warning(
                "webhook_body_timeout",
                timeout_s=body_read_timeout,
                reason="the body did not arrive in time",
            )
            response = problem_response(WebhookErrorCode.WEBHOOK_BODY_TIMEOUT, 408)
            response.headers["connection"] = "close"
            return response
        if body.too_large:
            await gateway.refuse_too_large(body.data, body.size, clock.now(), content_type)
            metrics.outcomes.labels("too_large").inc()
            response = problem_response(WebhookErrorCode.WEBHOOK_TOO_LARGE, 413)
            response.headers["connection"] = "close"
            return response
        accepted = await gateway.accept(body.data, clock.now(), content_type)
        return _answer(accepted, metrics, clock)

    return [Route(WEBHOOK_PATH, receive_webhook, methods=["POST"])]


def _answer(accepted: Accepted, metrics: IngestMetrics, clock: Clock) -> Response:
    metrics.outcomes.labels(accepted.disposition.value).inc()
    metrics.disposed(accepted.kind, accepted.disposition.value)
    for fix in accepted.fixes:
        metrics.sanitized.labels(fix.value).inc()
    disposition = accepted.disposition
    if disposition is Disposition.NOT_DURABLE:
        return problem_response(WebhookErrorCode.WEBHOOK_NOT_DURABLE, 503)
    if disposition is Disposition.TOO_LARGE:
        log.warning(
            "webhook_too_large",
            instance_id=accepted.instance_id,
            dedupe_key=accepted.dedupe_key,
            reason="typed event too big even without its oversized fields",
        )
        return problem_response(WebhookErrorCode.WEBHOOK_TOO_LARGE, 413)
    if disposition is Disposition.QUARANTINED and accepted.code is not None:
        log.warning(
            "webhook_quarantined",
            code=accepted.code.value,
            dedupe_key=accepted.dedupe_key,
            instance_id=accepted.instance_id,
        )
        return problem_response(accepted.code, 400)
    instance = metrics.instance_label(accepted.instance_id)
    metrics.webhooks.labels(instance, accepted.kind).inc()
    metrics.last_webhook.labels(instance).set(clock.now().timestamp())
    body: dict[str, Any] = {
        "ok": True,
        "kind": accepted.kind,
        "dedupe_key": accepted.dedupe_key,
        "disposition": disposition.value,
    }
    if accepted.fixes:
        body["sanitized"] = [fix.value for fix in accepted.fixes]
    log.debug("webhook_accepted", **body, instance_id=accepted.instance_id)
    return JSONResponse(body, status_code=200)
