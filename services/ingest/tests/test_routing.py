"""The router: every W-API shape to its typed event, duplicates to one key, nothing raises."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zapgate.contracts.webhooks import (
    ChatChannel,
    ChatPresenceObserved,
    DeliveryStatus,
    InstanceConnected,
    InstanceDisconnected,
    MessageChanged,
    MessageChangeKind,
    MessageReceived,
    MessageSent,
    MessageStatusReported,
    WebhookKind,
    WebhookUnrouted,
)
from zapgate.ingest.domain.routing import route
from zapgate.testkit import webhooks as samples

pytestmark = pytest.mark.unit

NOW = datetime(2025, 10, 9, 12, 0, tzinfo=UTC)


def received(payload: dict[str, Any]) -> MessageReceived:
    event = route(payload, NOW)
    assert isinstance(event, MessageReceived), event
    return event


def test_plain_text_is_a_received_message_with_its_text_sender_and_phone() -> None:
    """`conversation` becomes text; the sender, the instance's phone and the moment are kept."""
    event = received(samples.received_text())
    assert event.content.type == "conversation"
    assert event.content.text == "Olá!"
    assert event.sender.push_name == "Maria"
    assert event.sender.lid == "98765@lid"
    assert event.connected_phone == samples.PHONE
    assert event.instance_id == samples.INSTANCE
    assert event.moment == datetime.fromtimestamp(samples.MOMENT, UTC)
    assert event.raw == samples.received_text()


def test_extended_text_is_read_from_its_nested_text() -> None:
    """`extendedTextMessage.text` is the text."""
    event = received(samples.received_extended_text())
    assert (event.content.type, event.content.text) == (
        "extendedTextMessage",
        "veja https://example.com",
    )


@pytest.mark.parametrize(
    ("payload", "content_type", "mimetype"),
    [
        (samples.received_image(), "imageMessage", "image/jpeg"),
        (samples.received_audio(), "audioMessage", "audio/ogg; codecs=opus"),
        (samples.received_video(), "videoMessage", "video/mp4"),
        (samples.received_document(), "documentMessage", "application/pdf"),
        (samples.received_sticker(), "stickerMessage", "image/webp"),
    ],
)
def test_media_keeps_its_metadata(
    payload: dict[str, Any], content_type: str, mimetype: str
) -> None:
    """Media messages carry mimetype, url and a numeric length parsed from the string."""
    event = received(payload)
    assert event.content.type == content_type
    assert event.content.media is not None
    assert event.content.media.mimetype == mimetype
    assert event.content.media.url is not None


def test_image_length_is_parsed_from_the_provider_string_and_caption_kept() -> None:
    """`fileLength` arrives as a string; the event has an int."""
    event = received(samples.received_image())
    assert event.content.media is not None
    assert event.content.media.file_length == 52341
    assert event.content.caption == "foto"


def test_document_keeps_its_file_name() -> None:
    """The document's file name survives routing."""
    event = received(samples.received_document())
    assert event.content.media is not None
    assert event.content.media.file_name == "boleto.pdf"


@pytest.mark.parametrize("spelling", ["stanzaID", "stanzaId"])
def test_quoted_reply_carries_the_quoted_id_in_either_spelling(spelling: str) -> None:
    """Production spells it stanzaID, others stanzaId: both become quoted_message_id."""
    event = received(samples.received_quoted_reply(quoted="ORIG1", spelling=spelling))
    assert event.content.quoted_message_id == "ORIG1"


def test_button_reply_carries_the_button_id_and_its_text() -> None:
    """A button reply is a received message with the chosen button."""
    event = received(samples.received_button_reply())
    assert event.content.button_id == "confirm"
    assert event.content.text == "Confirmar"
    assert event.content.quoted_message_id == "3EB0BUTTONS"


def test_group_message_is_marked_as_group() -> None:
    """`isGroup` (or an @g.us id) marks the chat as a group."""
    assert received(samples.received_in_group()).chat.is_group


def test_lid_chat_is_marked_as_lid() -> None:
    """An @lid chat id is kept and marked."""
    event = received(samples.received_from_lid())
    assert event.chat.is_lid
    assert event.chat.id == "98765432101234@lid"


@pytest.mark.parametrize(
    ("payload", "channel"),
    [
        (samples.received_story(), ChatChannel.STORY),
        (samples.received_newsletter(), ChatChannel.NEWSLETTER),
        (samples.received_text(), ChatChannel.CHAT),
    ],
)
def test_stories_and_channels_are_routed_and_marked(
    payload: dict[str, Any], channel: ChatChannel
) -> None:
    """status@broadcast and @newsletter are kept as messages, with their channel marked."""
    assert received(payload).chat.channel is channel


@pytest.mark.parametrize(
    ("payload", "change", "target"),
    [
        (samples.edited(target="T1"), MessageChangeKind.EDIT, "T1"),
        (samples.deleted(target="T2"), MessageChangeKind.DELETE, "T2"),
        (samples.reaction(target="T3"), MessageChangeKind.REACTION, "T3"),
    ],
)
def test_edits_deletes_and_reactions_are_changes_to_existing_messages(
    payload: dict[str, Any], change: MessageChangeKind, target: str
) -> None:
    """They arrive as webhookReceived but are not new messages."""
    event = route(payload, NOW)
    assert isinstance(event, MessageChanged)
    assert event.change is change
    assert event.target_message_id == target


def test_edit_carries_the_new_text_and_reaction_its_emoji() -> None:
    """The edit's new text and the reaction's emoji are read."""
    edit = route(samples.edited(), NOW)
    react = route(samples.reaction(), NOW)
    assert isinstance(edit, MessageChanged)
    assert isinstance(react, MessageChanged)
    assert edit.new_text == "Olá, corrigido"
    assert react.reaction == "👍"


def test_numeric_protocol_type_14_is_an_edit() -> None:
    """Some payloads give the protocol type as its number."""
    payload = samples.edited()
    payload["msgContent"]["protocolMessage"]["type"] = 14
    event = route(payload, NOW)
    assert isinstance(event, MessageChanged)
    assert event.change is MessageChangeKind.EDIT


@pytest.mark.parametrize("from_api", [True, False])
def test_delivery_is_a_sent_message_with_from_api(from_api: bool) -> None:  # noqa: FBT001 - parametrized
    """webhookDelivery is a message sent from the phone or the API, not a receipt."""
    event = route(samples.delivery(from_api=from_api), NOW)
    assert isinstance(event, MessageSent)
    assert event.from_api is from_api
    assert event.message_id == "3EB0SNT0001"
    assert event.content is not None
    assert event.content.text == "enviado"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("SERVER", DeliveryStatus.SENT),
        ("DELIVERY", DeliveryStatus.DELIVERED),
        ("READ", DeliveryStatus.READ),
        ("PLAYED", DeliveryStatus.PLAYED),
        ("ERROR", DeliveryStatus.FAILED),
        ("PENDING", DeliveryStatus.PENDING),
        ("read", DeliveryStatus.READ),
        ("WEIRD_NEW", None),
    ],
)
def test_status_words_map_to_delivery_status_and_stay_raw(
    word: str, status: DeliveryStatus | None
) -> None:
    """Known words are mapped; unknown ones give status None; the raw word is always kept."""
    event = route(samples.status(word=word), NOW)
    assert isinstance(event, MessageStatusReported)
    assert event.status is status
    assert event.status_raw == word
    assert event.message_id == "3EB0SNT0001"
    assert event.chat_id == "98765432101234@lid"


def test_connected_with_phone_carries_the_phone() -> None:
    """webhookConnected with connectedPhone proves the phone."""
    event = route(samples.connected(), NOW)
    assert isinstance(event, InstanceConnected)
    assert event.connected_phone == samples.PHONE


def test_connected_without_phone_has_no_phone() -> None:
    """webhookConnected may come without the phone: no phone is invented."""
    event = route(samples.connected(phone=None), NOW)
    assert isinstance(event, InstanceConnected)
    assert event.connected_phone is None


def test_disconnected_is_routed() -> None:
    """webhookDisconnected becomes InstanceDisconnected."""
    assert isinstance(route(samples.disconnected(), NOW), InstanceDisconnected)


def test_event_less_presence_shape_is_chat_presence() -> None:
    """The `{instanceId, connectedPhone, connectedLid, chat, status, moment}` shape."""
    event = route(samples.presence("composing"), NOW)
    assert isinstance(event, ChatPresenceObserved)
    assert event.status_raw == "composing"
    assert event.chat_id == "5511988887777"
    assert event.connected_lid == samples.LID
    assert event.connected_phone == samples.PHONE


def test_unknown_event_is_unrouted_with_its_keys() -> None:
    """Anything else is kept whole with its key set."""
    event = route(samples.unknown_event(), NOW)
    assert isinstance(event, WebhookUnrouted)
    assert event.reason == "unknown_event"
    assert event.keys == ["event", "foo", "instanceId", "moment"]
    assert event.raw == samples.unknown_event()


def test_payload_without_instance_id_is_unrouted() -> None:
    """No instanceId: kept as unrouted, instance None."""
    event = route(samples.without_instance(), NOW)
    assert isinstance(event, WebhookUnrouted)
    assert event.reason == "no_instance_id"
    assert event.instance_id is None


def test_unreadable_field_types_make_an_unrouted_event_not_an_error() -> None:
    """A body whose fields have impossible types is unrouted."""
    payload = {"event": "webhookReceived", "instanceId": "I", "chat": {"id": ["x"]}}
    event = route(payload, NOW)
    assert event.kind in {WebhookKind.MESSAGE_RECEIVED, WebhookKind.UNROUTED}
    assert event.raw == payload


def test_resent_webhook_gets_the_same_dedupe_key_and_event_id() -> None:
    """The provider's resend is recognised: same key, same event id, whatever the arrival."""
    later = datetime(2025, 10, 9, 13, 0, tzinfo=UTC)
    first, second = route(samples.received_text(), NOW), route(samples.received_text(), later)
    assert first.dedupe_key == second.dedupe_key
    assert first.event_id == second.event_id


def test_every_shape_has_a_distinct_dedupe_key() -> None:
    """Different webhooks never collide, including statuses of one message."""
    keys = {route(body, NOW).dedupe_key for body in samples.every_shape().values()}
    assert len(keys) == len(samples.every_shape())


def test_the_same_message_id_as_delivery_and_status_are_different_webhooks() -> None:
    """The event name is part of the key."""
    assert route(samples.delivery(), NOW).dedupe_key != route(samples.status(), NOW).dedupe_key


def test_events_without_message_id_dedupe_on_moment() -> None:
    """Two disconnects at different moments are two webhooks; the same moment is one."""
    first = route(samples.disconnected(), NOW)
    again = route(samples.disconnected(), NOW)
    later = route({**samples.disconnected(), "moment": samples.MOMENT + 60}, NOW)
    assert first.dedupe_key == again.dedupe_key
    assert first.dedupe_key != later.dedupe_key


def test_moment_in_milliseconds_is_understood() -> None:
    """A millisecond `moment` is not read as a date in the year 57000."""
    event = route({**samples.disconnected(), "moment": samples.MOMENT * 1000}, NOW)
    assert event.moment == datetime.fromtimestamp(samples.MOMENT, UTC)


def test_every_event_serialises_and_reads_back_with_the_contract_union() -> None:
    """What ingest publishes is what consumers parse."""
    from pydantic import TypeAdapter  # noqa: PLC0415 - only this test needs it

    from zapgate.contracts.webhooks import AnyWebhookEvent  # noqa: PLC0415

    adapter: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)
    for body in samples.every_shape().values():
        event = route(body, NOW)
        assert adapter.validate_json(event.model_dump_json()) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    ["event", "instanceId", "messageId", "chat", "status", "moment", "msgContent", "sender"]
)


@given(
    st.dictionaries(known_keys | st.text(max_size=6), json_values, max_size=8),
    st.sampled_from(["webhookReceived", "webhookDelivery", "webhookStatus", None, 3]),
)
def test_route_never_raises_and_always_keeps_the_body(body: dict[str, Any], event: Any) -> None:
    """Whatever the JSON object, routing returns an event carrying the body as received."""
    if event is not None:
        body["event"] = event
    routed = route(body, NOW)
    assert routed.raw == body
    assert routed.dedupe_key.startswith(f"{routed.kind}:")
