"""Entry points: the webhook endpoint `POST /webhooks/{secret}` on plain Starlette (the hot
path), the archiver's consumer handler (off it), and the read API's verb
`zg.api.ingest.webhooks.counts` (queue group `ingest-api`: the console shows these counts
without reading ingest's tables).

Per request: a constant-time secret check, a bounded body read, parse, route, one JetStream
publish awaited for its ack (or the spool). No database, no provider call, no consumer wait.
The archiver (`WebhookArchiver`) takes ZG_WEBHOOKS deliveries from the runtime's pull consumer
and stores them in batches with `service.archive_batch`.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.contracts import subjects
from zapgate.contracts.errors import Problem
from zapgate.contracts.webhooks import (
    WEBHOOK_MESSAGES_PT_BR,
    CountWebhooks,
    WebhookCountsReply,
    WebhookErrorCode,
)
from zapgate.ingest.domain.size import QUARANTINE_PREFIX_BYTES
from zapgate.ingest.service import Accepted, Disposition, count_webhooks
from zapgate.runtime.consumer import DEPENDENCY_ERRORS, MessageFailure
from zapgate.runtime.requests import RequestServer, request_handler
from zapgate.runtime.topology import queue_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from pydantic import SecretStr
    from starlette.types import Receive, Scope, Send

    from zapgate.ingest.adapters.metrics import IngestMetrics
    from zapgate.ingest.ports import WebhookCounter
    from zapgate.ingest.service import Gateway
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.connection import NatsConnection
    from zapgate.runtime.consumer import Delivery

log = structlog.get_logger("zapgate.ingest.http")
WEBHOOK_PATH: Final = "/webhooks/{secret}"
_WEBHOOK_PREFIX: Final = "/webhooks/"
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
    body_read_timeout: timedelta = timedelta(seconds=30),
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
            async with asyncio.timeout(body_read_timeout.total_seconds()):
                body = await _read_body(request, max_body_bytes)
        except TimeoutError:
            metrics.outcomes.labels("body_timeout").inc()
            metrics.connections_refused.labels("body_timeout").inc()
            log.warning(
                "webhook_body_timeout",
                timeout_s=body_read_timeout.total_seconds(),
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


class IngestApp(Starlette):
    """Starlette with a direct way in for `POST /webhooks/{secret}` (the hot path).

    That request goes straight to the webhook route's endpoint: Starlette's router, exception
    middlewares and per-request wrappers cost about a sixth of the gateway's CPU per webhook
    and do nothing for it (its endpoint answers every case itself; an exception still becomes
    uvicorn's 500). Everything else (other methods and paths, lifespan) takes Starlette's way.
    """

    def __init__(self, *, routes: Sequence[Route], **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(routes=routes, **kwargs)
        endpoint = next(route.endpoint for route in routes if route.path == WEBHOOK_PATH)
        self._webhook: Callable[[Request], Awaitable[Response]] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            secret = path[len(_WEBHOOK_PREFIX) :]
            if path.startswith(_WEBHOOK_PREFIX) and secret and "/" not in secret:
                scope["app"] = self
                scope["path_params"] = {"secret": secret}
                response = await self._webhook(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _answer(accepted: Accepted, metrics: IngestMetrics, clock: Clock) -> Response:
    metrics.outcome(accepted.disposition.value)
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
    metrics.accepted(accepted.instance_id, accepted.kind, clock.now().timestamp())
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


# --- the archiver: ZG_WEBHOOKS -> `service.archive_batch` (off the request path) ------------


class WebhookArchiver:
    """The batch handler of the archiver's pull consumer (`topology.INGEST_ARCHIVER` on the
    runtime's `BatchPullConsumer`).

    The deliveries of one fetch are archived together: one `archive` call (one transaction) per
    `max_batch` of them. A call that fails with a dependency error (database or NATS down) fails
    every delivery in it (nak'ed, never counted); any other failure splits the batch and
    archives one by one, so only the message that cannot be archived fails, as
    `archive_failed` (counted; dead-lettered after the spec's `max_failures`).

    `archived` counts distinct stream sequences stored (a redelivery of a stored message,
    e.g. after its ack wait ran out, is not counted twice).
    """

    _REMEMBERED: Final = 100_000  # sequences kept to recognise a redelivery of a stored one

    def __init__(
        self,
        archive: Callable[[Sequence[tuple[str, bytes]]], Awaitable[int]],
        *,
        max_batch: int,
        dependency_errors: tuple[type[BaseException], ...] = DEPENDENCY_ERRORS,
    ) -> None:
        self._archive = archive
        self._max_batch = max_batch
        self._dependency_errors = dependency_errors
        self._stored: dict[tuple[str, int], None] = {}
        self._progress = asyncio.Condition()
        self.archived = 0

    async def __call__(self, items: Sequence[tuple[bytes, Delivery]]) -> list[Exception | None]:
        """Archive `items` ((data, delivery), data being the delivery's bytes); one result per
        item, in order: None when stored, else what stands for its outcome (a dependency error,
        or `MessageFailure("archive_failed")`)."""
        deliveries = [delivery for _, delivery in items]
        results: list[Exception | None] = []
        for start in range(0, len(deliveries), self._max_batch):
            results += await self._store(deliveries[start : start + self._max_batch])
        await self._count([d for d, r in zip(deliveries, results, strict=True) if r is None])
        return results

    async def wait_archived(self, count: int, timeout: float) -> None:
        """Return once `count` distinct messages were stored (tests, the replay CLI)."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.archived >= count)

    async def _store(self, batch: list[Delivery]) -> list[Exception | None]:
        try:
            await self._archive([(delivery.subject, delivery.data) for delivery in batch])
        except self._dependency_errors as error:
            log.warning("archive_batch_failed", size=len(batch), reason=_describe(error))
            if not isinstance(error, Exception):
                raise
            return [error] * len(batch)
        except Exception as error:  # noqa: BLE001 - one message may be the cause: find it
            if len(batch) == 1:
                log.warning(
                    "archive_message_failed",
                    stream_seq=batch[0].sequence,
                    reason=_describe(error),
                )
                return [MessageFailure("archive_failed", _describe(error))]
            log.warning("archive_batch_split", size=len(batch), reason=_describe(error))
            results: list[Exception | None] = []
            for delivery in batch:
                results += await self._store([delivery])
            return results
        return [None] * len(batch)

    async def _count(self, deliveries: list[Delivery]) -> None:
        new = 0
        for delivery in deliveries:
            key = (delivery.stream, delivery.sequence)
            if key in self._stored:
                continue
            self._stored[key] = None
            new += 1
            if len(self._stored) > self._REMEMBERED:
                del self._stored[next(iter(self._stored))]
        if new:
            async with self._progress:
                self.archived += new
                self._progress.notify_all()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1000]


# --- the read API: `zg.api.ingest.webhooks.counts` -> `service.count_webhooks` ---------------

API_QUEUE: Final = queue_of("ingest")


def webhook_counts_server(
    connection: NatsConnection, counter: WebhookCounter, clock: Clock
) -> RequestServer[WebhookCountsReply]:
    """The request server of the counts verb (start it once NATS is being supervised)."""

    async def call(query: CountWebhooks) -> WebhookCountsReply:
        return await count_webhooks(query, counter, clock)

    handler = request_handler(CountWebhooks, WebhookCountsReply, call, name="count_webhooks")
    return RequestServer(connection, subjects.API_INGEST_WEBHOOK_COUNTS, API_QUEUE, handler)
