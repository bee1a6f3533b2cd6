"""The W-API simulator posts to a running ingest; proof of life; the operator's CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from zapgate.contracts import subjects
from zapgate.contracts.health import (
    EvidenceSource,
    InstanceState,
    InstanceStateChanged,
    SessionProofOfLife,
)
from zapgate.ingest.cli import replay
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import SECRET, query, stream_count
from zapgate.wapi.simulator import payloads
from zapgate.wapi.webhook_slots import WebhookSlot

if TYPE_CHECKING:
    import httpx
    from nats.aio.client import Client

    from zapgate.ingest.adapters.http_server import RunningServer
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = pytest.mark.real

INSTANCE = "SIM001-AAAAAA-BBBBBB"
PHONE = "5511977776666"


async def test_simulator_webhooks_end_to_end_are_routed_stored_and_deduplicated(
    ingest: RunningServer, wapi_simulator: Simulator, nc: Client, database_url: str
) -> None:
    """Every slot posts to one URL over real HTTP; the simulator's resend is kept once."""
    wapi_simulator.add_instance(INSTANCE, "token-1", phone=PHONE)
    wapi_simulator.set_all_webhooks(INSTANCE, f"{ingest.url}/webhooks/{SECRET}")
    chat = "5511955554444"
    records = [
        await wapi_simulator.receive(INSTANCE, payloads.text_content("oi"), chat_id=chat),
        await wapi_simulator.emit_status(INSTANCE, "3EB0SIMSENT", "READ", chat_id=chat),
        await wapi_simulator.emit_presence(INSTANCE, chat, "composing"),
        *await wapi_simulator.post_webhook(
            INSTANCE,
            WebhookSlot.CONNECTED,
            payloads.connected(instance_id=INSTANCE, connected_phone=PHONE, moment=1),
        ),
        *await wapi_simulator.post_webhook(
            INSTANCE,
            WebhookSlot.DISCONNECTED,
            payloads.disconnected(instance_id=INSTANCE, moment=2),
            times=3,  # the provider resends
        ),
    ]
    assert [record.status_code for record in records] == [200] * 7
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(5, timeout=20)
    assert await stream_count(nc) == 5
    rows = await query(database_url, "SELECT kind FROM webhook_payloads")
    assert Counter(row.kind for row in rows) == {
        "message_received": 1,
        "message_status": 1,
        "chat_presence": 1,
        "instance_connected": 1,
        "instance_disconnected": 1,
    }


async def test_connected_phone_publishes_proof_of_life_and_warns_on_a_stale_disconnect(
    ingest: RunningServer, http: httpx.AsyncClient, nc: Client
) -> None:
    """Health said disconnected; a webhook with connectedPhone proves otherwise: told once."""
    js = nc.jetstream()
    stale = InstanceStateChanged(
        instance_id=samples.INSTANCE,
        from_state=InstanceState.CONNECTED,
        to_state=InstanceState.DISCONNECTED,
        source=EvidenceSource.TICK,
        observed_at=datetime(2025, 10, 1, tzinfo=UTC),
    )
    await js.publish(
        subjects.state_changed_subject(samples.INSTANCE),
        stale.model_dump_json().encode(),
        stream=subjects.STREAM_HEALTH,
    )
    await ingest.runtime.states.wait_for(samples.INSTANCE, InstanceState.DISCONNECTED, timeout=10)
    proofs = await js.subscribe(
        subjects.PROOF_OF_LIFE_ALL, stream=subjects.STREAM_HEALTH, ordered_consumer=True
    )
    with capture_logs() as logs:
        await http.post(f"/webhooks/{SECRET}", json=samples.received_text("P1"))
        await http.post(f"/webhooks/{SECRET}", json=samples.received_text("P2"))
        await http.post(f"/webhooks/{SECRET}", json=samples.disconnected())
        first = SessionProofOfLife.model_validate_json((await proofs.next_msg(timeout=10)).data)
        second = SessionProofOfLife.model_validate_json((await proofs.next_msg(timeout=10)).data)
        assert ingest.runtime.archiver is not None
        await ingest.runtime.archiver.wait_archived(3, timeout=10)
    assert {first.phone, second.phone} == {samples.PHONE}
    assert first.instance_id == samples.INSTANCE
    assert first.source_kind == "message_received"
    with pytest.raises(TimeoutError):  # the disconnect carried no phone: no proof from it
        await proofs.next_msg(timeout=0.5)
    warnings = [entry for entry in logs if entry["event"] == "proof_of_life_contradicts_state"]
    assert len(warnings) == 1
    assert warnings[0]["instance_id"] == samples.INSTANCE
    assert warnings[0]["stale_state"] == "disconnected"


async def run_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zapgate.ingest.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_operator_cli_shows_stats_lists_quarantine_and_replays(
    ingest: RunningServer, http: httpx.AsyncClient, nc: Client, database_url: str, nats_url: str
) -> None:
    """stats counts per instance and kind; quarantine list shows the body; replay republishes."""
    await http.post(f"/webhooks/{SECRET}", json=samples.received_text("C1"))
    await http.post(f"/webhooks/{SECRET}", json=samples.received_text("C2"))
    await http.post(f"/webhooks/{SECRET}", json=samples.status())
    await http.post(f"/webhooks/{SECRET}", content=b"<html>oops</html>")
    assert ingest.runtime.archiver is not None
    await ingest.runtime.archiver.wait_archived(4, timeout=10)

    stats = [
        json.loads(line)
        for line in (await run_cli("stats", "--database-url", database_url, "--json")).splitlines()
    ]
    assert {(item["kind"], item["count"]) for item in stats} == {
        ("message_received", 2),
        ("message_status", 1),
    }
    assert {item["instance_id"] for item in stats} == {samples.INSTANCE}
    listed = await run_cli("quarantine", "list", "--database-url", database_url)
    (item,) = [json.loads(line) for line in listed.splitlines()]
    assert (item["code"], item["preview"]) == ("WEBHOOK_NOT_JSON", "<html>oops</html>")

    assert await replay(database_url, nats_url, kind="message_received", run_id="r1") == 2
    assert await replay(database_url, nats_url, kind="message_received", run_id="r1") == 2
    assert await stream_count(nc) == 4 + 2  # the same run twice is published once
    await ingest.runtime.archiver.wait_archived(6, timeout=10)
    rows = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
    assert rows[0].n == 3  # replays never duplicate the archive
