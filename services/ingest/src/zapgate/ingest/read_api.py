"""Ingest's read API: one instance's archived webhooks of the last hour, per kind and disposition.

`zg.api.ingest.webhooks.counts` (queue group `ingest-api`), answered by `request_handler` over
the supervised connection: the console shows these counts without reading ingest's tables.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

from zapgate.contracts import subjects
from zapgate.contracts.webhooks import (
    CountWebhooks,
    WebhookCount,
    WebhookCountsReply,
    WebhookDisposition,
    WebhookKind,
)
from zapgate.runtime.requests import RequestServer, request_handler

if TYPE_CHECKING:
    from zapgate.ingest.ports import ArchivedCount, WebhookCounter
    from zapgate.runtime.clock import Clock
    from zapgate.runtime.connection import NatsConnection

QUEUE: Final = "ingest-api"


def disposition_of(row: ArchivedCount) -> WebhookDisposition:
    """Quarantine rows carry a code; payloads are routed unless their kind is `unrouted`."""
    if row.code is not None:
        return WebhookDisposition.QUARANTINED
    if row.kind == WebhookKind.UNROUTED:
        return WebhookDisposition.UNROUTED
    return WebhookDisposition.ROUTED


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
            disposition=disposition_of(row),
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


def webhook_counts_server(
    connection: NatsConnection, counter: WebhookCounter, clock: Clock
) -> RequestServer[WebhookCountsReply]:
    """The request server of the counts verb (start it once NATS is being supervised)."""

    async def call(query: CountWebhooks) -> WebhookCountsReply:
        return await count_webhooks(query, counter, clock)

    handler = request_handler(CountWebhooks, WebhookCountsReply, call, name="count_webhooks")
    return RequestServer(connection, subjects.API_INGEST_WEBHOOK_COUNTS, QUEUE, handler)
