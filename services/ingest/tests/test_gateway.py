"""The accept use case with a hand-written publisher fake, and the known-states memory."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from zapgate.contracts.health import EvidenceSource, InstanceState, InstanceStateChanged
from zapgate.contracts.webhooks import WebhookErrorCode
from zapgate.ingest.adapters.spool import FileSpool as Spool
from zapgate.ingest.domain.size import BODY_RECORD_SUBJECT
from zapgate.ingest.domain.states import KnownStates
from zapgate.ingest.service import Disposition, Gateway
from zapgate.testkit import webhooks as samples

from .fakes import FakeBodyStore, FakePublisher, MemorySpool

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

NOW = datetime(2025, 10, 9, 12, 0, tzinfo=UTC)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path).open()


async def test_published_body_goes_to_its_kind_subject_under_its_dedupe_key(spool: Spool) -> None:
    """One publish, subject by kind, Nats-Msg-Id = dedupe key, event carries the raw body."""
    publisher = FakePublisher()
    accepted = await Gateway(publisher, spool).accept(json.dumps(samples.status()).encode(), NOW)
    assert accepted.disposition is Disposition.PUBLISHED
    ((subject, data, msg_id),) = publisher.published
    assert subject == "zg.webhook.message_status"
    assert msg_id == accepted.dedupe_key
    assert json.loads(data)["raw"] == samples.status()


async def test_second_copy_is_reported_as_duplicate(spool: Spool) -> None:
    """The publisher's duplicate answer becomes the duplicate disposition."""
    gateway = Gateway(FakePublisher(), spool)
    body = json.dumps(samples.received_text()).encode()
    assert (await gateway.accept(body, NOW)).disposition is Disposition.PUBLISHED
    assert (await gateway.accept(body, NOW)).disposition is Disposition.DUPLICATE


async def test_failed_publish_spools_and_the_drain_publishes_the_same_id(spool: Spool) -> None:
    """A timeout has an unknown outcome: spooled, then republished under the same id."""
    publisher = FakePublisher()
    publisher.error = TimeoutError()
    gateway = Gateway(publisher, spool)
    accepted = await gateway.accept(json.dumps(samples.received_text()).encode(), NOW)
    assert accepted.disposition is Disposition.SPOOLED
    assert spool.pending == 1
    publisher.error = None
    await spool.drain(gateway.publish_spooled)
    assert [msg_id for _, _, msg_id in publisher.published] == [accepted.dedupe_key]


async def test_neither_nats_nor_spool_means_not_durable(tmp_path: Path) -> None:
    """With no way to keep it, the answer asks the sender to retry."""
    publisher = FakePublisher()
    publisher.error = ConnectionError()
    gateway = Gateway(publisher, Spool(tmp_path))  # never opened: appends fail
    accepted = await gateway.accept(json.dumps(samples.received_text()).encode(), NOW)
    assert accepted.disposition is Disposition.NOT_DURABLE
    assert accepted.code is WebhookErrorCode.WEBHOOK_NOT_DURABLE


async def test_event_larger_than_the_server_accepts_is_refused_not_spooled(spool: Spool) -> None:
    """Such a record could never be published, so it is refused up front (413)."""
    gateway = Gateway(FakePublisher(max_payload=100), spool)
    accepted = await gateway.accept(json.dumps(samples.received_text()).encode(), NOW)
    assert accepted.disposition is Disposition.TOO_LARGE
    assert spool.pending == 0


async def test_same_quarantined_body_twice_keeps_one_copy(spool: Spool) -> None:
    """The quarantine key is the body's hash."""
    publisher = FakePublisher()
    gateway = Gateway(publisher, spool)
    first = await gateway.accept(b"not json", NOW)
    second = await gateway.accept(b"not json", NOW)
    assert first.code is WebhookErrorCode.WEBHOOK_NOT_JSON
    assert first.dedupe_key == second.dedupe_key
    assert len(publisher.published) == 1


def change(state: InstanceState, at: datetime) -> InstanceStateChanged:
    return InstanceStateChanged(
        occurred_at=at,
        instance_id="I1",
        from_state=InstanceState.CONNECTED,
        to_state=state,
        source=EvidenceSource.TICK,
        observed_at=at,
    )


def test_a_stale_state_is_reported_once_until_it_changes() -> None:
    """Disconnected: the first proof of life reports it, the next ones do not."""
    states = KnownStates()
    states.record(change(InstanceState.DISCONNECTED, NOW))
    reported = states.contradicted_by_proof_of_life("I1")
    assert reported is not None
    assert reported.to_state is InstanceState.DISCONNECTED
    assert states.contradicted_by_proof_of_life("I1") is None
    states.record(change(InstanceState.DEGRADED, NOW + timedelta(minutes=1)))
    assert states.contradicted_by_proof_of_life("I1") is not None


def test_connected_or_unknown_instances_are_not_contradicted() -> None:
    """Nothing to report when health already says connected, or knows nothing."""
    states = KnownStates()
    states.record(change(InstanceState.CONNECTED, NOW))
    assert states.contradicted_by_proof_of_life("I1") is None
    assert states.contradicted_by_proof_of_life("unknown") is None


def test_an_older_change_redelivered_late_does_not_win() -> None:
    """Out-of-order delivery keeps the newest state."""
    states = KnownStates()
    states.record(change(InstanceState.CONNECTED, NOW))
    states.record(change(InstanceState.DISCONNECTED, NOW - timedelta(hours=1)))
    assert states.state_of("I1") is InstanceState.CONNECTED


async def test_d_a_1_5_mb_image_with_inline_media_is_kept_whole_and_published_slim(
    spool: Spool,
) -> None:
    """The body goes to the body store; the event keeps sender, caption and id, not the media."""
    publisher, bodies = FakePublisher(), FakeBodyStore()
    body = samples.media_base64_body()
    accepted = await Gateway(publisher, spool, bodies).accept(body, NOW)
    assert accepted.disposition is Disposition.PUBLISHED
    ((_, data, _),) = publisher.published
    event = json.loads(data)
    assert event["body_object"] in bodies.objects
    assert bodies.objects[event["body_object"]] == body
    assert event["omitted_fields"] == ["msgContent.imageMessage.base64"]
    assert event["content"]["caption"] == "comprovante do pagamento"
    assert (event["message_id"], event["sender"]["push_name"]) == (
        "3EB0BR03000000000000A3",
        "Cliente Foto",
    )
    assert len(data) < 64 * 1024


async def test_d_with_nats_down_a_large_body_and_its_event_are_spooled_in_order() -> None:
    """Body record first, then the event; the drain puts the body before publishing."""
    publisher, bodies, spool = FakePublisher(), FakeBodyStore(), MemorySpool()
    publisher.error = bodies.error = ConnectionError()
    gateway = Gateway(publisher, spool, bodies)
    accepted = await gateway.accept(samples.media_base64_body(), NOW)
    assert accepted.disposition is Disposition.SPOOLED
    assert [record.subject for record in spool.records] == [
        BODY_RECORD_SUBJECT,
        "zg.webhook.message_received",
    ]
    publisher.error = bodies.error = None
    for record in spool.records:
        await gateway.publish_spooled(record)
    assert list(bodies.objects) == [spool.records[0].msg_id]
    assert [msg_id for _, _, msg_id in publisher.published] == [accepted.dedupe_key]


async def test_d_above_the_cap_the_quarantine_names_instance_event_and_message() -> None:
    """Only the first bytes are read; the ids in them are kept for the operator."""
    publisher = FakePublisher()
    gateway = Gateway(publisher, MemorySpool())
    prefix = samples.media_base64_body()[:100_000]
    accepted = await gateway.refuse_too_large(prefix, 40 * 1024 * 1024, NOW, "application/json")
    assert accepted.code is WebhookErrorCode.WEBHOOK_TOO_LARGE
    ((subject, data, _),) = publisher.published
    entry = json.loads(data)
    assert subject == "zg.webhook.quarantined"
    assert (entry["instance_id"], entry["event"], entry["message_id"], entry["size"]) == (
        "demo",
        "webhookReceived",
        "3EB0BR03000000000000A3",
        40 * 1024 * 1024,
    )


async def test_a_lone_surrogate_is_published_sanitised_with_the_exact_bytes() -> None:
    """200-class outcome; the event names the fix and carries the body byte for byte."""
    publisher = FakePublisher()
    body = samples.case("lone-surrogate-min")
    accepted = await Gateway(publisher, MemorySpool()).accept(body, NOW)
    assert accepted.disposition is Disposition.PUBLISHED
    assert [fix.value for fix in accepted.fixes] == ["lone_surrogate"]
    event = json.loads(publisher.published[0][1])
    assert event["sanitized"] == ["lone_surrogate"]
    assert base64.b64decode(event["body_base64"]) == body


async def test_b_too_deep_for_the_parser_is_quarantined_with_its_bytes() -> None:
    """A coded 400 and the exact body in the quarantine, never a 500."""
    publisher = FakePublisher()
    body = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
    accepted = await Gateway(publisher, MemorySpool()).accept(body, NOW)
    assert accepted.code is WebhookErrorCode.WEBHOOK_TOO_DEEP
    entry = json.loads(publisher.published[0][1])
    assert base64.b64decode(entry["body_base64"]) == body
