"""The ingest issue's failing inputs (a-j) and the rest of their kinds, over real HTTP, a real
nats-server and a real PostgreSQL: each answered 2xx or a coded 4xx, kept once, never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
from structlog.testing import capture_logs

from zapgate.contracts import subjects
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import SECRET, make_settings, query, start_ingest, stream_messages

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client

    from zapgate.ingest.adapters.http_server import RunningServer

pytestmark = pytest.mark.real

URL = f"/webhooks/{SECRET}"
NOW = 1_764_500_000


@pytest.fixture
async def hostile(nats_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Ingest with small limits so the limits themselves can be tested quickly."""
    settings = make_settings(
        nats_url,
        database_url,
        tmp_path / "spool",
        max_body_bytes=4 * 1024 * 1024,
        body_read_timeout=timedelta(milliseconds=500),
        header_read_timeout=timedelta(milliseconds=500),
        max_connections=64,
        metrics_max_instances=20,
    )
    server = await start_ingest(settings)
    yield server
    await server.stop()


@pytest.fixture
async def client(hostile: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hostile.url, timeout=20) as http:
        yield http


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_url)
    yield connection
    await connection.close()


async def post(http: httpx.AsyncClient, body: bytes, content_type: str = "application/json") -> Any:
    return await http.post(URL, content=body, headers={"content-type": content_type})


async def archived(server: RunningServer, count: int) -> None:
    assert server.runtime.archiver is not None
    await server.runtime.archiver.wait_archived(count, timeout=30)


async def test_a_lone_surrogates_are_answered_200_and_archived_with_the_exact_bytes(
    hostile: RunningServer, client: httpx.AsyncClient, database_url: str
) -> None:
    """`{"x":"\\ud83d"}` and a text ending in half an emoji: kept, typed, archived."""
    bodies = [samples.case("lone-surrogate-min", NOW), samples.case("lone-surrogate-text", NOW)]
    answers = [await post(client, body) for body in bodies]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer.json()["sanitized"] for answer in answers] == [["lone_surrogate"]] * 2
    await archived(hostile, 2)
    rows = await query(database_url, "SELECT kind, raw, body FROM webhook_payloads ORDER BY id")
    assert [row.kind for row in rows] == ["unrouted", "message_received"]
    assert [bytes(row.body) for row in rows] == bodies
    assert rows[1].raw["msgContent"]["conversation"] == "obrigado \ufffd"


async def test_b_nesting_of_every_depth_is_published_and_archived_or_quarantined(
    hostile: RunningServer, client: httpx.AsyncClient, database_url: str
) -> None:
    """300 levels (the case), 200-254 and ~995: 200 and archived; past the parser: coded 400."""
    deep = '{"event":"webhookReceived","instanceId":"demo","messageId":"D%d","msgContent":%s}'
    bodies = [samples.case("nesting-300", NOW)] + [
        (deep % (levels, '{"a":' * levels + "1" + "}" * levels)).encode()
        for levels in (200, 254, 255, 995)
    ]
    answers = [await post(client, body) for body in bodies]
    assert [answer.status_code for answer in answers] == [200] * 5
    too_deep = await post(client, b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    assert too_deep.status_code == 400
    assert too_deep.json()["code"] == "WEBHOOK_TOO_DEEP"
    await archived(hostile, 6)
    payloads = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
    kept = await query(database_url, "SELECT code FROM webhook_quarantine")
    assert payloads[0].n == 5
    assert [row.code for row in kept] == ["WEBHOOK_TOO_DEEP"]


async def test_c_a_moment_of_ten_to_the_400_on_routed_and_unrouted_events_is_kept(
    hostile: RunningServer, client: httpx.AsyncClient, database_url: str
) -> None:
    """No float overflow: the status is routed with no moment, the digits kept."""
    status = samples.case("moment-10e400", NOW)
    unrouted = b'{"instanceId":"demo","moment":1' + b"0" * 400 + b"}"
    answers = [await post(client, body) for body in (status, unrouted)]
    assert [(a.status_code, a.json()["kind"]) for a in answers] == [
        (200, "message_status"),
        (200, "unrouted"),
    ]
    await archived(hostile, 2)
    rows = await query(database_url, "SELECT event FROM webhook_payloads ORDER BY id")
    assert [row.event["moment"] for row in rows] == [None, None]
    assert [row.event["sanitized"] for row in rows] == [["number_out_of_range"]] * 2


async def test_d_a_1_5_mb_image_is_kept_whole_and_its_message_published(
    hostile: RunningServer, client: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """Object Store holds the body; the event names sender, caption and id; the archive has
    the exact bytes."""
    body = samples.media_base64_body(NOW)
    answer = await post(client, body)
    assert answer.status_code == 200, answer.text
    (message,) = await stream_messages(nc)
    event = json.loads(message.data)
    assert event["content"]["caption"] == "comprovante do pagamento"
    assert event["sender"]["push_name"] == "Cliente Foto"
    assert event["omitted_fields"] == ["msgContent.imageMessage.base64"]
    stored = await (await nc.jetstream().object_store("ZG_WEBHOOK_BODIES")).get(
        event["body_object"]
    )
    assert stored.data == body
    await archived(hostile, 1)
    (row,) = await query(database_url, "SELECT body FROM webhook_payloads")
    assert bytes(row.body) == body


async def test_d_above_the_cap_a_413_and_a_quarantine_entry_naming_the_instance(
    hostile: RunningServer, client: httpx.AsyncClient, database_url: str
) -> None:
    """A body over the configured cap: refused, with instance, event and messageId kept and
    logged."""
    body = samples.media_base64_body(NOW, base64_chars=5 * 1024 * 1024)
    with capture_logs() as logs:
        answer = await post(client, body)
    assert answer.status_code == 413
    assert answer.json()["code"] == "WEBHOOK_TOO_LARGE"
    assert any(
        line["event"] == "webhook_too_large" and line.get("instance_id") == "demo" for line in logs
    )
    await archived(hostile, 1)
    (row,) = await query(
        database_url, "SELECT code, instance_id, event, message_id, size FROM webhook_quarantine"
    )
    assert (row.code, row.instance_id, row.event, row.message_id) == (
        "WEBHOOK_TOO_LARGE",
        "demo",
        "webhookReceived",
        "3EB0BR03000000000000A3",
    )
    assert row.size == len(body)


async def test_e_a_5000_character_instance_id_never_cuts_ingest_off_nats(
    hostile: RunningServer, client: httpx.AsyncClient, nc: Client
) -> None:
    """Its proof of life goes out on a bounded subject; the next 60 webhooks are published,
    none spooled; the connection is the same, still up."""
    answer = await post(client, samples.case("long-instance-id-5000", NOW))
    assert answer.status_code == 200
    await archived(hostile, 1)
    dispositions = []
    for number in range(60):
        body = json.dumps(samples.received_text(f"AFTER{number}")).encode()
        dispositions.append((await post(client, body)).json()["disposition"])
    assert set(dispositions) == {"published"}
    proofs = [subject for subject in await stream_proofs(nc) if "LITE-" in subject]
    assert len(proofs) == 1
    token = proofs[0].rsplit(".", 1)[-1]
    assert len(token) <= 64
    assert "~" in token
    client_conn = hostile.runtime.connection.client
    assert client_conn is not None
    assert client_conn.is_connected


async def test_e_after_the_server_closes_ingests_connection_publishing_resumes(
    hostile: RunningServer, client: httpx.AsyncClient
) -> None:
    """A protocol error makes the server close the connection and nats-py give up on it; the
    runtime's connection replaces the client and webhooks are published again, no restart."""
    connection = hostile.runtime.connection
    connects = connection.connects
    await connection.require().publish("x" * 5000, b"over the control line")
    await connection.wait_for_connects(connects + 1, timeout=20)
    body = json.dumps(samples.received_text("AFTER-CLOSE")).encode()
    answer = await post(client, body)
    assert answer.json()["disposition"] in {"published", "spooled"}
    await hostile.runtime.wait_spool_empty(timeout=20)
    assert connection.replacements >= 1
    again = await post(client, json.dumps(samples.received_text("AFTER-CLOSE-2")).encode())
    assert again.json()["disposition"] == "published"


async def stream_proofs(nc: Client) -> list[str]:
    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM_HEALTH)
    subscription = await js.subscribe(
        subjects.PROOF_OF_LIFE_ALL, stream=subjects.STREAM_HEALTH, ordered_consumer=True
    )
    try:
        return [
            (await subscription.next_msg(timeout=5)).subject for _ in range(info.state.messages)
        ]
    finally:
        await subscription.unsubscribe()


async def test_f_new_long_instance_ids_never_grow_metrics_without_bound(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """200 webhooks, each with a new 200 kB instanceId: /metrics stays small (the archive is
    off here: this is about the request path)."""
    settings = make_settings(
        nats_url, database_url, tmp_path / "spool", metrics_max_instances=20, archiver_enabled=False
    )
    server = await start_ingest(settings)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            for number in range(200):
                body = samples.received_text(f"F{number}")
                body["instanceId"] = f"{number}-" + "I" * 200_000
                assert (await post(http, json.dumps(body).encode())).status_code == 200
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.runtime.probe_port}", timeout=10
        ) as probes:
            metrics = (await probes.get("/metrics")).text
    finally:
        await server.stop()
    assert len(metrics) < 64 * 1024
    assert 'instance_id="_other"' in metrics
    assert all(len(line) < 400 for line in metrics.splitlines())


async def test_g_the_real_text_after_a_placeholder_is_kept_and_published_as_an_update(
    hostile: RunningServer, client: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """Same messageId, other content: kept, and the archive publishes a content update;
    the same body again is a duplicate."""
    first = await post(client, samples.case("placeholder-then-real-1", NOW))
    second = await post(client, samples.case("placeholder-then-real-2", NOW))
    again = await post(client, samples.case("placeholder-then-real-2", NOW))
    assert [a.json()["disposition"] for a in (first, second, again)] == [
        "published",
        "published",
        "duplicate",
    ]
    await archived(hostile, 3)  # two webhooks, then the content update
    updates = await stream_messages(nc, subjects.webhook_subject("message_changed"))
    (update,) = [json.loads(message.data) for message in updates]
    assert update["change"] == "content_update"
    assert update["target_message_id"] == "3EB0BR08000000000000A8"
    assert update["content"]["text"] == "o boleto venceu, podem reenviar?"
    rows = await query(database_url, "SELECT kind FROM webhook_payloads ORDER BY id")
    assert [row.kind for row in rows] == ["message_received", "message_received"]


async def test_g_a_copy_after_the_duplicate_window_is_recognised_when_archived(
    hostile: RunningServer, client: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """JetStream's window has passed (simulated: another Nats-Msg-Id); the archive's key
    still stores one row."""
    answer = await post(client, samples.case("placeholder-then-real-2", NOW))
    assert answer.status_code == 200
    (message,) = await stream_messages(nc)
    await nc.jetstream().publish(
        message.subject,
        message.data,
        stream=subjects.STREAM_WEBHOOKS,
        headers={subjects.MSG_ID_HEADER: "after-the-window"},
    )
    await archived(hostile, 2)
    rows = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
    assert rows[0].n == 1


async def test_h_i_wrapped_content_and_poll_votes_are_typed_in_the_archive(
    hostile: RunningServer, client: httpx.AsyncClient, database_url: str
) -> None:
    """View-once, ephemeral and a poll vote, as archived."""
    for name in ("view-once-image", "ephemeral-text", "poll-vote"):
        assert (await post(client, samples.case(name, NOW))).status_code == 200
    await archived(hostile, 3)
    rows = await query(database_url, "SELECT event FROM webhook_payloads ORDER BY id")
    view_once, ephemeral, vote = (row.event for row in rows)
    assert view_once["content"]["caption"] == "segue o documento"
    assert view_once["content"]["wrappers"] == ["viewOnceMessageV2"]
    assert ephemeral["content"]["text"] == "qual o prazo de entrega?"
    assert (vote["change"], vote["target_message_id"]) == ("poll_vote", "3EB0BR06POLL0000000001")


async def raw_request(server: RunningServer, data: bytes) -> bytes:
    """Send `data` and wait (bounded) for whatever the server answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


async def test_j_a_body_shorter_than_its_content_length_is_cut_with_408(
    hostile: RunningServer,
) -> None:
    """Fewer bytes than declared, then silence: a coded 408 and the connection closed."""
    head = f"POST {URL} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    answer = await raw_request(hostile, (head + "content-length: 1000\r\n\r\n{").encode())
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"WEBHOOK_BODY_TIMEOUT" in answer


async def test_j_headers_that_never_finish_are_cut_with_408(hostile: RunningServer) -> None:
    """A slowloris client: half a request line, then nothing."""
    answer = await raw_request(hostile, b"POST /webhooks/x HTTP/1.1\r\nhost: x\r\nx-slow: ")
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"WEBHOOK_HEADER_TIMEOUT" in answer


async def test_j_connections_over_the_cap_are_refused_with_a_coded_503_and_counted(
    hostile: RunningServer,
) -> None:
    """64 idle connections held open; the 65th gets 503 WEBHOOK_BUSY at once."""
    held = [await asyncio.open_connection("127.0.0.1", hostile.port) for _ in range(64)]
    try:
        answer = await raw_request(hostile, b"")
    finally:
        for _, writer in held:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 503")
    assert b"WEBHOOK_BUSY" in answer
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{hostile.runtime.probe_port}", timeout=10
    ) as probes:
        metrics = (await probes.get("/metrics")).text
    assert 'zapgate_ingest_connections_refused_total{reason="connections"} 1.0' in metrics


def hostile_bodies() -> list[tuple[str, bytes]]:
    """More of every kind: encodings, numbers, depth, duplicate keys, NUL, long ids in every
    id field, odd content types."""
    long = "L" * 100_000
    base = samples.received_text
    names = (
        "lone-surrogate-min",
        "lone-surrogate-text",
        "nesting-300",
        "moment-10e400",
        "long-instance-id-5000",
        "placeholder-then-real-1",
        "placeholder-then-real-2",
        "view-once-image",
        "ephemeral-text",
        "poll-vote",
    )
    bodies = [("application/json", samples.case(name, NOW)) for name in names]
    bodies += [
        ("application/json", b'{"instanceId":"demo","x":"caf\xe9 \xff\xfe"}'),
        ("application/json", b'{"instanceId":"demo","n":NaN,"i":Infinity,"m":-Infinity}'),
        ("application/json", b'{"instanceId":"demo","big":1' + b"0" * 5000 + b',"f":1e999}'),
        ("application/json", b'{"instanceId":"demo","instanceId":"dup","k":1,"k":2}'),
        ("application/json", b'{"instanceId":"de\\u0000mo","\\u0000":"\\u0000"}'),
        ("text/plain", b"not json at all"),
        ("application/x-www-form-urlencoded", b"instanceId=demo&event=webhookReceived"),
        ("application/json", b"[1,2,3]"),
        ("", b'{"event":"webhookStatus","instanceId":"demo","messageId":"S1","status":"READ"}'),
        ("application/json; charset=latin1", '{"instanceId": "d\u00e9mo"}'.encode("utf-16")),
        ("application/json", b'{"a":' * 3000 + b"1" + b"}" * 3000),
    ]
    for field in ("instanceId", "messageId", "chat", "sender", "connectedPhone", "status"):
        body = base(f"LONG-{field}")
        body[field] = {"id": long} if field in {"chat", "sender"} else long
        bodies += [("application/json", json.dumps(body).encode())]
    return bodies


async def test_hostile_inputs_are_each_answered_kept_once_and_leave_ingest_healthy(
    hostile: RunningServer, client: httpx.AsyncClient, nc: Client, database_url: str
) -> None:
    """Every body: 2xx or coded 4xx, never 5xx; accepted == published == archived; /metrics
    bounded; the NATS connection alive at the end."""
    answers = [await post(client, body, content_type) for content_type, body in hostile_bodies()]
    statuses = [answer.status_code for answer in answers]
    assert all(status < 500 for status in statuses), statuses
    assert all(answer.json().get("code") for answer in answers if answer.status_code >= 400)
    kept = [a.json() for a in answers if a.status_code == 200]
    quarantined = [a.json() for a in answers if a.status_code == 400]
    assert len(kept) + len(quarantined) == len(answers)
    new = [item for item in kept if item["disposition"] == "published"]
    # The content update the archive publishes for the placeholder's real text: one more.
    await archived(hostile, len(new) + len(quarantined) + 1)
    stream = await stream_messages(nc)
    assert len(stream) == len(new) + len(quarantined) + 1
    payloads = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
    rows = await query(database_url, "SELECT count(*) AS n FROM webhook_quarantine")
    assert payloads[0].n == len(new)
    assert rows[0].n == len(quarantined)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{hostile.runtime.probe_port}", timeout=10
    ) as probes:
        metrics = (await probes.get("/metrics")).text
        ready = await probes.get("/readyz")
    assert len(metrics) < 64 * 1024
    assert ready.status_code == 200
    connection = hostile.runtime.connection.client
    assert connection is not None
    assert connection.is_connected
    assert all(
        base64.b64decode(json.loads(m.data).get("body_base64") or "") is not None for m in stream
    )
