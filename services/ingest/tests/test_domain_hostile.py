"""The sanitiser and the content model on the failing inputs of the ingest issue and their kind.

Every sanitised payload must be taken by every parser on the path: pydantic's JSON reader (the
archiver), the event's own serialisation (the publisher) and strict UTF-8.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter

from zapgate.contracts.bounds import MAX_JSON_DEPTH
from zapgate.contracts.webhooks import (
    AnyWebhookEvent,
    MessageChanged,
    MessageChangeKind,
    MessageReceived,
    MessageStatusReported,
    WebhookErrorCode,
    WebhookUnrouted,
)
from zapgate.ingest.domain.routing import route
from zapgate.ingest.domain.sanitize import DEPTH_CUT, Fix, parse_webhook
from zapgate.testkit import webhooks as samples

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


def routed(body: bytes) -> tuple[Any, tuple[Fix, ...]]:
    """Parse, sanitise and route like the gateway; the event must survive the whole path."""
    parsed = parse_webhook(body)
    assert parsed.payload is not None, parsed.problem
    event = route(parsed.payload, NOW)
    data = event.model_dump_json().encode()
    data.decode("utf-8")  # strict UTF-8
    again = _EVENTS.validate_json(data)  # the archiver's reader (jiter)
    assert again == event
    assert depth(parsed.payload) <= MAX_JSON_DEPTH
    return event, parsed.fixes


# --- (a) encodings -----------------------------------------------------------------------------


def test_a_a_lone_surrogate_alone_is_replaced_not_a_500() -> None:
    """`{"x":"\\ud83d"}`: kept, routed unrouted, the half emoji becomes U+FFFD."""
    event, fixes = routed(samples.case("lone-surrogate-min"))
    assert isinstance(event, WebhookUnrouted)
    assert event.raw == {"x": "\ufffd"}
    assert fixes == (Fix.LONE_SURROGATE,)


def test_a_a_message_ending_in_half_an_emoji_keeps_its_text() -> None:
    """The customer's text and name arrive with U+FFFD where the half emoji was."""
    event, fixes = routed(samples.case("lone-surrogate-text"))
    assert isinstance(event, MessageReceived)
    assert event.content.text == "obrigado \ufffd"
    assert event.sender.push_name == "Cliente \ufffd"
    assert fixes == (Fix.LONE_SURROGATE,)


@pytest.mark.parametrize(
    ("body", "fix"),
    [
        (b'{"instanceId":"I1","\\udc00key":1}', Fix.LONE_SURROGATE),  # in a key
        (b'{"instanceId":"I1","x":["\\ude00", {"y": "\\ud83d\\ud83d"}]}', Fix.LONE_SURROGATE),
        (b'{"instanceId":"I\\u0000","x":"a\\u0000b"}', Fix.NUL_CHARACTER),
        (b'{"instanceId":"I1","\\u0000":"nul key"}', Fix.NUL_CHARACTER),
        (b'{"instanceId":"I1","x":"caf\xe9"}', Fix.INVALID_UTF8),  # Latin-1, not UTF-8
        (b'{"instanceId":"I1","x":"\xed\xa0\xbd"}', Fix.INVALID_UTF8),  # CESU surrogate bytes
        (b'{"instanceId":"I1","x":"\xc0\xaf"}', Fix.INVALID_UTF8),  # overlong
    ],
)
def test_a_every_encoding_problem_in_keys_and_values_is_sanitised(body: bytes, fix: Fix) -> None:
    """Surrogates, NUL and invalid UTF-8 anywhere: one fix named, the payload safe."""
    _, fixes = routed(body)
    assert fix in fixes


def test_a_a_valid_surrogate_pair_is_one_emoji_and_no_fix() -> None:
    """Escaped pairs are real characters, not damage."""
    event, fixes = routed(b'{"instanceId":"I1","x":"\\ud83d\\ude00"}')
    assert event.raw["x"] == "😀"
    assert fixes == ()


@pytest.mark.parametrize(
    "body",
    [
        '\ufeff{"instanceId": "I1", "x": "é"}'.encode(),  # UTF-8 with BOM
        '{"instanceId": "I1", "x": "é"}'.encode("utf-16"),  # UTF-16 with BOM
        '{"instanceId": "I1", "x": "é"}'.encode("utf-32"),
    ],
)
def test_a_other_unicode_encodings_of_json_are_read(body: bytes) -> None:
    """RFC 8259 readers accept these; so do we, without a fix."""
    event, fixes = routed(body)
    assert event.raw["x"] == "é"
    assert fixes == ()


# --- (b) depth -------------------------------------------------------------------------------


def nested(levels: int) -> bytes:
    inner = '{"a":' * levels + "1" + "}" * levels
    return (
        '{"event":"webhookReceived","instanceId":"demo","messageId":"D1","chat":{"id":"1"},'
        f'"msgContent":{inner}}}'
    ).encode()


def test_b_nesting_300_is_published_cut_at_the_agreed_depth() -> None:
    """The case file: routed as a received message, the deep part replaced and flagged."""
    event, fixes = routed(samples.case("nesting-300"))
    assert isinstance(event, MessageReceived)
    assert event.message_id == "3EB0DEEP00000000000300"
    assert fixes == (Fix.TOO_DEEP,)
    assert DEPTH_CUT in json.dumps(event.raw)


@pytest.mark.parametrize("levels", [62, 63, 64, 200, 254, 255, 500, 995, 3000])
def test_b_every_depth_the_parser_reads_ends_within_the_limit(levels: int) -> None:
    """Below, at and far above the limit: no parser on the path ever sees more."""
    _, fixes = routed(nested(levels))
    assert (Fix.TOO_DEEP in fixes) == (levels + 1 > MAX_JSON_DEPTH)


def test_b_nesting_past_pythons_parser_is_quarantined_as_too_deep() -> None:
    """~1,000+ levels cannot be read at all: a coded refusal, the bytes kept by the caller."""
    parsed = parse_webhook(nested(20_000))
    assert parsed.payload is None
    assert parsed.problem is WebhookErrorCode.WEBHOOK_TOO_DEEP


# --- (c) numbers ------------------------------------------------------------------------------


def test_c_a_moment_of_ten_to_the_400_is_kept_as_digits_and_read_as_no_moment() -> None:
    """The status is routed; `moment` None, the digits kept as a string in raw."""
    event, fixes = routed(samples.case("moment-10e400"))
    assert isinstance(event, MessageStatusReported)
    assert event.moment is None
    assert event.occurred_at == NOW
    assert event.raw["moment"] == "1" + "0" * 400
    assert fixes == (Fix.NUMBER_OUT_OF_RANGE,)


@pytest.mark.parametrize(
    ("literal", "kept", "fix"),
    [
        ("NaN", None, Fix.NON_FINITE_NUMBER),
        ("Infinity", None, Fix.NON_FINITE_NUMBER),
        ("-Infinity", None, Fix.NON_FINITE_NUMBER),
        ("1e400", "1e400", Fix.NUMBER_OUT_OF_RANGE),
        ("-1e400", "-1e400", Fix.NUMBER_OUT_OF_RANGE),
        ("9223372036854775808", "9223372036854775808", Fix.NUMBER_OUT_OF_RANGE),
        ("-9223372036854775809", "-9223372036854775809", Fix.NUMBER_OUT_OF_RANGE),
        ("1" + "0" * 5000, "1" + "0" * 5000, Fix.NUMBER_OUT_OF_RANGE),  # past int() digits
    ],
)
def test_c_every_number_out_of_range_in_any_field(literal: str, kept: object, fix: Fix) -> None:
    """In `moment`, a media length, a nested value: never an overflow, always a fix named."""
    body = (
        '{"event":"webhookReceived","instanceId":"I1","messageId":"N1","moment":'
        f'{literal},"chat":{{"id":"1"}},"msgContent":{{"imageMessage":{{"fileLength":{literal},'
        f'"seconds":{literal}}}}},"x":[{{"y":{literal}}}]}}'
    ).encode()
    event, fixes = routed(body)
    assert fixes == (fix,)
    assert event.raw["moment"] == kept
    assert event.raw["x"][0]["y"] == kept
    assert event.content.media.file_length is None
    assert event.moment is None


def test_c_numbers_inside_the_range_are_untouched() -> None:
    """int64 bounds and ordinary floats pass as numbers."""
    body = b'{"instanceId":"I1","a":9223372036854775807,"b":-9223372036854775808,"c":1.5e300}'
    event, fixes = routed(body)
    assert (event.raw["a"], event.raw["b"], event.raw["c"]) == (2**63 - 1, -(2**63), 1.5e300)
    assert fixes == ()
    assert math.isfinite(event.raw["c"])


def test_duplicate_keys_keep_the_last_value_and_are_named() -> None:
    """As JavaScript and Python read them; the fix says it happened."""
    event, fixes = routed(b'{"instanceId":"I1","instanceId":"I2","x":{"k":1,"k":2}}')
    assert event.instance_id == "I2"
    assert event.raw["x"] == {"k": 2}
    assert fixes == (Fix.DUPLICATE_KEY,)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", WebhookErrorCode.WEBHOOK_NOT_JSON),
        (b"instanceId=I1&event=x", WebhookErrorCode.WEBHOOK_NOT_JSON),  # a form post
        (b"[1,2]", WebhookErrorCode.WEBHOOK_NOT_OBJECT),
        (b'"text"', WebhookErrorCode.WEBHOOK_NOT_OBJECT),
        (b'{"a":1} trailing', WebhookErrorCode.WEBHOOK_NOT_JSON),
    ],
)
def test_what_is_no_json_object_gets_a_code(body: bytes, code: WebhookErrorCode) -> None:
    """The caller quarantines these with the code."""
    assert parse_webhook(body).problem is code


# --- (e) ids ------------------------------------------------------------------------------------


def test_e_a_5000_character_instance_id_is_bounded_in_the_event() -> None:
    """The event's instance id is a bounded key; raw keeps the whole value."""
    event, _ = routed(samples.case("long-instance-id-5000"))
    assert event.instance_id is not None
    assert len(event.instance_id) <= 128
    assert "~" in event.instance_id
    assert len(event.raw["instanceId"]) >= 5000
    assert event.connected_phone == "5511900000001"


@pytest.mark.parametrize("field", ["messageId", "chat", "sender", "connectedPhone"])
def test_e_very_long_ids_in_every_id_field_are_bounded(field: str) -> None:
    """Message, chat, sender ids and the phone: all keys and log fields, all bounded."""
    long = "9" * 200_000
    body = samples.received_text("M1")
    body[field] = {"id": long} if field in {"chat", "sender"} else long
    event, _ = routed(json.dumps(body).encode())
    values = [event.message_id, event.chat.id, event.sender.id, event.connected_phone]
    assert all(value is None or len(value) <= 128 for value in values)


# --- (g) the same message again ----------------------------------------------------------------


def test_g_a_placeholder_and_the_real_text_under_one_id_have_different_keys() -> None:
    """Different content, different dedupe key: the real text is not a duplicate."""
    first, _ = routed(samples.case("placeholder-then-real-1"))
    second, _ = routed(samples.case("placeholder-then-real-2"))
    assert first.message_id == second.message_id
    assert first.dedupe_key != second.dedupe_key
    assert first.content.placeholder is True
    assert second.content.text == "o boleto venceu, podem reenviar?"
    assert second.content.placeholder is False


def test_g_a_reserialised_copy_with_another_moment_or_chat_form_is_the_same_message() -> None:
    """Key order, whitespace, `moment` and the chat id's form do not make a new message."""
    body = json.loads(samples.case("placeholder-then-real-2"))
    copy = dict(reversed(list(body.items())))
    copy["moment"] = body["moment"] + 5
    copy["chat"] = body["chat"]["id"]
    first, _ = routed(json.dumps(body).encode())
    again, _ = routed(json.dumps(copy, indent=2).encode())
    assert first.dedupe_key == again.dedupe_key


# --- (h, i) content model -------------------------------------------------------------------


def test_h_view_once_image_is_unwrapped_with_caption_and_media() -> None:
    """viewOnceMessageV2 -> imageMessage: caption and media typed, the wrapper named."""
    event, _ = routed(samples.case("view-once-image"))
    content = event.content
    assert (content.type, content.caption) == ("imageMessage", "segue o documento")
    assert content.media is not None
    assert content.media.file_length == 48213
    assert content.wrappers == ["viewOnceMessageV2"]
    assert content.view_once is True


def test_h_ephemeral_text_is_unwrapped() -> None:
    """ephemeralMessage -> extendedTextMessage: the text is typed."""
    event, _ = routed(samples.case("ephemeral-text"))
    assert event.content.type == "extendedTextMessage"
    assert event.content.text == "qual o prazo de entrega?"
    assert event.content.wrappers == ["ephemeralMessage"]


def wrapped(content: dict[str, Any]) -> dict[str, Any]:
    body = samples.received_text("W1")
    body["msgContent"] = content
    event, _ = routed(json.dumps(body).encode())
    dumped: dict[str, Any] = event.model_dump(mode="json")
    return dumped


@pytest.mark.parametrize(
    "wrapper",
    [
        "viewOnceMessage",
        "viewOnceMessageV2",
        "viewOnceMessageV2Extension",
        "ephemeralMessage",
        "documentWithCaptionMessage",
        "deviceSentMessage",
        "futureProofMessage",
        "groupMentionedMessage",
    ],
)
def test_h_every_wrapper_is_unwrapped_generically(wrapper: str) -> None:
    """Any `{"<x>Message": {"message": {...}}}`, alone or nested in another."""
    inner = {"documentMessage": {"caption": "nota fiscal", "fileName": "nf.pdf"}}
    content = wrapped({"ephemeralMessage": {"message": {wrapper: {"message": inner}}}})["content"]
    assert (content["type"], content["caption"]) == ("documentMessage", "nota fiscal")
    assert content["media"]["file_name"] == "nf.pdf"
    assert content["wrappers"] == ["ephemeralMessage", wrapper]
    assert content["view_once"] is wrapper.startswith("viewOnce")


def test_h_an_edit_inside_the_edited_wrapper_is_a_change_with_the_new_content() -> None:
    """editedMessage -> protocolMessage MESSAGE_EDIT: target and new text."""
    event = wrapped(
        {
            "editedMessage": {
                "message": {
                    "protocolMessage": {
                        "key": {"id": "ORIG1"},
                        "type": "MESSAGE_EDIT",
                        "editedMessage": {"conversation": "texto corrigido"},
                    }
                }
            }
        }
    )
    assert (event["kind"], event["change"]) == ("message_changed", "edit")
    assert (event["target_message_id"], event["new_text"]) == ("ORIG1", "texto corrigido")
    assert event["content"]["text"] == "texto corrigido"


def test_i_a_poll_vote_is_a_change_of_its_poll() -> None:
    """pollUpdateMessage: MessageChanged(poll_vote) targeting the poll's creation id."""
    event, _ = routed(samples.case("poll-vote"))
    assert isinstance(event, MessageChanged)
    assert event.change is MessageChangeKind.POLL_VOTE
    assert event.target_message_id == "3EB0BR06POLL0000000001"
    assert event.poll_vote is not None
    assert event.poll_vote.poll_message_id == "3EB0BR06POLL0000000001"
    assert event.poll_vote.encrypted_payload == "ZmFrZS1lbmNyeXB0ZWQtdm90ZS1wYXlsb2Fk"


@pytest.mark.parametrize(
    "key", ["pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3"]
)
def test_i_poll_creations_of_every_version_are_typed(key: str) -> None:
    """Name, options and how many a voter may pick."""
    poll = {"name": "Melhor dia?", "options": [{"optionName": "seg"}, {"optionName": "ter"}]}
    content = wrapped({key: poll | {"selectableOptionsCount": 1}})["content"]
    assert content["type"] == key
    assert content["poll"] == {
        "name": "Melhor dia?",
        "options": [{"name": "seg"}, {"name": "ter"}],
        "selectable_count": 1,
    }


def test_location_contacts_and_replies_are_typed() -> None:
    """Location, contact cards, button, list and interactive replies get typed content."""
    location = wrapped(
        {"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6, "name": "Loja"}}
    )["content"]
    assert location["location"]["latitude"] == -23.5
    assert location["location"]["name"] == "Loja"
    contacts = wrapped(
        {
            "contactsArrayMessage": {
                "displayName": "2 contatos",
                "contacts": [
                    {"displayName": "Ana", "vcard": "BEGIN:VCARD"},
                    {"displayName": "Bia"},
                ],
            }
        }
    )["content"]
    assert [card["display_name"] for card in contacts["contacts"]] == ["Ana", "Bia"]
    listed = wrapped(
        {"listResponseMessage": {"title": "Plano B", "singleSelectReply": {"selectedRowId": "b"}}}
    )["content"]
    assert (listed["text"], listed["button_id"]) == ("Plano B", "b")
    interactive = wrapped(
        {
            "interactiveResponseMessage": {
                "body": {"text": "Sim"},
                "nativeFlowResponseMessage": {"paramsJson": '{"id": "yes"}'},
            }
        }
    )["content"]
    assert (interactive["text"], interactive["button_id"]) == ("Sim", "yes")


def test_unknown_types_keep_their_type_name_and_text() -> None:
    """A type nobody mapped still says what it is and what it said."""
    content = wrapped({"newFancyMessage": {"text": "olá", "x": 1}})["content"]
    assert (content["type"], content["text"]) == ("newFancyMessage", "olá")
