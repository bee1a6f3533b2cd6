"""Ingest's read API: one instance's archived webhooks of the last hour, per kind and
disposition, over NATS request-reply (what the console's instance page shows)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa

from zapgate.contracts import subjects
from zapgate.contracts.webhooks import (
    CountWebhooks,
    WebhookCountsReply,
    WebhookDisposition,
    WebhookErrorCode,
)
from zapgate.ingest.adapters.counts import payload_counts_query, quarantine_counts_query
from zapgate.ingest.adapters.http_server import serve_in_loop
from zapgate.ingest.app import create_app
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.db import create_engine
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import SECRET

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.ingest.adapters.http_server import RunningServer
    from zapgate.ingest.settings import IngestSettings

pytestmark = pytest.mark.real

INSTANCE = "contagens-1"
OTHER = "contagens-2"


def body_of(payload: dict[str, Any], instance_id: str) -> bytes:
    return json.dumps({**payload, "instanceId": instance_id}).encode()


async def start(settings: IngestSettings, clock: ManualClock | None = None) -> RunningServer:
    """Ingest in this loop, once connected and its read API subscribed on the server."""
    server = await serve_in_loop(create_app(settings, clock=clock))
    async with asyncio.timeout(10):
        await server.runtime.connection.connected.wait()
    await server.runtime.connection.require().flush()
    return server


async def counts(nc: Client, instance_id: str, **query: Any) -> WebhookCountsReply:
    request = CountWebhooks(instance_id=instance_id, **query)
    answer = await nc.request(
        subjects.API_INGEST_WEBHOOK_COUNTS, request.model_dump_json().encode(), timeout=10
    )
    return WebhookCountsReply.model_validate_json(answer.data)


async def test_counts_per_kind_and_disposition_over_the_last_hour(
    ingest_settings: IngestSettings, nc: Client
) -> None:
    """Routed kinds, the unrouted one and the quarantine are counted for the instance asked
    about only; a body posted twice counts once; an hour later the window is empty."""
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    server = await start(ingest_settings, clock)
    try:
        bodies = [
            body_of(samples.received_text("3EB0CNT1"), INSTANCE),
            body_of(samples.received_text("3EB0CNT2"), INSTANCE),
            body_of(samples.received_text("3EB0CNT2"), INSTANCE),  # the provider's resend
            body_of(samples.status("3EB0CNT3", "READ"), INSTANCE),
            body_of(samples.unknown_event(), INSTANCE),
            b'{"instanceId": "' + INSTANCE.encode() + b'", "event": "webhookReceived", ',
            body_of(samples.received_text("3EB0CNT4"), OTHER),
        ]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            statuses = [
                (
                    await http.post(
                        f"/webhooks/{SECRET}",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                ).status_code
                for body in bodies
            ]
        # The quarantined body is answered 400 (kept, never retried); the rest 200.
        assert statuses == [200, 200, 200, 200, 200, 400, 200]
        assert server.runtime.archiver is not None
        await server.runtime.archiver.wait_archived(6, timeout=20)

        now = clock.now()
        reply = await counts(nc, INSTANCE)
        clock.advance(timedelta(minutes=61))
        an_hour_later = await counts(nc, INSTANCE)
        unknown = await counts(nc, "nunca-visto")
    finally:
        await server.stop()

    assert reply.ok, reply.error
    assert (reply.since, reply.until) == (now - timedelta(hours=1), now)
    assert [(c.kind, c.disposition, c.code, c.count) for c in reply.counts] == [
        ("message_received", WebhookDisposition.ROUTED, None, 2),
        ("message_status", WebhookDisposition.ROUTED, None, 1),
        ("quarantined", WebhookDisposition.QUARANTINED, WebhookErrorCode.WEBHOOK_NOT_JSON, 1),
        ("unrouted", WebhookDisposition.UNROUTED, None, 1),
    ]
    assert all(c.last_received_at == now for c in reply.counts)
    assert an_hour_later.ok
    assert an_hour_later.counts == []
    assert (unknown.ok, unknown.counts) == (True, [])


async def test_a_request_outside_its_bounds_gets_invalid_command(
    ingest_settings: IngestSettings, nc: Client
) -> None:
    """More than an hour, or an id that is no instance id, is refused with a coded pt-BR
    answer (never a timeout)."""
    server = await start(ingest_settings)
    try:
        too_long = await nc.request(
            subjects.API_INGEST_WEBHOOK_COUNTS,
            json.dumps({"instance_id": INSTANCE, "window_s": 86_400}).encode(),
            timeout=10,
        )
        bad_id = await nc.request(
            subjects.API_INGEST_WEBHOOK_COUNTS, b'{"instance_id": "a.b*"}', timeout=10
        )
    finally:
        await server.stop()
    for answer in (too_long, bad_id):
        reply = WebhookCountsReply.model_validate_json(answer.data)
        assert not reply.ok
        assert reply.error is not None
        assert reply.error.code == "INVALID_COMMAND"


async def test_both_counts_are_index_range_scans(database_url: str) -> None:
    """With sequential scans priced out, both reads are index range scans (by instance and
    receipt time): a busy archive costs one instance's hour, never the whole table."""
    until = datetime.now(UTC)
    since = until - timedelta(hours=1)
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            plans = []
            for query in (
                payload_counts_query(INSTANCE, since, until),
                quarantine_counts_query(INSTANCE, since, until),
            ):
                compiled = query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
                rows = await conn.execute(sa.text(f"EXPLAIN {compiled}"))
                plans.append("\n".join(row[0] for row in rows))
    finally:
        await engine.dispose()
    for plan in plans:
        assert "Seq Scan" not in plan, plan
        assert "Index Cond" in plan, plan  # a range of an index, not a walk over all of it
