"""Pure classification of provider answers and transport errors (no I/O)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from zapgate.wapi import (
    InstanceDetails,
    ProviderBadResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
    SendAccepted,
)
from zapgate.wapi.responses import classify, parse_details, parse_send, parse_status
from zapgate.wapi.simulator import payloads
from zapgate.wapi.transport_errors import failure_from_exception, is_broken_exchange

pytestmark = pytest.mark.unit


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_unknown_fields_and_wrong_types_never_crash_fetch_instance() -> None:
    """fetch-instance with odd types keeps what it can: an int phone becomes digits."""
    answer = classify(
        "fetch-instance", 200, _body({"connected": "true", "connectedPhone": 5511, "x": [1]})
    )
    assert isinstance(answer, dict)
    details = parse_details("fetch-instance", answer)
    assert details == InstanceDetails(connected=True, connected_phone="5511", raw=answer)


@pytest.mark.parametrize("odd", [None, [], {"a": 1}, "talvez", 2])
def test_a_connected_value_we_cannot_read_is_a_bad_response(odd: object) -> None:
    """status-instance without a readable `connected` is never guessed."""
    result = parse_status("status-instance", {"connected": odd})
    assert isinstance(result, ProviderBadResponse)


@pytest.mark.parametrize("message_id", [None, "", "  ", True, {"id": "x"}])
def test_a_send_without_a_usable_message_id_is_not_accepted(message_id: object) -> None:
    """Only a non-empty messageId makes a SendAccepted."""
    result = parse_send("send-text", {"messageId": message_id, "insertedId": "i"})
    assert isinstance(result, ProviderBadResponse)
    assert result.uncertain is True


def test_a_send_with_message_id_is_accepted() -> None:
    """messageId and insertedId are kept."""
    assert parse_send("send-text", {"messageId": "3EB0X", "insertedId": 7}) == SendAccepted(
        message_id="3EB0X", inserted_id="7"
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, b"", ProviderUnauthorized),
        (403, _body({"error": True, "message": "x"}), ProviderUnauthorized),
        (400, _body({"error": True, "message": "x"}), ProviderRejected),
        (404, b"not found", ProviderRejected),
        (500, b"", ProviderUnavailable),
        (502, b"<html><title>502 Bad Gateway</title></html>", ProviderUnavailable),
        (504, b"<html><title>504</title></html>", ProviderTimeout),
        (302, b"", ProviderBadResponse),
        (200, b"[1, 2]", ProviderBadResponse),
        (200, b"\xff\xfe", ProviderBadResponse),
        (200, _body({"error": "true", "message": "m"}), ProviderRejected),
    ],
)
def test_every_error_shape_maps_to_one_failure_type(
    status: int, body: bytes, expected: type
) -> None:
    """Status and body decide the failure type."""
    assert isinstance(classify("op", status, body), expected)


def test_429_is_a_retryable_rejection() -> None:
    """Rate limiting is a rejection that may succeed later."""
    result = classify("send-text", 429, _body({"message": "Muitas requisições"}))
    assert isinstance(result, ProviderRejected)
    assert (result.retryable, result.message) == (True, "Muitas requisições")


@pytest.mark.parametrize(
    ("exc", "expected", "uncertain", "retryable"),
    [
        (aiohttp.ConnectionTimeoutError("no free connection"), ProviderUnavailable, False, True),
        (aiohttp.InvalidURL("ftp://x"), ProviderUnavailable, False, False),
        (ValueError("newline in header"), ProviderUnavailable, False, False),
        (aiohttp.ServerDisconnectedError(), ProviderTimeout, True, False),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ProviderTimeout, True, False),
        (aiohttp.SocketTimeoutError("late"), ProviderTimeout, True, False),
        (TimeoutError(), ProviderTimeout, True, False),
        (aiohttp.ClientPayloadError("cut"), ProviderBadResponse, True, False),
    ],
)
def test_transport_errors_split_on_whether_the_provider_could_have_acted(
    exc: BaseException, expected: type, *, uncertain: bool, retryable: bool
) -> None:
    """Never sent: unavailable; possibly delivered: uncertain."""
    failure = failure_from_exception("send-text", exc)
    assert isinstance(failure, expected)
    assert (failure.uncertain, failure.retryable) == (uncertain, retryable)


@pytest.mark.parametrize(
    ("exc", "broken"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientPayloadError("cut"), True),
        (aiohttp.SocketTimeoutError("late"), False),
        (aiohttp.ConnectionTimeoutError("slow"), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_broken_exchange_is_worth_retrying_a_read(
    exc: BaseException, *, broken: bool
) -> None:
    """Drops and resets are retried once; timeouts (a slow provider) and connect failures not."""
    assert is_broken_exchange(exc) is broken


def test_failures_carry_codes_and_portuguese_messages() -> None:
    """Every failure has a stable code and a human message."""
    failure = failure_from_exception("status-instance", aiohttp.ConnectionTimeoutError("x"))
    assert failure.code == "PROVIDER_UNAVAILABLE"
    assert "indisponível" in failure.message


def test_disconnected_payload_has_exactly_four_fields() -> None:
    """webhookDisconnected carries event, instanceId, disconnected and moment only."""
    body = payloads.disconnected(instance_id="I", moment=1700000000)
    assert body == {
        "event": "webhookDisconnected",
        "instanceId": "I",
        "disconnected": True,
        "moment": 1700000000,
    }


def test_quoted_reply_uses_capital_d_stanza_id() -> None:
    """Quoted replies carry contextInfo.stanzaID, as seen in production."""
    content = payloads.extended_text_content("sim", quoted_message_id="3EB0Q")
    assert content == {"extendedTextMessage": {"text": "sim", "contextInfo": {"stanzaID": "3EB0Q"}}}


def test_received_group_message_from_lid_sender() -> None:
    """A group chat sets isGroup; a @lid sender and its lid are kept."""
    body = payloads.received(
        instance_id="I",
        connected_phone="55",
        chat_id="120363@g.us",
        sender_id="777@lid",
        sender_lid="777@lid",
        content=payloads.image_content(caption="foto"),
        moment=1,
    )
    assert body["isGroup"] is True
    assert body["sender"] == {"id": "777@lid", "pushName": "Cliente", "senderLid": "777@lid"}
    content = body["msgContent"]
    assert isinstance(content, dict)
    image = content["imageMessage"]
    assert isinstance(image, dict)
    assert isinstance(image["fileLength"], str)
    assert image["caption"] == "foto"


def test_edit_and_reaction_shapes() -> None:
    """Edits are protocolMessage MESSAGE_EDIT; reactions point at the target message."""
    edit = payloads.edit_content("3EB0T", "novo", chat_id="55")
    reaction = payloads.reaction_content("3EB0T", "👍", chat_id="55")
    assert edit["protocolMessage"] == {
        "key": {"id": "3EB0T", "remoteJid": "55", "fromMe": False},
        "type": "MESSAGE_EDIT",
        "editedMessage": {"conversation": "novo"},
    }
    assert reaction["reactionMessage"] == {
        "key": {"id": "3EB0T", "remoteJid": "55", "fromMe": True},
        "text": "👍",
    }
