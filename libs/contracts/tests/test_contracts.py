"""The contracts: validation, the envelope, secrets, and the committed schema snapshot."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.errors import MESSAGES_PT_BR, ErrorCode, Problem
from zapgate.contracts.health import RegisterInstance
from zapgate.contracts.schemas import render_schemas
from zapgate.contracts.sending import (
    DocumentContent,
    MessageKind,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import AnyWebhookEvent, WebhookKind

pytestmark = pytest.mark.unit

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"


def test_schema_snapshots_match_the_code() -> None:
    """Regenerating the JSON Schemas gives exactly the committed files."""
    expected = render_schemas()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run ./taskw contracts:gen"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} drifted: run ./taskw contracts:gen"


def test_envelope_fills_identity_and_aware_time() -> None:
    """A new command gets an id, an aware UTC time and schema version 1."""
    command = SendMessage(
        command_id="c-1",
        instance_id="ABC-123",
        phone="5511999998888",
        body=TextContent(message="oi"),
    )
    assert command.occurred_at.tzinfo is not None
    assert command.schema_version == 1
    again = SendMessage(
        command_id="c-1",
        instance_id="ABC-123",
        phone="5511999998888",
        body=TextContent(message="oi"),
    )
    assert again.event_id != command.event_id


def test_contracts_are_frozen() -> None:
    """A contract cannot be changed after it is built."""
    command = SendMessage(
        command_id="c-1", instance_id="ABC", phone="5511999998888", body=TextContent(message="oi")
    )
    with pytest.raises(ValidationError):
        command.phone = "5511000000000"  # type: ignore[misc]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    """A consumer reads a message that has a field it does not know."""
    raw = (
        '{"command_id":"c","instance_id":"I","phone":"5511999998888",'
        '"body":{"kind":"text","message":"x"},"added_later":1}'
    )
    assert SendMessage.model_validate_json(raw).command_id == "c"


@pytest.mark.parametrize(
    "phone", ["5511999998888", "120363025555555555-1234@g.us", "1234567890@lid"]
)
def test_send_accepts_phone_group_and_lid_recipients(phone: str) -> None:
    """Digits, group ids and lid ids are valid recipients."""
    command = SendMessage(
        command_id="c", instance_id="I", phone=phone, body=TextContent(message="x")
    )
    assert command.phone == phone


@pytest.mark.parametrize(
    ("phone", "stored"),
    [
        ("+55 (84) 98888-7777", "+5584988887777"),
        ("+5511999998888", "+5511999998888"),
        ("55 11 99999 8888", "5511999998888"),
        ("55.11.99999-8888", "5511999998888"),
        ("(55) 11\u00a099999\u20118888", "5511999998888"),
        ("5584988887777@s.whatsapp.net", "+5584988887777"),
        ("5584988887777@C.US", "+5584988887777"),
        (
            "\uff15\uff15\uff18\uff14\uff19\uff18\uff18\uff18\uff18\uff17\uff17\uff17\uff17",
            "5584988887777",
        ),
        ("120363025555555555@G.US", "120363025555555555@g.us"),
        (" 1234567890@lid ", "1234567890@lid"),
        (5584988887777, "5584988887777"),
    ],
)
def test_send_normalises_how_people_and_systems_write_phones(phone: object, stored: str) -> None:
    """Formatting, `+`, WhatsApp ids and non-ASCII digits become one canonical form."""
    command = SendMessage.model_validate(
        {
            "command_id": "c",
            "instance_id": "I",
            "phone": phone,
            "body": {"kind": "text", "message": "x"},
        }
    )
    assert command.phone == stored


@pytest.mark.parametrize(
    "phone", ["abc", "", "+", "55119999x8888", "5511@s.whatsapp.net", "++5511999998888", True]
)
def test_send_rejects_malformed_phone(phone: object) -> None:
    """Letters, too few digits or a doubled `+` are refused before anything is sent."""
    with pytest.raises(ValidationError):
        SendMessage.model_validate(
            {
                "command_id": "c",
                "instance_id": "I",
                "phone": phone,
                "body": {"kind": "text", "message": "x"},
            }
        )


def test_document_requires_extension() -> None:
    """W-API refuses documents without an extension, so the contract does too."""
    with pytest.raises(ValidationError):
        DocumentContent.model_validate({"kind": "document", "document": "https://x/y.pdf"})
    doc = DocumentContent(document="https://x/y.pdf", extension="pdf")
    assert doc.extension == "pdf"


def test_hold_for_is_bounded() -> None:
    """A hold longer than a day is refused."""
    with pytest.raises(ValidationError):
        SendMessage(
            command_id="c",
            instance_id="I",
            phone="5511999998888",
            body=TextContent(message="x"),
            hold_for=timedelta(days=2),
        )


def test_failed_outcome_carries_code_and_portuguese_message() -> None:
    """A failure states a stable code and a human message, and no success flag."""
    outcome = SendOutcome(
        command_id="c",
        instance_id="I",
        phone="5511999998888",
        kind=MessageKind.TEXT,
        status=SendStatus.FAILED,
        error=Problem.of(ErrorCode.INSTANCE_DISCONNECTED),
        attempts=0,
    )
    assert outcome.error is not None
    assert outcome.error.code == "INSTANCE_DISCONNECTED"
    assert outcome.error.message == "Sessão desconectada. Tentativa de reconexão em andamento."
    assert "success" not in outcome.model_dump()


def test_every_error_code_has_a_message() -> None:
    """No code is left without a human message."""
    assert set(MESSAGES_PT_BR) == set(ErrorCode)


def test_register_instance_hides_token_except_on_the_wire() -> None:
    """The token is masked in repr and python dumps, and carried in JSON for the API."""
    command = RegisterInstance(
        instance_id="ABC", display_name="Loja", token=SecretStr("s3cr3t-token")
    )
    assert "s3cr3t-token" not in repr(command)
    assert "s3cr3t-token" not in str(command.model_dump())
    wire = command.model_dump_json()
    assert "s3cr3t-token" in wire
    assert RegisterInstance.model_validate_json(wire).token.get_secret_value() == "s3cr3t-token"


def test_webhook_union_routes_by_kind() -> None:
    """An event read back from the bus is the right class."""
    adapter: TypeAdapter[AnyWebhookEvent] = TypeAdapter(AnyWebhookEvent)
    event = adapter.validate_python(
        {
            "kind": "unrouted",
            "instance_id": None,
            "received_at": "2026-01-01T00:00:00Z",
            "dedupe_key": "k",
            "raw": {"a": 1},
            "reason": "no event field",
            "keys": ["a"],
        }
    )
    assert event.kind is WebhookKind.UNROUTED


@pytest.mark.parametrize(
    ("value", "prefix"), [("ABC-123", "ABC-123"), ("a.b*c>", "a_b_c_~"), ("", "~")]
)
def test_subject_tokens_cannot_change_routing(value: str, prefix: str) -> None:
    """Dots and wildcards from outside data never reach a subject (see test_bounds.py)."""
    assert subjects.token(value).startswith(prefix)
    assert not {".", "*", ">", " "} & set(subjects.token(value))
