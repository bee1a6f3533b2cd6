"""Webhooks over real HTTP into a real nats-server and a real PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from zapgate.contracts.webhooks import WebhookKind
from zapgate.ingest.domain.routing import route
from zapgate.runtime.clock import SystemClock
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import OLD_SECRET, SECRET, query, stream_count, stream_messages

if TYPE_CHECKING:
    import httpx
    from nats.aio.client import Client

    from zapgate.ingest.adapters.http_server import RunningServer

pytestmark = pytest.mark.real

URL = f"/webhooks/{SECRET}"


async def post_json(http: httpx.AsyncClient, body: Any, url: str = URL) -> httpx.Response:
    return await http.post(
        url, content=json.dumps(body), headers={"content-type": "application/json"}
    )


async def test_every_shape_is_published_once_and_archived_with_its_kind(
    ingest: RunningServer, http: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """Each W-API shape: 200, one stream message on its kind's subject, one row with raw body."""
    shapes = samples.every_shape()
    now = SystemClock().now()
    expected = {name: route(body, now) for name, body in shapes.items()}
    for body in shapes.values():
        response = await post_json(http, body)
        assert response.status_code == 200, response.text
        assert response.json()["disposition"] == "published"
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(len(shapes), timeout=20)

    messages = await stream_messages(nc)
    assert len(messages) == len(shapes)
    by_key = {json.loads(m.data)["dedupe_key"]: m for m in messages}
    for name, event in expected.items():
        message = by_key[event.dedupe_key]
        assert message.subject == f"zg.webhook.{event.kind}", name
        assert (message.headers or {})["Nats-Msg-Id"] == event.dedupe_key
        assert json.loads(message.data)["raw"] == shapes[name]

    rows = await query(
        database_url, "SELECT kind, dedupe_key, raw, instance_id FROM webhook_payloads"
    )
    assert len(rows) == len(shapes)
    stored = {row.dedupe_key: row for row in rows}
    for name, event in expected.items():
        assert stored[event.dedupe_key].kind == event.kind.value, name
        assert stored[event.dedupe_key].raw == shapes[name]
    kinds = Counter(row.kind for row in rows)
    assert set(kinds) == {kind.value for kind in WebhookKind}


async def test_the_same_webhook_twice_is_one_message_and_one_row(
    ingest: RunningServer, http: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """The provider's resend: the second answer says duplicate; nothing is stored twice."""
    first = await post_json(http, samples.status(word="READ"))
    second = await post_json(http, samples.status(word="READ"))
    assert first.json()["disposition"] == "published"
    assert second.json()["disposition"] == "duplicate"
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(1, timeout=10)
    assert await stream_count(nc) == 1
    rows = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
    assert rows[0].n == 1


async def test_both_current_and_previous_secrets_are_accepted(
    http: httpx.AsyncClient, nc: Client
) -> None:
    """Rotation: every configured secret opens the door."""
    assert (
        await post_json(http, samples.received_text("A"), f"/webhooks/{SECRET}")
    ).status_code == 200
    response = await post_json(http, samples.received_text("B"), f"/webhooks/{OLD_SECRET}")
    assert response.status_code == 200
    assert await stream_count(nc) == 2


async def test_wrong_secret_is_401_stores_nothing_and_never_logs_the_secret(
    http: httpx.AsyncClient, nc: Client
) -> None:
    """401 with a code, nothing published, a warning without the presented secret."""
    wrong = "not-the-secret-42"
    with capture_logs() as logs:
        response = await post_json(http, samples.received_text(), f"/webhooks/{wrong}")
    assert response.status_code == 401
    assert response.json()["code"] == "WEBHOOK_UNAUTHORIZED"
    assert "inválido" in response.json()["message"]
    assert await stream_count(nc) == 0
    assert any(entry["event"] == "webhook_unauthorized" for entry in logs)
    assert wrong not in repr(logs)


async def test_access_log_masks_the_secret_in_the_path(http: httpx.AsyncClient) -> None:
    """uvicorn's access line shows /webhooks/***, never the secret."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    handler, level = Keep(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        await post_json(http, samples.received_text())
        await post_json(http, samples.received_text(), f"/webhooks/{OLD_SECRET}")
        await post_json(http, samples.received_text(), "/webhooks/wrong-guess-1")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert len(lines) == 3
    assert all("/webhooks/***" in line for line in lines)
    assert not any(
        SECRET in line or OLD_SECRET in line or "wrong-guess-1" in line for line in lines
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"this is not json", "WEBHOOK_NOT_JSON"),
        (b'{"truncated": ', "WEBHOOK_NOT_JSON"),
        (b"\xff\xfe\x00garbage", "WEBHOOK_NOT_JSON"),
        (b"[1, 2, 3]", "WEBHOOK_NOT_OBJECT"),
        (b'"just a string"', "WEBHOOK_NOT_OBJECT"),
        (b"", "WEBHOOK_NOT_JSON"),
    ],
)
async def test_non_json_and_non_object_bodies_are_400_and_quarantined(  # noqa: PLR0913, PLR0917 - fixtures plus parameters
    ingest: RunningServer,
    http: httpx.AsyncClient,
    nc: Client,
    database_url: str,
    body: bytes,
    code: str,
) -> None:
    """400 with the machine code; the exact bytes are kept in the durable quarantine."""
    response = await http.post(URL, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert "quarentena" in response.json()["message"]
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(1, timeout=10)
    (message,) = await stream_messages(nc)
    assert message.subject == "zg.webhook.quarantined"
    rows = await query(database_url, "SELECT code, body, content_type FROM webhook_quarantine")
    assert [(row.code, bytes(row.body), row.content_type) for row in rows] == [
        (code, body, "text/plain")
    ]


async def test_deeply_nested_json_never_makes_a_500(http: httpx.AsyncClient) -> None:
    """A body nested past the parser's recursion limit is quarantined, not a crash."""
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    response = await http.post(URL, content=body[: 1024 * 1024])
    assert response.status_code in {400, 413}


async def test_payload_without_instance_id_is_kept_as_unrouted(
    ingest: RunningServer, http: httpx.AsyncClient, database_url: str
) -> None:
    """No instanceId: 200, published as unrouted, stored with its keys."""
    response = await post_json(http, samples.without_instance())
    assert response.status_code == 200
    assert response.json()["kind"] == "unrouted"
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(1, timeout=10)
    rows = await query(database_url, "SELECT kind, instance_id, event FROM webhook_payloads")
    assert [(row.kind, row.instance_id) for row in rows] == [("unrouted", None)]
    assert rows[0].event["keys"] == ["event", "messageId", "moment"]


async def test_nul_characters_in_ids_and_values_are_replaced_and_the_bytes_kept(
    ingest: RunningServer, http: httpx.AsyncClient, database_url: str
) -> None:
    """PostgreSQL text and JSONB refuse NUL: the sanitiser writes U+FFFD, the body column keeps
    the exact bytes, the batch goes in."""
    body = samples.received_text("NUL\u0000ID") | {"instanceId": "inst\u0000x"}
    body["msgContent"] = {"conversation": "oi\u0000"}
    response = await post_json(http, body)
    assert response.status_code == 200, response.text
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(1, timeout=10)
    rows = await query(database_url, "SELECT instance_id, raw, event, body FROM webhook_payloads")
    assert [row.instance_id for row in rows] == ["inst\ufffdx"]
    assert rows[0].raw["messageId"] == "NUL\ufffdID"
    assert rows[0].event["sanitized"] == ["nul_character"]
    assert json.loads(bytes(rows[0].body)) == body


async def test_metrics_count_per_instance_and_kind(
    ingest: RunningServer, http: httpx.AsyncClient
) -> None:
    """/metrics on the probe port shows counts per instance and kind and the last time."""
    await post_json(http, samples.received_text("M1"))
    await post_json(http, samples.received_text("M2"))
    await post_json(http, samples.status())
    import httpx as httpx_module  # noqa: PLC0415 - the fixture's client is bound to the app port

    async with httpx_module.AsyncClient(
        base_url=f"http://127.0.0.1:{ingest.runtime.probe_port}", timeout=5
    ) as probes:
        metrics = (await probes.get("/metrics")).text
        ready = await probes.get("/readyz")
        alive = await probes.get("/healthz")
    labels = f'instance_id="{samples.INSTANCE}",kind="message_received"'
    line = f"zapgate_ingest_webhooks_total{{{labels}}} 2.0"
    assert line in metrics
    assert 'kind="message_status"} 1.0' in metrics
    assert "zapgate_ingest_last_webhook_timestamp_seconds" in metrics
    assert ready.status_code == 200, ready.text
    assert alive.status_code == 200
